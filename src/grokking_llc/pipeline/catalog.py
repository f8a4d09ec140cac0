"""The figure catalogue as data: what every figure module of :mod:`grokking_llc.figures`
registers, read from its ``@register(...)`` decorator without importing it (matplotlib and
seaborn cost seconds that a dry run and a config check should not pay). The plan and the config
validation both read it; neither imports the figures.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# Figure kinds (grokking_llc.figures.FigureSpec.reads) that need LLC tracks of their runs.
LLC_READS = ("runs", "track", "panels", "traces")

FIGURES_DIR = Path(__file__).resolve().parents[1] / "figures"


@dataclass(frozen=True)
class FigureInfo:
    """What the plan needs of a registered figure (its ``register(...)`` arguments)."""

    key: str
    stem: str
    reads: str
    per_sampler: bool
    caption: str = ""


@cache
def figure_catalog() -> dict[str, FigureInfo]:
    """Every figure the modules of ``grokking_llc/figures`` register, read from their
    ``@register("key", stem=..., reads=..., per_sampler=...)`` decorators and docstrings (the
    caption) without importing
    them (matplotlib and seaborn cost seconds that a dry run should not pay). A test checks it
    against the registry the imports build."""
    out: dict[str, FigureInfo] = {}
    for path in sorted(FIGURES_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if not (
                    isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "register"
                ):
                    continue
                kw = {k.arg: ast.literal_eval(k.value) for k in deco.keywords}
                key = ast.literal_eval(deco.args[0])
                caption = " ".join((ast.get_docstring(node) or "").split())  # as caption_of
                out[key] = FigureInfo(
                    key, kw["stem"], kw["reads"], bool(kw["per_sampler"]), caption
                )
    return dict(sorted(out.items()))
