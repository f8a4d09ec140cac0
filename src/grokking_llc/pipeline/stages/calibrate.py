"""Stage entry point of the ``calibrate_sampler`` rule: one sampler setting for one model
shape, chosen at the final checkpoint of the shape's most typical run(s) by
:mod:`grokking_llc.sampling.calibrate` (SPEC section 10).

The ``calibration`` mapping is what the plan's ``CalibrationJob.params`` hands over: the config's
``llc.calibration`` (less ``runs``, which chose the runs), the sampler's ``backend``, and its own
SGLD keys as ``base`` (the settings that are not searched; ``lr``, ``nbeta``, ``localization``
and ``num_draws`` there are ignored). A key left out takes its default from the config schema
(:data:`CALIBRATION_DEFAULTS`, read from ``workflow/schemas/config.schema.yaml``, where every
key is described): ``checkpoints`` are fractions of each run's checkpoints (0 = first, 1 =
final; :func:`checkpoint_indices`), ``num_steps`` and ``max_steps`` the start and cap of every
calibration run's length, ``grid`` what is searched (missing keys:
:func:`grokking_llc.sampling.calibrate.default_search`), ``max_candidates``, ``exhaustive`` and
``reference`` how far.

The checkpoint at training step ``s`` is sampled with seed ``base.seed + s`` (as in the LLC
stage). The search runs at the last target: the final checkpoint of the first run given.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from grokking_llc.core.io import provenance, write_parquet
from grokking_llc.core.settings import TrainConfig, schema_defaults
from grokking_llc.sampling.calibrate import (
    Target,
    calibrate_targets,
    model_symmetry,
)

log = logging.getLogger(__name__)

# What a calibration mapping may hold, and the value of a key it leaves out: the schema's
# llc.calibration (less `runs`, the plan's), the sampler's backend, and no base settings.
CALIBRATION_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in schema_defaults("llc", "calibration").items() if k != "runs"},
    "backend": schema_defaults("llc", "samplers", "*")["backend"],
    "base": {},
}


def checkpoint_indices(num_checkpoints: int, fractions: Sequence[float]) -> list[int]:
    """Distinct checkpoint indices ``round(f * (T - 1))`` for fractions f in [0, 1], sorted."""
    if num_checkpoints < 1:
        raise ValueError("a run without checkpoints cannot be calibrated")
    out = set()
    for f in fractions:
        if not 0.0 <= float(f) <= 1.0:
            raise ValueError(f"checkpoint fraction {f} outside [0, 1]")
        out.add(int(round(float(f) * (num_checkpoints - 1))))
    return sorted(out)


def run_calibrate_sampler(
    checkpoints_paths: Sequence[str],
    split_paths: Sequence[str],
    runs: Sequence[Mapping[str, Any]],
    calibration: Mapping[str, Any],
    out_table: str,
    *,
    device: str,
) -> pd.DataFrame:
    """Rule ``calibrate_sampler``: calibrate at the chosen checkpoints of every run (run k's
    checkpoints file, split and TrainConfig fields at position k), choose one setting for all,
    write the table (one row per checkpoint and setting tried, with ``run_id``, ``step``,
    ``chosen``, ``chosen_valid``, ``reason`` and ``settings``) as Parquet, atomically."""
    from grokking_llc.core.data import split_tensors
    from grokking_llc.core.model import build_model, get_loss
    from grokking_llc.training.checkpoints import checkpoint_state, load_checkpoints, resolve_device

    if not (len(checkpoints_paths) == len(split_paths) == len(runs)) or not runs:
        raise ValueError("one checkpoints file, one split and one run config per run")
    unknown = set(calibration) - set(CALIBRATION_DEFAULTS)
    if unknown:
        raise ValueError(f"calibration: unknown key(s) {sorted(unknown)}")
    cal = {**CALIBRATION_DEFAULTS, **calibration}
    dev = resolve_device(device)
    base = dict(cal["base"])
    seed0 = int(base.get("seed", 0))
    targets = []
    # the first run (the shape's most typical, grokking_llc.pipeline.plan.Plan.shape_runs) goes
    # last: its final checkpoint is where the search runs
    jobs = list(zip(checkpoints_paths, split_paths, runs, strict=True))[::-1]
    for ckpt_path, split_path, run in jobs:
        cfg = TrainConfig(**run)
        ckpts = load_checkpoints(ckpt_path, expect=cfg)
        model = build_model(cfg.model, cfg.p, width=cfg.width, options=cfg.model_options)
        model = model.to(dev)
        x, y = split_tensors(pd.read_parquet(split_path), "train", dev)
        steps = [int(s) for s in ckpts["steps"].tolist()]
        for i in checkpoint_indices(len(steps), cal["checkpoints"]):
            state = {k: v.to(dev) for k, v in checkpoint_state(ckpts, i).items()}
            targets.append(
                Target(model, state, x, y, get_loss(cfg.loss), seed0 + steps[i],
                       {"run_id": cfg.run_id, "step": steps[i]}, model_symmetry(model))
            )  # fmt: skip
    result = calibrate_targets(
        targets, base=base, grid=cal["grid"], num_steps=int(cal["num_steps"]),
        max_steps=int(cal["max_steps"]), backend=cal["backend"], device=dev,
        max_candidates=int(cal["max_candidates"]), exhaustive=bool(cal["exhaustive"]),
        reference=cal["reference"],
    )  # fmt: skip
    log.info("calibration of %d checkpoint(s) in %.0fs: %s", len(targets), result.seconds,
             result.reason)  # fmt: skip
    # whose it is: the runs and the hash of the job's settings (the plan's CalibrationJob.params)
    prov = provenance([TrainConfig(**r).run_id for r in runs],
                      {"calibration": dict(calibration), "runs": list(runs)})  # fmt: skip
    write_parquet(result.table, out_table, provenance=prov)
    return result.table
