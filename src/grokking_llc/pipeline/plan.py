"""The plan: a validated config turned into frozen job descriptions.

Every decision about *what* the workflow computes lives here, as pure functions of the config:
which runs exist (studies expanded), which runs get LLC tracks under which named sampler and at
which checkpoint stride, which checkpoints a calibration looks at, which figures and tables are
drawn from which files. ``workflow/rules/common.smk`` only maps wildcards to entries of one
:class:`Plan`, and every job takes as params exactly what its outputs depend on (``params()`` of
its entry), so a config edit reruns what depends on it and nothing else.

Paths (all under ``results/``)::

    splits/{split}.parquet                              make_split
    runs/{run}/checkpoints.pt, train_log.parquet         train_model
    llc/{run}/{sampler}/{track}-chunk{i}of{n}.parquet    estimate_llc
    llc/{run}/{sampler}/{track}.parquet                  gather_llc
    llc_grid/{grid}/{run}-{sampler}.parquet              estimate_llc_grid
    calibration/{shape}-{hash}.parquet                   calibrate_sampler
    theory/{run}.parquet                                 compute_theory
    tables/training_summary.parquet, runs.parquet, claims.parquet
    figures/{stem}.png, figures/{sampler name}/{stem}.png,
    figures/fig_calibration_{shape}-{hash}.png

``{sampler}`` is a sampler id (backend and a hash of its settings, or of the calibration that
chooses them), so renaming a sampler reruns nothing; ``{track}`` is ``every{k}`` (every k-th
checkpoint and the last) or ``final``.

This module imports neither torch nor matplotlib: a dry run stays fast.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from grokking_llc.core.settings import (
    SAMPLER_META_KEYS,
    SamplerConfig,
    TrainConfig,
    sampler_id,
    short_hash,
)
from grokking_llc.pipeline.config import expand_study

RESULTS = "results"

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
    ``@register("key", stem=..., reads=..., per_sampler=...)`` decorators without importing
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
                out[key] = FigureInfo(
                    key, kw["stem"], kw["reads"], bool(kw["per_sampler"]), kw.get("caption", "")
                )
    return dict(sorted(out.items()))


def _frozen(value: Any) -> Any:
    """A hashable, order-stable copy of plain config data (for frozen dataclass fields)."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def select_checkpoints(
    num_checkpoints: int, every: int, chunk: int = 0, chunks: int = 1
) -> list[int]:
    """Checkpoint indices for one LLC job: every ``every``-th and the last (``every = 0``: the
    last only), dealt round-robin into ``chunks`` jobs; this job takes number ``chunk``."""
    if not 0 <= chunk < chunks:
        raise ValueError(f"chunk {chunk} outside 0..{chunks - 1}")
    if num_checkpoints < 1:
        raise ValueError("a run without checkpoints has no LLC track")
    if every < 0:
        raise ValueError(f"every must be >= 0, got {every}")
    picked = [] if every == 0 else list(range(0, num_checkpoints, every))
    if not picked or picked[-1] != num_checkpoints - 1:
        picked.append(num_checkpoints - 1)
    return picked[chunk::chunks]


# --------------------------------------------------------------------------------------------
# Job descriptions
# --------------------------------------------------------------------------------------------


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


def _thaw(value: Any) -> Any:
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


@dataclass(frozen=True)
class GridJob:
    """LLC at a run's final checkpoint over sampler overrides (B.2 localisation/step-size
    sweep, B.1 temperature sweep)."""

    grid: str
    run: RunJob
    sampler: NamedSampler
    overrides: tuple  # frozen list of {key: value}

    @property
    def path(self) -> str:
        return f"{RESULTS}/llc_grid/{self.grid}/{self.run.run_id}-{self.sampler.sampler_id}.parquet"

    def params(self) -> dict[str, Any]:
        return {
            "run": self.run.params(),
            "backend": self.sampler.backend,
            "sampler": self.sampler.settings.to_dict(),
            "grid": [_thaw(o) for o in self.overrides],
        }


