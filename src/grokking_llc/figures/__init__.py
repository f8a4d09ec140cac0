"""Figures (SPEC section 7): small modules that register themselves, one dispatch style.

``REGISTRY`` maps each config key under ``figures:`` to a :class:`FigureSpec`;
:func:`draw_figure` loads the inputs of the figure's kind (see :data:`registry.INPUT_ROLES`)
and calls its draw function. Draw functions never fit: every number they show comes from
:mod:`grokking_llc.science` (statistics, fits, tables). LLC estimates that failed the
validity checks are drawn hollow, left out of means and fits, and counted in the figure's notes.

``params`` (from the workflow's plan): ``study`` (str or None), ``sampler`` (the named sampler
of a per-sampler figure) and its ``protocol`` ("paper": drawn as the paper draws it, every
estimate filled and fitted, SPEC section 4; None: validated, invalid estimates hollow and left
out), ``samplers`` and ``protocols`` (track figures: in the order of ``inputs["llc"]``),
``title`` / ``titles`` (track / panels), ``options`` (the figure's config entry) and
``plots`` (``{"dpi", "style"}``).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pandas as pd

from grokking_llc.figures._common import set_style
from grokking_llc.figures.registry import INPUT_ROLES, READS, REGISTRY, FigureSpec, register
from grokking_llc.science.tables import select

# Importing a figure module registers its figures: every public module of this package is one
# (so adding a figure is adding its module, plus its entry in the schema's ``figures``).
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["INPUT_ROLES", "READS", "REGISTRY", "FigureSpec", "draw_figure", "load_data", "register"]


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def load_data(spec: FigureSpec, inputs: dict[str, Any], params: dict) -> Any:
    """Read the input files of ``spec``'s kind into what its draw function takes.

    runs -> runs.parquet's rows of ``params["study"]`` and ``params["sampler"]``; training ->
    training_summary.parquet's rows of the study; track -> ``(train_log, {sampler: llc})``;
    panels -> ``[(title, train_log, llc), ...]``; grid / traces / calibration -> the table.
    """
    missing = [r for r in INPUT_ROLES[spec.reads] if r not in inputs]
    if missing:
        raise KeyError(f"figure {spec.key!r} ({spec.reads}) needs input roles {missing}")
    study = params.get("study")
    if spec.reads == "runs":
        return select(pd.read_parquet(inputs["runs"]), study=study, sampler=params.get("sampler"))
    if spec.reads == "training":
        return select(pd.read_parquet(inputs["training"]), study=study)
    if spec.reads == "track":
        paths = _as_list(inputs["llc"])
        names = list(params.get("samplers") or [params.get("sampler") or "sampler"])
        if len(names) != len(paths):
            raise ValueError(f"figure {spec.key!r}: {len(paths)} LLC files, samplers {names}")
        llcs = {n: pd.read_parquet(p) for n, p in zip(names, paths, strict=True)}
        return pd.read_parquet(inputs["train_log"]), llcs
    if spec.reads == "panels":
        logs, llcs = _as_list(inputs["logs"]), _as_list(inputs["llcs"])
        titles = list(params.get("titles") or [f"run {i + 1}" for i in range(len(logs))])
        return [
            (t, pd.read_parquet(lg), pd.read_parquet(lc))
            for t, lg, lc in zip(titles, logs, llcs, strict=True)
        ]
    role = INPUT_ROLES[spec.reads][0]
    return pd.read_parquet(inputs[role])


def draw_figure(key: str, inputs: dict[str, Any], params: dict):
    """Draw the registered figure ``key`` from its input files; returns a matplotlib Figure
    (saving it is the caller's job, e.g. ``grokking_llc.core.io.save_figure``)."""
    if key not in REGISTRY:
        raise KeyError(f"no figure registered under {key!r}; known: {sorted(REGISTRY)}")
    spec = REGISTRY[key]
    set_style((params.get("plots") or {}).get("style", "whitegrid"))
    return spec.draw(load_data(spec, inputs, params), params)
