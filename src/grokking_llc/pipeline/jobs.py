"""The plan's job descriptions: one frozen dataclass per kind of job, each with the paths of
its outputs and ``params()``, exactly what those outputs depend on (a job reruns when its params
change). :class:`grokking_llc.pipeline.plan.Plan` makes them from a validated config; the figure
part of the plan (:mod:`grokking_llc.pipeline.figure_plan`) adds its grid and figure jobs. Also
what every description shares: the results folder and the frozen (hashable, order-stable) copies
of plain config data that frozen dataclass fields hold.

This module imports neither torch nor matplotlib: a dry run stays fast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from grokking_llc.core.settings import SamplerConfig, TrainConfig, short_hash

RESULTS = "results"


def _frozen(value: Any) -> Any:
    """A hashable, order-stable copy of plain config data (for frozen dataclass fields)."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """The plain data back from :func:`_frozen`."""
    if (
        isinstance(value, tuple)
        and value
        and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value)
    ):
        return {k: _thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class SplitJob:
    split_id: str
    p: int
    train_frac: float
    seed: int

    @property
    def path(self) -> str:
        return f"{RESULTS}/splits/{self.split_id}.parquet"

    def params(self) -> dict[str, Any]:
        return {"p": self.p, "train_frac": self.train_frac, "seed": self.seed}


@dataclass(frozen=True)
class RunJob:
    train: TrainConfig
    studies: tuple[str, ...]

    @property
    def run_id(self) -> str:
        return self.train.run_id

    @property
    def split_path(self) -> str:
        return f"{RESULTS}/splits/{self.train.split_id}.parquet"

    @property
    def checkpoints(self) -> str:
        return f"{RESULTS}/runs/{self.run_id}/checkpoints.pt"

    @property
    def train_log(self) -> str:
        return f"{RESULTS}/runs/{self.run_id}/train_log.parquet"

    @property
    def work_dir(self) -> str:
        """Resumable training state; not an output, so it survives a failed or killed job."""
        return f"{RESULTS}/runs/{self.run_id}/partial"

    @property
    def label(self) -> str:
        r = self.train
        return (
            f"{r.model} p={r.p}, K={r.width}, lr={r.lr:g}, wd={r.weight_decay:g}, "
            f"batch={r.batch_size}, train_frac={r.train_frac:g}, seed={r.seed}"
        )

    def params(self) -> dict[str, Any]:
        return self.train.to_dict()


# Runs trained together (grokking_llc.training.train_many: bitwise the numbers of training each
# alone):
# the plain QuadraticNet with the centred loss, runs equal in everything but the seed, as many
# per job as keep the stacked parameters within TRAIN_STACK_FLOATS (benchmarks/RESULTS.md,
# "Training: one run vs batched runs": stacking pays up to ~250k floats, not beyond).
BATCHED_TRAIN_MODELS = ("quadratic",)
BATCHED_TRAIN_LOSSES = ("centred_mse",)
TRAIN_STACK_FLOATS = 250_000
MAX_TRAIN_STACK = 6


def train_stack_size(p: int, width: int) -> int:
    """Runs per batched training job for QuadraticNet(p, width): 3pK parameters each."""
    return int(min(MAX_TRAIN_STACK, max(1, TRAIN_STACK_FLOATS // (3 * p * width))))


@dataclass(frozen=True)
class TrainGroupJob:
    """Runs of one setting (all but the seed equal) trained in one batched job; each keeps its
    own outputs (checkpoints, log, partial state)."""

    runs: tuple[RunJob, ...]

    @property
    def group_id(self) -> str:
        digest = hashlib.sha256(" ".join(r.run_id for r in self.runs).encode()).hexdigest()
        return f"g{digest[:10]}"

    @property
    def rule_name(self) -> str:
        return f"train_group_{self.group_id}"

    def params(self) -> dict[str, Any]:
        return {"runs": [r.params() for r in self.runs]}


@dataclass(frozen=True)
class NamedSampler:
    """A sampler of ``llc.samplers``: fixed SGLD settings, or a calibration that chooses them
    (then ``settings`` is the calibration's base: the values it does not search)."""

    name: str
    backend: str
    settings: SamplerConfig
    calibration: str | None
    studies: tuple[str, ...] | None
    every: int | None
    every_by_study: tuple  # frozen {study: stride}
    sampler_id: str
    refine: tuple | None = None  # frozen refine settings (adaptive checkpoint selection)
    protocol: str | None = None  # a published estimator (config.PROTOCOLS), e.g. "paper"

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    @property
    def as_published(self) -> bool:
        """Runs the paper's estimator exactly (``protocol: paper``, SPEC section 4): its
        figures draw what the paper draws and the scorecard's as-published verdicts use it."""
        return self.protocol == "paper"


@dataclass(frozen=True)
class CalibrationJob:
    """The calibration of one model shape (model, p, width) for one calibrated sampler: at the
    final checkpoint(s) of the shape's representative run(s) (:meth:`Plan.shape_runs`)."""

    shape: str
    backend: str
    base: SamplerConfig
    spec: tuple  # frozen llc.calibration (without `runs`)
    runs: tuple[RunJob, ...]

    @property
    def name(self) -> str:
        """``<shape>-<hash>``: the shape, and a hash of everything the output depends on."""
        return f"{self.shape}-{self.cal_id}"

    @property
    def path(self) -> str:
        return f"{RESULTS}/calibration/{self.name}.parquet"

    @property
    def cal_id(self) -> str:
        """Hash of everything the calibration's output depends on."""
        return short_hash(self.params(), {})

    def params(self) -> dict[str, Any]:
        """``runs`` (their settings) and ``calibration``: what
        :func:`grokking_llc.pipeline.stages.calibrate.run_calibrate_sampler` takes (the grid without
        the keys left to the calibration's defaults)."""
        spec = {k: _thaw(v) for k, v in self.spec}
        spec["grid"] = {k: v for k, v in spec.get("grid", {}).items() if v is not None}
        return {
            "calibration": {**spec, "backend": self.backend, "base": self.base.to_dict()},
            "runs": [r.params() for r in self.runs],
        }


def shape_of(run: TrainConfig) -> str:
    """A run's model shape, ``<model>-p<p>-K<width>`` (the readable part of its id)."""
    return f"{run.model}-p{run.p}-K{run.width}"


@dataclass(frozen=True)
class LLCJob:
    """One LLC track: a run's checkpoints (every k-th and the last, or the last only) under one
    sampler, split into ``chunks`` jobs dealt round-robin."""

    run: RunJob
    sampler: NamedSampler
    every: int  # 0 = final checkpoint only
    chunks: int
    calibration: CalibrationJob | None
    refine: tuple | None = None  # frozen {coarse, tolerance, max_fraction}: adaptive selection

    @property
    def track(self) -> str:
        """``final``, ``every<k>``, or ``every<k>-refine<coarse>-<tolerance>-<max_fraction>``
        for an adaptively selected track (its rows differ, so its file does)."""
        if self.every == 0:
            return "final"
        if self.refine is None:
            return f"every{self.every}"
        r = dict(self.refine)
        return f"every{self.every}-refine{r['coarse']}-{r['tolerance']:g}-{r['max_fraction']:g}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.run.run_id, self.sampler.sampler_id, self.track)

    @property
    def path(self) -> str:
        return f"{RESULTS}/llc/{self.run.run_id}/{self.sampler.sampler_id}/{self.track}.parquet"

    def chunk_paths(self) -> list[str]:
        stem = self.path.removesuffix(".parquet")
        return [f"{stem}-chunk{i}of{self.chunks}.parquet" for i in range(self.chunks)]

    def params(self) -> dict[str, Any]:
        """What an estimate_llc job's rows depend on (the chunk index comes from its path)."""
        return {
            "run": self.run.params(),
            "backend": self.sampler.backend,
            "sampler": None if self.sampler.calibrated else self.sampler.settings.to_dict(),
            "every": self.every,
            **({"refine": _thaw(self.refine)} if self.refine is not None else {}),
        }