@dataclass(frozen=True)
class FigureJob:
    key: str  # figures.<key> in the config and in grokking_llc.figures.REGISTRY
    stem: str
    sampler: str | None  # named sampler for per-sampler figures
    inputs: tuple  # frozen {role: path or [paths]}
    options: tuple  # frozen params handed to the figure's draw

    @property
    def path(self) -> str:
        if self.sampler is None:
            return f"{RESULTS}/figures/{self.stem}.png"
        return f"{RESULTS}/figures/{self.sampler}/{self.stem}.png"

    @property
    def name(self) -> str:
        """The wildcard value naming this figure: ``stem`` or ``sampler/stem``."""
        return self.stem if self.sampler is None else f"{self.sampler}/{self.stem}"

    def input_files(self) -> dict[str, Any]:
        return {k: _thaw(v) for k, v in self.inputs}

    def params(self) -> dict[str, Any]:
        return {"key": self.key, **{k: _thaw(v) for k, v in self.options}}


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


@dataclass
class Plan:
    config: dict
    runs: dict[str, RunJob] = field(default_factory=dict)
    study_runs: dict[str, list[str]] = field(default_factory=dict)
    samplers: dict[str, NamedSampler] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cfg = self.config
        by_id: dict[str, TrainConfig] = {}
        studies_of: dict[str, list[str]] = {}
        for study, overrides in cfg["studies"].items():
            runs = expand_study(cfg["train"], overrides)
            self.study_runs[study] = [r.run_id for r in runs]
            for r in runs:
                by_id[r.run_id] = r
                studies_of.setdefault(r.run_id, []).append(study)
        # Order-independent: reordering studies in the config changes no param.
        self.runs = {
            rid: RunJob(by_id[rid], tuple(sorted(studies_of[rid]))) for rid in sorted(by_id)
        }
        for name, spec in cfg["llc"]["samplers"].items():
            self.samplers[name] = self._named_sampler(name, spec)

    # ---------------------------------------------------------------- samplers, calibration

    def _named_sampler(self, name: str, spec: Mapping[str, Any]) -> NamedSampler:
        settings = SamplerConfig.from_mapping(spec)
        calibration = spec.get("calibration")
        if calibration is None:
            sid = sampler_id(spec["backend"], settings)
        else:  # the calibration's spec (not its jobs: one per shape) names the setting
            sid = sampler_id(spec["backend"], settings, calibration=short_hash(self._cal_spec, {}))
        studies = spec.get("studies")
        return NamedSampler(
            name=name,
            backend=spec["backend"],
            settings=settings,
            calibration=calibration,
            studies=None if studies is None else tuple(studies),
            every=spec.get("every"),
            every_by_study=_frozen(spec.get("every_by_study", {})),
            sampler_id=sid,
            refine=None if spec.get("refine") is None else _frozen(spec["refine"]),
            protocol=spec.get("protocol"),
        )

    @property
    def _cal_spec(self) -> dict[str, Any]:
        cal = self.config["llc"]["calibration"]
        return {k: v for k, v in cal.items() if k != "runs"}

    def shape_runs(self, sampler: NamedSampler, shape: str) -> list[RunJob]:
        """The runs a calibration of ``shape`` for ``sampler`` looks at: the first
        ``llc.calibration.runs`` of the shape's runs that the sampler estimates, the most
        typical first -- fewest training settings away from the config's ``train``, then the
        smallest seed, then the id -- so that adding a sweep value or a seed does not move the
        calibration."""
        train = self.config["train"]
        runs = [r for r in self._covered_runs(sampler) if shape_of(r.train) == shape]

        def atypical(run: RunJob) -> tuple:
            t = run.train.to_dict()
            differ = sum(1 for k, v in t.items() if k != "seed" and train.get(k, v) != v)
            return (differ, run.train.seed, run.run_id)

        return sorted(runs, key=atypical)[: self.config["llc"]["calibration"]["runs"]]

    def _covered_runs(self, sampler: NamedSampler) -> list[RunJob]:
        rids = {
            rid
            for study in self.llc_studies
            if self.sampler_covers(sampler, study)
            for rid in self.study_runs[study]
        }
        return [self.runs[r] for r in sorted(rids)]

    def calibration_for(self, sampler: NamedSampler, run: RunJob) -> CalibrationJob | None:
        """The calibration whose setting ``sampler`` uses for ``run`` (its shape's), or None
        for a sampler with settings written in the config."""
        if not sampler.calibrated:
            return None
        shape = shape_of(run.train)
        spec = _frozen(self._cal_spec)
        runs = tuple(self.shape_runs(sampler, shape)) or (run,)
        return CalibrationJob(shape, sampler.backend, sampler.settings, spec, runs)

    @cached_property
    def calibrations(self) -> dict[str, CalibrationJob]:
        """Every calibration, by name: one per model shape among the runs each calibrated
        sampler estimates (SPEC section 10: every shape a figure compares is calibrated on its
        own; a setting's estimates count as valid at a shape only where it passed there)."""
        jobs: dict[str, CalibrationJob] = {}
        for s in self.samplers.values():
            for run in self._covered_runs(s) if s.calibrated else []:
                job = self.calibration_for(s, run)
                jobs.setdefault(job.name, job)
        return dict(sorted(jobs.items()))

    # ---------------------------------------------------------------- studies and strides

    def first_run(self, study: str) -> RunJob:
        return self.runs[self.study_runs[study][0]]

    def first_seed_runs(self, study: str) -> list[RunJob]:
        """The runs of ``study`` with its smallest seed (one panel per setting in H.2)."""
        runs = [self.runs[r] for r in self.study_runs[study]]
        seed = min(r.train.seed for r in runs)
        return [r for r in runs if r.train.seed == seed]

    @property
    def figure_specs(self) -> dict[str, FigureInfo]:
        return figure_catalog()

    def track_groups(self, key: str) -> list[tuple[str, list[NamedSampler], str | None]]:
        """``(study, samplers, sampler name or None)`` of a track figure and its claim: the
        samplers of ``figures.<key>.study`` drawn together on its first run, and each sampler of
        ``figures.<key>.by_sampler`` alone on its own study's first run (its figure under
        ``figures/<sampler>/``)."""
        entry = self.config["figures"].get(key) or {}
        study, own = entry.get("study"), dict(entry.get("by_sampler") or {})
        groups: list[tuple[str, list[NamedSampler], str | None]] = []
        if study:
            shared = [s for s in self.samplers_of(study) if s.name not in own]
            if shared:
                groups.append((study, shared, None))
        for name in sorted(own):
            sampler = self.samplers.get(name)
            if sampler is not None and self.sampler_covers(sampler, own[name]):
                groups.append((own[name], [sampler], name))
        return groups

    def _figure_study(self, key: str) -> str | None:
        return self.config["figures"].get(key, {}).get("study")

    @cached_property
    def llc_studies(self) -> list[str]:
        """Studies whose runs need LLC tracks: those of the figures that draw LLC values (and
        the H.2 panels' studies)."""
        studies: set[str] = set()
        for key, spec in self.figure_specs.items():
            if spec.reads not in LLC_READS or key not in self.config["figures"]:
                continue
            entry = self.config["figures"][key]
            studies.update(s for s in [entry.get("study")] if s)
            studies.update(entry.get("studies", []))
            studies.update((entry.get("by_sampler") or {}).values())
        return sorted(studies)

    def sampler_covers(self, sampler: NamedSampler, study: str) -> bool:
        return sampler.studies is None or study in sampler.studies

    def stride(self, run: RunJob, sampler: NamedSampler) -> int:
        """Checkpoint stride of a run's track under ``sampler`` (0: the final checkpoint only).

        Each of the run's studies asks for a stride: the sampler's ``every_by_study`` entry, else
        the sampler's ``every``, else ``llc.every_by_study``'s entry, else ``llc.every``. The run
        takes the finest positive stride asked for, and 0 only when every study asks for 0.
        """
        llc = self.config["llc"]
        own = dict(sampler.every_by_study)
        relevant = [
            s for s in run.studies if s in self.llc_studies and self.sampler_covers(sampler, s)
        ]
        asked = []
        for study in relevant or run.studies:
            if study in own:
                asked.append(own[study])
            elif sampler.every is not None:
                asked.append(sampler.every)
            else:
                asked.append(llc["every_by_study"].get(study, llc["every"]))
        positive = [e for e in asked if e > 0]
        return min(positive) if positive else 0

    @cached_property
    def llc_jobs(self) -> dict[tuple[str, str, str], LLCJob]:
        jobs: dict[tuple[str, str, str], LLCJob] = {}
        for sampler in self.samplers.values():
            for study in self.llc_studies:
                if not self.sampler_covers(sampler, study):
                    continue
                for rid in self.study_runs[study]:
                    job = self.track(self.runs[rid], sampler)
                    jobs[job.key] = job
        return dict(sorted(jobs.items()))

    def track(self, run: RunJob, sampler: NamedSampler) -> LLCJob:
        """The LLC track of ``run`` under ``sampler``."""
        every = self.stride(run, sampler)
        return LLCJob(
            run=run,
            sampler=sampler,
            every=every,
            chunks=self.config["llc"]["chunks"] if every > 0 else 1,  # one checkpoint: one job
            calibration=self.calibration_for(sampler, run),
            refine=sampler.refine if every > 0 else None,
        )

    def samplers_of(self, study: str) -> list[NamedSampler]:
        """Named samplers (in config order) that give LLC tracks for ``study``'s runs."""
        return [s for s in self.samplers.values() if self.sampler_covers(s, study)]

    # ---------------------------------------------------------------- grids

    @cached_property
    def grid_jobs(self) -> dict[str, GridJob]:
        jobs = {}
        figs = self.config["figures"]
        for grid in ("b2", "bias_reduced"):
            entry = figs.get(grid, {})
            if not entry.get("study"):
                continue
            sampler = self.samplers[entry["sampler"]]
            if grid == "b2":
                overrides = [
                    {"localization": g, "lr": e} for e in entry["lr"] for g in entry["localization"]
                ]
            else:
                nbeta = sampler.settings.resolved_nbeta
                overrides = [{"nbeta": f * nbeta} for f in entry["nbeta_factors"]]
            jobs[grid] = GridJob(grid, self.first_run(entry["study"]), sampler, _frozen(overrides))
        return jobs

    # ---------------------------------------------------------------- tables

    @cached_property
    def theory_runs(self) -> list[RunJob]:
        """Quadratic runs with LLC tracks get a theory table at their checkpoints."""
        rids = {job.run.run_id for job in self.llc_jobs.values()}
        return [self.runs[r] for r in sorted(rids) if self.runs[r].train.model == "quadratic"]

    def theory_params(self, run: RunJob) -> dict[str, Any]:
        strides = [j.every for j in self.llc_jobs.values() if j.run.run_id == run.run_id]
        positive = [e for e in strides if e > 0]
        return {"run": run.params(), "every": min(positive) if positive else 0}

    def theory_path(self, run: RunJob) -> str:
        return f"{RESULTS}/theory/{run.run_id}.parquet"

    training_summary_path = f"{RESULTS}/tables/training_summary.parquet"
    runs_table_path = f"{RESULTS}/tables/runs.parquet"
    claims_path = f"{RESULTS}/tables/claims.parquet"

    def training_summary_params(self) -> dict[str, Any]:
        return {
            rid: {"run": r.params(), "studies": list(r.studies)} for rid, r in self.runs.items()
        }

    def runs_table_entries(self) -> list[dict[str, Any]]:
        """(run, sampler name) -> the track that gives its final and maximum LLC. Two names for
        one setting share the track (one job) but each gets its rows."""
        out = []
        for name, sampler in self.samplers.items():
            covered = {
                rid
                for study in self.llc_studies
                if self.sampler_covers(sampler, study)
                for rid in self.study_runs[study]
            }
            for rid in sorted(covered):
                job = self.track(self.runs[rid], sampler)
                out.append(
                    {
                        "run_id": rid,
                        "sampler": name,
                        "sampler_id": sampler.sampler_id,
                        "path": job.path,
                    }
                )
        return out

    # ---------------------------------------------------------------- figures

    def _track_inputs(self, run: RunJob, samplers: list[NamedSampler]) -> dict[str, Any]:
        return {
            "train_log": run.train_log,
            "llc": [self.track(run, s).path for s in samplers],
        }

    @cached_property
    def figures(self) -> dict[str, FigureJob]:
        """Every figure, by its wildcard name (``stem`` or ``sampler/stem``)."""
        out: dict[str, FigureJob] = {}
        figs, plots = self.config["figures"], self.config["plots"]

        def add(key, spec, per_sampler, inputs, **options):
            params = {"plots": plots, "caption": spec.caption, **options}
            job = FigureJob(key, spec.stem, per_sampler, _frozen(inputs), _frozen(params))
            out[job.name] = job

        for key, spec in self.figure_specs.items():
            if spec.reads == "calibration":
                for name, cal in self.calibrations.items():
                    job = FigureJob(
                        key,
                        f"fig_calibration_{name}",
                        None,
                        _frozen({"calibration": cal.path}),
                        _frozen({"plots": plots, "shape": cal.shape, "caption": spec.caption}),
                    )
                    out[job.name] = job
                continue
            entry = figs.get(key)
            if entry is None:
                continue
            options = {k: v for k, v in entry.items() if k not in ("study", "studies")}
            study = entry.get("study")
            if spec.reads == "runs" and study:
                for s in self.samplers_of(study):
                    add(key, spec, s.name, {"runs": self.runs_table_path},
                        study=study, sampler=s.name, protocol=s.protocol,
                        options=options)  # fmt: skip
            elif spec.reads == "training" and study:
                add(key, spec, None, {"training": self.training_summary_path},
                    study=study, options=options)  # fmt: skip
            elif spec.reads == "track":
                options = {k: v for k, v in options.items() if k != "by_sampler"}
                for group_study, samplers, own in self.track_groups(key):
                    run = self.first_run(group_study)
                    add(key, spec, own, self._track_inputs(run, samplers),
                        study=group_study, samplers=[s.name for s in samplers],
                        protocols=[s.protocol for s in samplers],
                        title=f"{run.label}\nrun {run.run_id}", options=options)  # fmt: skip
            elif spec.reads == "traces" and study:
                run = self.first_run(study)
                for s in self.samplers_of(study):
                    add(key, spec, s.name, {"llc": self.track(run, s).path},
                        study=study, sampler=s.name, protocol=s.protocol,
                        options=options)  # fmt: skip
            elif spec.reads == "panels" and entry.get("studies"):
                runs = list(
                    {
                        r.run_id: r for st in entry["studies"] for r in self.first_seed_runs(st)
                    }.values()
                )
                for s in self.samplers.values():
                    if not all(self.sampler_covers(s, st) for st in entry["studies"]):
                        continue
                    inputs = {
                        "logs": [r.train_log for r in runs],
                        "llcs": [self.track(r, s).path for r in runs],
                    }
                    titles = [r.label for r in runs]
                    add(key, spec, s.name, inputs, sampler=s.name, protocol=s.protocol,
                        titles=titles, options=options)  # fmt: skip
            elif spec.reads == "grid" and key in self.grid_jobs:
                add(key, spec, None, {"grid": self.grid_jobs[key].path}, options=options)
        return dict(sorted(out.items()))

    # ---------------------------------------------------------------- claims

    def claims_inputs(self) -> dict[str, Any]:
        """Files the scorecard reads: the summary tables, and Figure 3's and Figure 13's runs
        (training log and every sampler's track)."""
        inputs: dict[str, Any] = {
            "runs": self.runs_table_path,
            "training": self.training_summary_path,
        }
        for key in ("fig3", "fig13"):
            for i, (study, samplers, _) in enumerate(self.track_groups(key)):
                tracks = self._track_inputs(self.first_run(study), samplers)
                inputs.update({f"{key}_{i}_{role}": path for role, path in tracks.items()})
        return inputs

    def claims_params(self) -> dict[str, Any]:
        """What the scorecard's rows depend on besides its input files: the samplers (and
        ``published``: those that run the paper's protocol, for the as-published verdicts),
        each claim's study, the track figures' runs and samplers (``fig3_tracks``,
        ``fig13_tracks``: one entry per run drawn, :meth:`track_groups`, with its samplers and
        training settings), and the baseline (Figure 3's run) for the theory count."""
        figs = self.config["figures"]
        params: dict[str, Any] = {
            "samplers": list(self.samplers),
            "studies": {k: v.get("study") for k, v in figs.items() if v.get("study")},
            "published": [s.name for s in self.samplers.values() if s.as_published],
            "seed": 0,
        }
        for key in ("fig3", "fig13"):
            params[f"{key}_tracks"] = [
                {"samplers": [s.name for s in samplers], "run": self.first_run(study).params()}
                for study, samplers, _ in self.track_groups(key)
            ]
        study = self._figure_study("fig3")
        baseline = self.first_run(study).train if study else None
        params["theory_baseline"] = (
            {k: getattr(baseline, k) for k in ("p", "width", "train_frac", "data_seed")}
            if baseline is not None and baseline.model == "quadratic"
            else None
        )
        return params

    # ---------------------------------------------------------------- targets

    @cached_property
    def splits(self) -> dict[str, SplitJob]:
        out = {}
        for r in self.runs.values():
            t = r.train
            out[t.split_id] = SplitJob(t.split_id, t.p, t.train_frac, t.data_seed)
        return dict(sorted(out.items()))

    def figure_targets(self) -> list[str]:
        return [job.path for job in self.figures.values()]

    @cached_property
    def train_groups(self) -> dict[str, TrainGroupJob]:
        """Batched training jobs: runs equal in everything but the seed, of a model and loss
        train_many handles, in seed order, :func:`train_stack_size` per job; a run left alone
        is trained by ``train_model``."""
        by_setting: dict[str, list[RunJob]] = {}
        if not self.config.get("batch_training", True):
            return {}
        for run in self.runs.values():
            t = run.train
            if t.model not in BATCHED_TRAIN_MODELS or t.model_options:
                continue
            if t.loss not in BATCHED_TRAIN_LOSSES:
                continue
            key = json.dumps({**t.to_dict(), "seed": None}, sort_keys=True)
            by_setting.setdefault(key, []).append(run)
        groups: dict[str, TrainGroupJob] = {}
        for runs in by_setting.values():
            runs.sort(key=lambda r: (r.train.seed, r.run_id))
            size = train_stack_size(runs[0].train.p, runs[0].train.width)
            for start in range(0, len(runs), size):
                part = tuple(runs[start : start + size])
                if len(part) > 1:
                    job = TrainGroupJob(part)
                    groups[job.group_id] = job
        return dict(sorted(groups.items()))

    @cached_property
    def solo_runs(self) -> list[str]:
        """Runs trained alone by ``train_model`` (not in any :attr:`train_groups`)."""
        grouped = {r.run_id for g in self.train_groups.values() for r in g.runs}
        return [rid for rid in self.runs if rid not in grouped]

    def intermediate_targets(self) -> list[str]:
        """Every file the figures and tables are built from. Snakemake rebuilds a missing file
        only when it is a target's input (a missing intermediate whose consumers are up to date
        is otherwise left missing), so the targets list them: deleting a split, a training log,
        an LLC chunk or a grid table and running ``figures`` again rebuilds it."""
        files = [s.path for s in self.splits.values()]
        files += [p for r in self.runs.values() for p in (r.checkpoints, r.train_log)]
        for job in self.llc_jobs.values():
            files += [*job.chunk_paths(), job.path]
        files += [g.path for g in self.grid_jobs.values()]
        files += [c.path for c in self.calibrations.values()]
        return files

    def table_targets(self) -> list[str]:
        tables = [self.training_summary_path]
        if self.llc_jobs:
            tables += [self.runs_table_path, self.claims_path]
        tables += [self.theory_path(r) for r in self.theory_runs]
        tables += [c.path for c in self.calibrations.values()]
        return tables


def build_plan(config: Mapping[str, Any]) -> Plan:
    """The plan of a validated config (:func:`grokking_llc.pipeline.config.validate_config`)."""
    return Plan(dict(config))


__all__ = [
    "SAMPLER_META_KEYS",
    "CalibrationJob",
    "FigureJob",
    "GridJob",
    "LLCJob",
    "NamedSampler",
    "Plan",
    "RunJob",
    "SplitJob",
    "build_plan",
]
