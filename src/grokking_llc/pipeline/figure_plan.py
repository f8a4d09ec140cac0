"""The figure part of the plan: which figures, grids and scorecard inputs a config asks for.

:class:`FigurePlan` is the part of :class:`grokking_llc.pipeline.plan.Plan` that reads the figure
catalogue (:mod:`grokking_llc.pipeline.catalog`) and the config's ``figures``: the figure jobs
(a loop over the registered figures, dispatched on the kind of data each reads), the sampler
grids of appendix B, the studies that need LLC tracks, and the files and params of the
scorecard. The run/sampler part of the plan (runs, tracks, calibrations, training groups) is
:class:`grokking_llc.pipeline.plan.Plan`'s own.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from grokking_llc.core.settings import SamplerConfig
from grokking_llc.pipeline.catalog import LLC_READS, FigureInfo, figure_catalog
from grokking_llc.pipeline.jobs import RESULTS, NamedSampler, RunJob, _frozen, _thaw


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


GRID_ENTRY_KEYS = ("study", "sampler")  # a grid figure's entry keys that are not swept


def grid_overrides(entry: Mapping[str, Any], settings: SamplerConfig) -> list[dict[str, Any]]:
    """The sampler overrides a grid figure's config entry sweeps: every list-valued key but
    :data:`GRID_ENTRY_KEYS` is a sampler setting, crossed with the others; ``<key>_factors``
    are multiples of the sampler's own (resolved) ``<key>``. Keys in alphabetical order, the
    last one the outer loop (B.2: every localisation at each step size)."""
    axes = []
    for name in sorted(k for k in entry if k not in GRID_ENTRY_KEYS):
        if name.endswith("_factors"):
            base = name[: -len("_factors")]
            value = getattr(settings, f"resolved_{base}", getattr(settings, base))
            axes.append((base, [f * value for f in entry[name]]))
        else:
            axes.append((name, list(entry[name])))
    if not axes:
        return []
    names = [n for n, _ in axes]
    combos = itertools.product(*(values for _, values in reversed(axes)))
    return [dict(zip(names, reversed(combo), strict=True)) for combo in combos]


class FigurePlan:
    """The figure part of the plan (module docstring); mixed into ``Plan``, whose config,
    samplers, runs and tracks it reads."""

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

    @property
    def track_figures(self) -> list[str]:
        """The figures that draw one run's LLC track against its training (``reads: track``;
        Figures 3 and 13): their runs are what the track claims score."""
        return [k for k, spec in self.figure_specs.items() if spec.reads == "track"]

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

    @cached_property
    def grid_jobs(self) -> dict[str, GridJob]:
        """One sampler grid per figure that reads one (``reads: grid``) and names a study: its
        sampler's settings at the study's first run's final checkpoint, over the overrides its
        config entry sweeps (:func:`grid_overrides`)."""
        jobs = {}
        figs = self.config["figures"]
        for key, spec in self.figure_specs.items():
            entry = figs.get(key) or {}
            if spec.reads != "grid" or not entry.get("study"):
                continue
            sampler = self.samplers[entry["sampler"]]
            overrides = grid_overrides(entry, sampler.settings)
            jobs[key] = GridJob(key, self.first_run(entry["study"]), sampler, _frozen(overrides))
        return jobs

    # ---------------------------------------------------------------- tables

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
        for key in self.track_figures:
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
        for key in self.track_figures:
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

    def figure_targets(self) -> list[str]:
        return [job.path for job in self.figures.values()]
