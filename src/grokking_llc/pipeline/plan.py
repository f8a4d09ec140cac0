"""The plan: a validated config turned into frozen job descriptions
(:mod:`grokking_llc.pipeline.jobs`).

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

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from grokking_llc.core.settings import SamplerConfig, TrainConfig, sampler_id, short_hash
from grokking_llc.pipeline.figure_plan import FigureJob, FigurePlan, GridJob
from grokking_llc.pipeline.jobs import (
    BATCHED_TRAIN_LOSSES,
    BATCHED_TRAIN_MODELS,
    RESULTS,
    CalibrationJob,
    LLCJob,
    NamedSampler,
    RunJob,
    SplitJob,
    TrainGroupJob,
    _frozen,
    shape_of,
    train_stack_size,
)
from grokking_llc.pipeline.studies import covers, estimated_studies, expand_study, llc_studies


@dataclass
class Plan(FigurePlan):
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
        runs = [r for r in self.estimated_runs(sampler) if shape_of(r.train) == shape]

        def atypical(run: RunJob) -> tuple:
            t = run.train.to_dict()
            differ = sum(1 for k, v in t.items() if k != "seed" and train.get(k, v) != v)
            return (differ, run.train.seed, run.run_id)

        return sorted(runs, key=atypical)[: self.config["llc"]["calibration"]["runs"]]

    @cached_property
    def llc_studies(self) -> list[str]:
        """Studies whose runs get LLC tracks (:func:`grokking_llc.pipeline.studies.llc_studies`:
        those the figures that draw LLC values name)."""
        return llc_studies(self.config)

    @cached_property
    def _estimated_studies(self) -> dict[str, list[str]]:
        return {name: estimated_studies(self.config, name) for name in self.samplers}

    def estimated_runs(self, sampler: NamedSampler) -> list[RunJob]:
        """The runs ``sampler`` estimates, by id: those of its
        :func:`~grokking_llc.pipeline.studies.estimated_studies` (what the config's validation
        checks its batch against)."""
        rids = {
            rid for study in self._estimated_studies[sampler.name] for rid in self.study_runs[study]
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
            for run in self.estimated_runs(s) if s.calibrated else []:
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

    def sampler_covers(self, sampler: NamedSampler, study: str) -> bool:
        """Does ``sampler`` estimate ``study``'s runs when a figure draws their LLC values
        (:func:`grokking_llc.pipeline.studies.covers`)?"""
        return covers(sampler.studies, study)

    def stride(self, run: RunJob, sampler: NamedSampler) -> int:
        """Checkpoint stride of a run's track under ``sampler`` (0: the final checkpoint only).

        Each of the run's studies asks for a stride: the sampler's ``every_by_study`` entry, else
        the sampler's ``every``, else ``llc.every_by_study``'s entry, else ``llc.every``. The run
        takes the finest positive stride asked for, and 0 only when every study asks for 0.
        """
        llc = self.config["llc"]
        own = dict(sampler.every_by_study)
        relevant = [s for s in run.studies if s in self._estimated_studies[sampler.name]]
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
            for run in self.estimated_runs(sampler):
                job = self.track(run, sampler)
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
            for run in self.estimated_runs(sampler):
                job = self.track(run, sampler)
                out.append(
                    {
                        "run_id": run.run_id,
                        "sampler": name,
                        "sampler_id": sampler.sampler_id,
                        "path": job.path,
                    }
                )
        return out

    # ---------------------------------------------------------------- figures

    @cached_property
    def splits(self) -> dict[str, SplitJob]:
        out = {}
        for r in self.runs.values():
            t = r.train
            out[t.split_id] = SplitJob(t.split_id, t.p, t.train_frac, t.data_seed)
        return dict(sorted(out.items()))

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
    "RESULTS",
    "CalibrationJob",
    "FigureJob",
    "GridJob",
    "LLCJob",
    "NamedSampler",
    "Plan",
    "RunJob",
    "SplitJob",
    "TrainGroupJob",
    "build_plan",
    "shape_of",
]
