"""The figure registry: each figure module registers its draw function under its config key.

A figure is one module (or a family of related figures in one module) with a function
``draw(data, params) -> matplotlib Figure`` decorated with :func:`register`. Adding a figure
means one module (imported in ``figures/__init__.py``) plus one entry under ``figures:`` in the
config; the workflow plans one output per registered key that the config names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# What a figure reads, and the input roles the workflow passes for each kind (paths):
#   runs        {"runs": results/tables/runs.parquet}          (long: a row per run and sampler)
#   training    {"training": results/tables/training_summary.parquet}
#   track       {"train_log": <run's log>, "llc": [<LLC parquet>, one per sampler]}
#   panels      {"logs": [<log>, ...], "llcs": [<LLC parquet>, ...]}   (one per panel)
#   grid        {"grid": <sampler-grid parquet>}
#   traces      {"llc": <LLC parquet>}
#   calibration {"calibration": results/calibration/<study>.parquet}
READS = ("runs", "training", "track", "panels", "grid", "traces", "calibration")
INPUT_ROLES: dict[str, tuple[str, ...]] = {
    "runs": ("runs",),
    "training": ("training",),
    "track": ("train_log", "llc"),
    "panels": ("logs", "llcs"),
    "grid": ("grid",),
    "traces": ("llc",),
    "calibration": ("calibration",),
}


@dataclass(frozen=True)
class FigureSpec:
    """One registered figure.

    key: its entry under ``figures:`` in the config; stem: its output file stem; reads: one of
    :data:`READS`; per_sampler: drawn once per named sampler (True) or once (False);
    draw: ``draw(data, params) -> Figure``; caption: one paragraph for the HTML report (the
    draw function's docstring).
    """

    key: str
    stem: str
    reads: str
    per_sampler: bool
    draw: Callable[[Any, dict], Any]
    caption: str = ""


REGISTRY: dict[str, FigureSpec] = {}


def caption_of(doc: str | None) -> str:
    """A draw function's docstring as the figure's caption: one paragraph, white space folded."""
    return " ".join((doc or "").split())


def register(
    key: str, *, stem: str, reads: str, per_sampler: bool
) -> Callable[[Callable], Callable]:
    """Decorator: register ``draw`` as the figure ``key`` (see :class:`FigureSpec`); its
    docstring is the figure's caption."""
    if reads not in READS:
        raise ValueError(f"figure {key!r}: reads must be one of {READS}, got {reads!r}")

    def deco(draw: Callable) -> Callable:
        if key in REGISTRY:
            raise ValueError(f"figure {key!r} registered twice")
        if any(spec.stem == stem for spec in REGISTRY.values()):
            raise ValueError(f"figure {key!r}: stem {stem!r} already used")
        REGISTRY[key] = FigureSpec(key, stem, reads, per_sampler, draw, caption_of(draw.__doc__))
        return draw

    return deco
