"""Stage entry points of the LLC rules: ``estimate_llc`` (a chunk of a run's track),
``gather_llc`` (the chunks into one table) and ``estimate_llc_grid`` (sampler sweeps at the
final checkpoint, appendix B.1/B.2). The estimator itself is :mod:`grokking_llc.sampling.llc`.

Seeds: the checkpoint at training step ``s`` is sampled with seed ``sampler.seed + s``, so a
result never depends on how checkpoints are chunked into jobs, and no two checkpoints of a run
share a noise stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from grokking_llc.core import columns
from grokking_llc.core.io import write_parquet
from grokking_llc.core.settings import SamplerConfig, TrainConfig
from grokking_llc.sampling.llc import LLCResult, estimate_llc, estimate_llc_many
from grokking_llc.sampling.refine import RefineSettings, select_adaptively, select_checkpoints

log = logging.getLogger(__name__)

# Identifying columns and per-chain arrays of an LLC row; the scalar estimate and validity columns
# come from LLCResult.summary() (the one source of them).
ID_COLUMNS = columns.LLC_IDS
ARRAY_COLUMNS = columns.LLC_ARRAYS


def llc_row(res: LLCResult, *, run_id: str, sampler_id: str, backend: str, step: int) -> dict:
    """One Parquet row: ids, every scalar of ``res.summary()``, per-chain arrays, the traces."""
    return {
        "run_id": run_id,
        "sampler_id": sampler_id,
        "backend": backend,
        "step": int(step),
        **res.summary(),
        "llc_per_chain": np.asarray(res.llc_per_chain, dtype=np.float64).tolist(),
        "diverged": np.asarray(res.diverged, dtype=bool).tolist(),
        "loss_trace": [row.tolist() for row in np.asarray(res.loss_trace, dtype=np.float32)],
    }


def _model_and_data(run: TrainConfig, split: pd.DataFrame, device: str):
    """A model of the run's architecture (weights loaded later) and its training split, once
    per job, on the resolved device."""
    from grokking_llc.core.data import split_tensors
    from grokking_llc.core.model import build_model
    from grokking_llc.training.checkpoints import resolve_device

    dev = resolve_device(device)
    x, y = split_tensors(split, "train", dev)
    model = build_model(run.model, run.p, width=run.width, options=run.model_options).to(dev)
    return model, x, y, dev


def estimate_run_llc(
    checkpoints: Mapping[str, Any],
    split: pd.DataFrame,
    run: TrainConfig,
    sampler: SamplerConfig | Mapping[str, Any],
    *,
    backend: str,
    every: int,
    chunk: int = 0,
    chunks: int = 1,
    device: str = "cpu",
    run_id: str = "",
    sampler_id: str = "",
    setting_valid: bool | None = None,
    refine: RefineSettings | None = None,
    train_log: pd.DataFrame | None = None,
    batch: int | None = None,
    edge_fraction: float | None = None,
) -> pd.DataFrame:
    """LLC at the selected checkpoints of one run (SPEC section 4), one row per checkpoint,
    each with its validity columns (SPEC section 10). Model, data and loss are built once.

    Checkpoints are estimated ``batch`` at a time in one batched computation (same numbers as
    one by one; None: :func:`checkpoint_batch`). With ``refine`` (and the run's ``train_log``
    for the accuracies) the checkpoints are chosen adaptively (:mod:`grokking_llc.sampling.refine`)
    and
    the ``selection`` column says which pass took each; otherwise it is "all".

    ``setting_valid``: for a calibrated sampler, whether its setting passed the calibration's
    setting-level checks (nbeta scaling, rescaling invariance, at the calibration's
    checkpoints); False makes every estimate invalid whatever its own checks say (a setting that
    failed is not measuring the LLC). None (a setting written in the config) adds nothing.

    ``edge_fraction``: for a calibrated sampler, the fraction of the stability edge its step was
    chosen at (SPEC section 10). The step is absolute (the calibration target's); at a
    checkpoint where a chain diverges at it, the step is above that checkpoint's own edge, and
    the checkpoint is estimated again at ``edge_fraction`` of its own edge
    (:func:`retry_at_own_edge`). ``sampler_lr`` says which step each estimate ran at."""
    from grokking_llc.core.model import get_loss
    from grokking_llc.training.checkpoints import checkpoint_state

    model, x, y, dev = _model_and_data(run, split, device)
    loss_fn = get_loss(run.loss)
    base_seed = _seed_of(sampler)
    steps = checkpoints["steps"].tolist()
    candidates = select_checkpoints(len(steps), every, chunk, chunks)
    cfg = SamplerConfig.from_mapping(sampler)
    num_chains = cfg.num_chains
    n_params = sum(p.numel() for p in model.parameters())
    size = batch if batch is not None else checkpoint_batch(n_params, num_chains, backend)
    rows: dict[int, dict] = {}

    def estimate(positions: list[int]) -> list[float]:
        """Estimate at these candidates, ``size`` checkpoints per batched computation."""
        values = []
        for start in range(0, len(positions), size):
            part = [candidates[k] for k in positions[start : start + size]]
            states = [checkpoint_state(checkpoints, i) for i in part]
            t0 = time.perf_counter()
            results = estimate_llc_many(
                model, states, x, y, loss_fn, sampler, seeds=[base_seed + steps[i] for i in part],
                backend=backend, device=dev,
            )  # fmt: skip
            seconds = (time.perf_counter() - t0) / len(part)
            for k, (i, res) in enumerate(zip(part, results, strict=True)):
                lr = float(cfg.lr)
                if edge_fraction is not None and np.any(res.diverged):
                    t1 = time.perf_counter()
                    res, lr = retry_at_own_edge(
                        res, model, states[k], x, y, loss_fn, cfg, edge_fraction,
                        seed=base_seed + steps[i], backend=backend, device=dev,
                    )  # fmt: skip
                    seconds_i = seconds + time.perf_counter() - t1
                else:
                    seconds_i = seconds
                log.info(
                    "step %d: llc %.4g +- %.3g (%d diverged) in %.1fs",
                    steps[i], res.llc_mean, res.llc_std, int(np.sum(res.diverged)), seconds_i,
                )  # fmt: skip
                row = llc_row(res, run_id=run_id, sampler_id=sampler_id, backend=backend,
                              step=steps[i])  # fmt: skip
                rows[i] = _with_setting(row, setting_valid) | {
                    columns.SAMPLER_LR: lr,
                    columns.SECONDS: seconds_i,
                }
                values.append(float(res.llc_mean))
        return values

    if refine is None or len(candidates) < 3:
        estimate(list(range(len(candidates))))
        for row in rows.values():
            row["selection"] = ALL
    else:
        accs = _accuracies(train_log, [steps[i] for i in candidates])
        kinds = select_adaptively(accs, estimate, refine, batch=max(size, 2))
        for k, kind in kinds.items():
            rows[candidates[k]]["selection"] = kind
        log.info("adaptive selection: %d of %d checkpoints estimated", len(kinds), len(candidates))
    rows = [rows[i] for i in sorted(rows)]

    # A chunk may hold no checkpoint (more chunks than checkpoints): an empty table, same columns.
    table = pd.DataFrame(rows, columns=list(columns.LLC_TRACK))
    return table.sort_values(columns.STEP, ignore_index=True)


def retry_at_own_edge(
    res: LLCResult,
    model,
    state: Mapping[str, Any],
    x,
    y,
    loss_fn,
    cfg: SamplerConfig,
    edge_fraction: float,
    *,
    seed: int,
    backend: str,
    device,
) -> tuple[LLCResult, float]:
    """``(result, step)`` at a checkpoint where a chain diverged at ``cfg.lr``: the estimate at
    ``edge_fraction`` of this checkpoint's own stability edge
    (:func:`grokking_llc.sampling.edge.step_at_edge`; SPEC section 10) when that step is
    smaller, else ``res`` as it was. The new estimate carries every check of its own."""
    from grokking_llc.sampling.edge import edge_scale, step_at_edge

    params = {name: state[name] for name, _ in model.named_parameters()}
    lam, gmax = edge_scale(model, params, x, y, loss_fn, cfg, seed=seed)
    lr = step_at_edge(edge_fraction, cfg.resolved_nbeta, cfg.localization, lam, gmax)
    if not (np.isfinite(lr) and 0 < lr < cfg.lr):
        return res, float(cfg.lr)
    log.info("a chain diverged at step size %.3g: again at %.3g (%.3g of this checkpoint's "
             "own edge)", cfg.lr, lr, edge_fraction)  # fmt: skip
    retried = SamplerConfig.from_mapping({**cfg.to_dict(), "lr": lr})
    (out,) = estimate_llc_many(model, [state], x, y, loss_fn, retried, seeds=[seed],
                               backend=backend, device=device)  # fmt: skip
    return out, lr


SETTING_FAILED = "the calibrated setting failed its calibration checks"
ALL = "all"  # ``selection`` of a row of a track estimated at every candidate

# Floats of stacked chain state per torch thread below which stacking more checkpoints into one
# batched computation still pays (benchmarks/RESULTS.md, "Checkpoints batched").
BATCH_FLOATS_PER_THREAD = 250_000
MAX_BATCH = 8


def checkpoint_batch(num_params: int, num_chains: int, backend: str, threads: int | None = None):
    """Checkpoints per batched computation: as many as keep ``checkpoints x chains x params``
    within :data:`BATCH_FLOATS_PER_THREAD` per torch thread (1 to :data:`MAX_BATCH`); 1 for
    devinterp (it samples one checkpoint at a time)."""
    if backend != "fast":
        return 1
    import torch

    threads = torch.get_num_threads() if threads is None else threads
    per = max(1, num_chains * num_params)
    return int(min(MAX_BATCH, max(1, (BATCH_FLOATS_PER_THREAD * max(1, threads)) // per)))


def _accuracies(train_log: pd.DataFrame | None, steps: list[int]) -> list[tuple[float, float]]:
    """``(train_acc, val_acc)`` at each step, from the run's training log."""
    if train_log is None:
        raise ValueError("adaptive checkpoint selection needs the run's training log")
    by_step = train_log.set_index("step")
    return [(float(by_step.at[s, "train_acc"]), float(by_step.at[s, "val_acc"])) for s in steps]


def _with_setting(row: dict, setting_valid: bool | None) -> dict:
    """``row`` with ``setting_valid``; an estimate under a setting that failed calibration is
    not valid (its reason says so; its status becomes ``invalid`` unless the checkpoint is no
    minimum)."""
    row = dict(row, setting_valid=setting_valid)
    if setting_valid is False:
        reason = row.get("invalid_reason") or ""
        row["invalid_reason"] = f"{reason}; {SETTING_FAILED}" if reason else SETTING_FAILED
        row["valid"] = False
        if row.get("status") != "not_a_minimum":  # not a minimum stays the finding it is
            row["status"] = "invalid"
    return row


def _seed_of(sampler: SamplerConfig | Mapping[str, Any]) -> int:
    if isinstance(sampler, SamplerConfig):
        return sampler.seed
    return int(sampler.get("seed", SamplerConfig().seed))


def resolve_sampler(
    params: Mapping[str, Any], calibration_path: str | None
) -> tuple[dict[str, Any], bool | None, float | None]:
    """The SGLD settings of a job -- written in the config, or chosen by a calibration (which may
    add a preconditioned kind's options) --, whether the calibration found them valid (None
    for settings written in the config) and the fraction of the stability edge the
    calibration's step was set at (None for settings written in the config)."""
    if params.get("sampler") is not None:
        return dict(params["sampler"]), None, None
    if calibration_path is None:
        raise ValueError("a calibrated sampler's job needs its calibration table")
    from grokking_llc.sampling.chosen import chosen_edge_fraction, chosen_sampler

    table = pd.read_parquet(calibration_path)
    settings, valid, reason = chosen_sampler(table)
    log.info("calibrated settings %s (valid: %s): %s", settings, valid, reason)
    return dict(settings), bool(valid), chosen_edge_fraction(table)


def run_estimate_llc(
    checkpoints_path: str,
    split_path: str,
    train_log_path: str,
    out_path: str,
    params: Mapping[str, Any],
    *,
    chunk: int,
    chunks: int,
    device: str,
    run_id: str,
    sampler_id: str,
    calibration_path: str | None = None,
    calibration_provenance: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Rule ``estimate_llc``: read a run's checkpoints (checked against its training log, both
    against the run of ``params``), estimate at this chunk's checkpoints, write Parquet
    atomically, carrying the run id, ``sampler_id`` and the hash of ``params``
    (:func:`grokking_llc.core.io.provenance`). A calibration table must carry
    ``calibration_provenance`` (the plan's) when it is given."""
    from grokking_llc.core.io import check_provenance, parquet_provenance, provenance
    from grokking_llc.training.checkpoints import load_checkpoints

    run = TrainConfig(**params["run"])
    ckpts = load_checkpoints(checkpoints_path, train_log=train_log_path, expect=run)
    if calibration_path is not None and calibration_provenance:
        found = parquet_provenance(calibration_path)
        check_provenance(calibration_path, found, calibration_provenance)
    sampler, setting_valid, edge_fraction = resolve_sampler(params, calibration_path)
    refine = params.get("refine")
    df = estimate_run_llc(
        ckpts,
        pd.read_parquet(split_path),
        run,
        sampler,
        backend=params["backend"],
        every=params["every"],
        chunk=chunk,
        chunks=chunks,
        device=device,
        run_id=run_id,
        sampler_id=sampler_id,
        setting_valid=setting_valid,
        refine=RefineSettings(**refine) if refine else None,
        train_log=pd.read_parquet(train_log_path) if refine else None,
        edge_fraction=edge_fraction,
    )
    write_parquet(df, out_path, provenance=provenance(run_id, params, sampler_id=sampler_id))
    return df


def run_estimate_llc_grid(
    checkpoints_path: str,
    split_path: str,
    train_log_path: str,
    out_path: str,
    params: Mapping[str, Any],
    *,
    device: str,
    sampler_id: str | None = None,
) -> pd.DataFrame:
    """Rule ``estimate_llc_grid``: the LLC at a run's final checkpoint for each sampler override
    in ``params["grid"]`` (localisation/step-size sweep of appendix B.2, temperature sweep of
    B.1). Every grid point uses the seed ``sampler.seed + final step``. The run's files are
    checked against the run of ``params``; the table carries the run id, ``sampler_id`` and the
    hash of ``params``."""
    from grokking_llc.core.io import provenance
    from grokking_llc.core.model import get_loss
    from grokking_llc.training.checkpoints import checkpoint_state, load_checkpoints

    cfg = TrainConfig(**params["run"])
    ckpts = load_checkpoints(checkpoints_path, train_log=train_log_path, expect=cfg)
    model, x, y, dev = _model_and_data(cfg, pd.read_parquet(split_path), device)
    last = len(ckpts["steps"]) - 1
    model.load_state_dict(checkpoint_state(ckpts, last))
    step = int(ckpts["steps"][last])
    rows = []
    for override in params["grid"]:
        sampler = SamplerConfig.from_mapping({**params["sampler"], **override})
        t0 = time.perf_counter()
        res = estimate_llc(
            model, x, y, get_loss(cfg.loss), sampler, seed=sampler.seed + step,
            backend=params["backend"], device=dev,
        )  # fmt: skip
        log.info("%s: llc %.4g +- %.3g", override, res.llc_mean, res.llc_std)
        rows.append(
            {
                "step": step,
                "localization": sampler.localization,
                "sampler_lr": sampler.lr,
                **res.summary(),
                "llc_per_chain": np.asarray(res.llc_per_chain, dtype=np.float64).tolist(),
                "seconds": time.perf_counter() - t0,
            }
        )
    df = pd.DataFrame(rows)
    ids = {"sampler_id": sampler_id} if sampler_id is not None else {}
    write_parquet(df, out_path, provenance=provenance(cfg.run_id, params, **ids))
    return df
