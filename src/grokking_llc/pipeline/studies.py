"""Which runs a config makes, and which of them each named sampler estimates.

The one place that decides it, read by both the config's validation
(:mod:`grokking_llc.pipeline.validation`: the batch of every sampler within the training set of
every run it estimates) and the plan (:mod:`grokking_llc.pipeline.plan`: the LLC tracks, the
runs a calibration looks at, the runs table), so the two never disagree:

* :func:`expand_study`: a study's runs, the config's ``train`` updated by the study's values
  (a list sweeps the key; several lists give their cross product).
* :func:`llc_studies`: the studies whose runs get LLC tracks, those the figures that draw LLC
  values name (``study``, ``studies``, ``by_sampler``; the figure catalogue says which figures
  draw LLC values).
* :func:`estimated_studies`: of those, the ones a named sampler estimates (those its
  ``studies`` name; null: all of them; :func:`covers`).

Plain functions of the config mapping, validated or being validated (a key they do not find is
no study); they import neither torch nor the plan.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from grokking_llc.core.settings import TrainConfig
from grokking_llc.pipeline.catalog import LLC_READS, figure_catalog


def expand_study(train: Mapping[str, Any], overrides: Mapping[str, Any]) -> list[TrainConfig]:
    """The runs of one study: ``train`` defaults updated by ``overrides``.

    A list value in ``overrides`` sweeps that key; several lists give their cross product
    (in the order the keys are written). Duplicate runs are dropped.
    """
    swept = {k: v for k, v in overrides.items() if isinstance(v, list)}
    fixed = {k: v for k, v in overrides.items() if not isinstance(v, list)}
    runs: dict[str, TrainConfig] = {}
    for combo in itertools.product(*swept.values()):
        params = {**train, **fixed, **dict(zip(swept, combo, strict=True))}
        run = TrainConfig(**params)
        runs.setdefault(run.run_id, run)
    return list(runs.values())


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def draws_llc(figure: str) -> bool:
    """Does figure ``figure`` draw LLC values of its study's runs (so they need tracks)? Asked
    of the figure catalogue, the one place that knows."""
    info = figure_catalog().get(figure)
    return info is not None and info.reads in LLC_READS


def llc_studies(config: Mapping[str, Any]) -> list[str]:
    """The studies whose runs get LLC tracks, sorted: every study a figure that draws LLC values
    names (its ``study``, its ``studies`` and the studies of its ``by_sampler``)."""
    studies: set[str] = set()
    for key, entry in _mapping(config.get("figures")).items():
        if not draws_llc(key) or not isinstance(entry, Mapping):
            continue
        names = [entry.get("study"), *(entry.get("studies") or [])]
        names += list(_mapping(entry.get("by_sampler")).values())
        studies.update(s for s in names if isinstance(s, str))
    return sorted(studies)


def covers(sampler_studies: Sequence[str] | None, study: str) -> bool:
    """Does a sampler whose ``studies`` key is ``sampler_studies`` estimate ``study``'s runs
    when a figure draws their LLC values? Null: every such study."""
    return sampler_studies is None or study in sampler_studies


def estimated_studies(config: Mapping[str, Any], sampler: str) -> list[str]:
    """The studies whose runs named sampler ``sampler`` (``llc.samplers.<sampler>``) estimates:
    the :func:`llc_studies` it :func:`covers`, sorted."""
    spec = _mapping(_mapping(_mapping(config.get("llc")).get("samplers")).get(sampler))
    return [s for s in llc_studies(config) if covers(spec.get("studies"), s)]
