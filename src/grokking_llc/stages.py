"""One function per workflow stage: what a Snakemake script calls, kept here so it is testable.

Scripts under ``workflow/scripts`` only unpack ``snakemake.input/params/output`` and call these.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from grokking_llc.config import SamplerConfig, TrainConfig
from grokking_llc.io import write_parquet
from grokking_llc.llc import estimate_llc
from grokking_llc.model import build_model, get_loss
from grokking_llc.train import checkpoint_state, load_checkpoints, resolve_device

log = logging.getLogger("grokking_llc")

LLC_COLUMNS = (
    "run_id", "sampler_id", "backend", "step", "llc_mean", "llc_std", "llc_per_chain",
    "diverged", "init_loss", "nbeta", "num_diverged", "reason", "loss_trace", "seconds",
)  # fmt: skip


def setup_job(log_path: str | os.PathLike | None, threads: int = 1) -> None:
    """Send logging (and stderr) of a workflow job to its log file; use ``threads`` threads.

    Called first by every script, so ``--cores N`` never oversubscribes the machine.
    """
    os.environ.setdefault("TQDM_DISABLE", "1")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "w", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stderr = stream
        handlers = [logging.StreamHandler(stream)]
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    torch.set_num_threads(max(1, int(threads)))


def select_checkpoints(num_checkpoints: int, every: int, chunk: int, chunks: int) -> list[int]:
    """Checkpoint indices for one LLC job: every ``every``-th (the last always included),
    dealt round-robin into ``chunks`` jobs; this job takes number ``chunk`` (0-based)."""
    if not 0 <= chunk < chunks:
        raise ValueError(f"chunk {chunk} outside 0..{chunks - 1}")
    picked = list(range(0, num_checkpoints, every))
    if picked[-1] != num_checkpoints - 1:
        picked.append(num_checkpoints - 1)
    return picked[chunk::chunks]


def estimate_run_llc(
    checkpoints: Mapping[str, Any],
    split: pd.DataFrame,
    run: TrainConfig,
    sampler: SamplerConfig,
    *,
    backend: str,
    every: int,
    chunk: int = 0,
    chunks: int = 1,
    device: str = "cpu",
    run_id: str = "",
    sampler_id: str = "",
) -> pd.DataFrame:
    """LLC at the selected checkpoints of one run (SPEC section 4), one row per checkpoint.

    The checkpoint at training step ``s`` is sampled with seed ``sampler.seed + s``, so a
    result never depends on how checkpoints are chunked into jobs. The model, data and loss are
    built once per job, not per checkpoint.
    """
    from grokking_llc.data import split_tensors

    dev = resolve_device(device)
    x, y = split_tensors(split, "train", dev)
    loss_fn = get_loss(run.loss)
    model = build_model(run.model, run.p, width=run.width, options=run.model_options).to(dev)
    steps = checkpoints["steps"].tolist()
    rows = []
    for i in select_checkpoints(len(steps), every, chunk, chunks):
        model.load_state_dict(checkpoint_state(checkpoints, i))
        t0 = time.perf_counter()
        res = estimate_llc(
            model, x, y, loss_fn, sampler, seed=sampler.seed + steps[i], backend=backend, device=dev
        )
        seconds = time.perf_counter() - t0
        log.info(
            "step %d: llc %.4g +- %.3g (%d diverged) in %.1fs",
            steps[i], res.llc_mean, res.llc_std, int(res.diverged.sum()), seconds,
        )  # fmt: skip
        rows.append(
            {
                "run_id": run_id,
                "sampler_id": sampler_id,
                "backend": backend,
                "step": int(steps[i]),
                **res.summary(),
                "llc_per_chain": res.llc_per_chain.tolist(),
                "diverged": res.diverged.tolist(),
                "loss_trace": [row.tolist() for row in res.loss_trace.astype(np.float32)],
                "seconds": seconds,
            }
        )
    return pd.DataFrame(rows, columns=list(LLC_COLUMNS)).sort_values("step", ignore_index=True)


def gather_tables(paths: list[str | os.PathLike], out: str | os.PathLike, sort: str) -> None:
    """Concatenate Parquet tables (chunk outputs) into one, sorted by ``sort``."""
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    write_parquet(df.sort_values(sort, ignore_index=True), out)


def run_estimate_llc(
    checkpoints_path, split_path, out_path, run: Mapping, llc: Mapping, *, chunk, chunks, device,
    run_id, sampler_id,
) -> pd.DataFrame:  # fmt: skip
    """Stage ``estimate_llc``: read a run's checkpoints, estimate, write Parquet atomically."""
    df = estimate_run_llc(
        load_checkpoints(checkpoints_path),
        pd.read_parquet(split_path),
        TrainConfig(**run),
        SamplerConfig.from_mapping(llc["sampler"]),
        backend=llc["backend"],
        every=llc["every"],
        chunk=chunk,
        chunks=chunks,
        device=device,
        run_id=run_id,
        sampler_id=sampler_id,
    )
    write_parquet(df, out_path)
    return df
