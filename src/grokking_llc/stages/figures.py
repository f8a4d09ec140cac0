"""Stage entry point of ``plot_figure``: one figure of the registry (:mod:`grokking_llc.figures`)
drawn from its input files and saved atomically."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grokking_llc.figures import draw_figure
from grokking_llc.io import save_figure


def run_plot_figure(inputs: Mapping[str, Any], params: Mapping[str, Any], out_path: str) -> None:
    """Draw figure ``params["key"]`` from ``inputs`` (role -> path or paths) and save it."""
    import matplotlib.pyplot as plt

    fig = draw_figure(params["key"], dict(inputs), dict(params))
    save_figure(fig, out_path, dpi=params["plots"]["dpi"])
    plt.close(fig)
