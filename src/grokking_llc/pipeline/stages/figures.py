"""Stage entry point of ``plot_figure``: one figure of the registry (:mod:`grokking_llc.figures`)
drawn from its input files and saved atomically."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grokking_llc.core.io import check_ids_in_path, save_figure
from grokking_llc.figures import draw_figure

# Input roles whose files carry the run (and sampler) the plan named them by.
PROVENANCE_ROLES = ("train_log", "llc", "logs", "llcs", "grid", "calibration")


def run_plot_figure(inputs: Mapping[str, Any], params: Mapping[str, Any], out_path: str) -> None:
    """Draw figure ``params["key"]`` from ``inputs`` (role -> path or paths) and save it. A
    training log or LLC table made for another run or sampler than its path names is refused
    (:func:`grokking_llc.core.io.check_ids_in_path`)."""
    import matplotlib.pyplot as plt

    for role in PROVENANCE_ROLES:
        value = inputs.get(role)
        for path in [value] if isinstance(value, str) else list(value or []):
            check_ids_in_path(path)

    fig = draw_figure(params["key"], dict(inputs), dict(params))
    save_figure(fig, out_path, dpi=params["plots"]["dpi"])
    plt.close(fig)
