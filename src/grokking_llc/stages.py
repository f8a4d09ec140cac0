"""Workflow stages that are not estimation: job set-up, summaries, theory tables.

Scripts under ``workflow/scripts`` only unpack ``snakemake.input/params/output`` and call these
(or the stage functions of :mod:`grokking_llc.train` and :mod:`grokking_llc.llc`). Nothing here
decides a number that training or sampling produces, so editing it reruns no such job.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch

from grokking_llc.config import TrainConfig
from grokking_llc.io import write_parquet
from grokking_llc.train import load_checkpoints

log = logging.getLogger("grokking_llc")


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


def gather_tables(
    paths: list[str | os.PathLike], out: str | os.PathLike, sort: str, log_path=None
) -> None:
    """Concatenate Parquet tables (chunk outputs) into one, sorted by ``sort``."""
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    write_parquet(df.sort_values(sort, ignore_index=True), out)
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(f"gathered {len(paths)} tables, {len(df)} rows into {out}\n")


def run_compute_theory(checkpoints_path, llc_path, out_path, run: Mapping) -> pd.DataFrame:
    """Stage ``compute_theory``: the closed forms beside every checkpoint with an LLC estimate."""
    from grokking_llc.theory import theory_table

    cfg = TrainConfig(**run)
    theory = theory_table(
        load_checkpoints(checkpoints_path), cfg.p, cfg.width, cfg.train_frac, cfg.data_seed
    )
    llc = pd.read_parquet(llc_path, columns=["step", "llc_mean", "llc_std"])
    df = llc.merge(theory, on="step", how="left", validate="one_to_one")
    write_parquet(df, out_path)
    return df


def run_summarize_training(log_paths: list, out_path, runs: Mapping[str, Mapping]) -> pd.DataFrame:
    """Stage ``summarize_training``: one row per run from its training log (SPEC section 6).

    ``runs`` maps run id to ``{"run": settings, "studies": [...]}``, in the order of
    ``log_paths``."""
    from grokking_llc.gsm import summarize_training

    rows = [
        summarize_training(meta["run"], pd.read_parquet(path), run_id=rid, studies=meta["studies"])
        for (rid, meta), path in zip(runs.items(), log_paths, strict=True)
    ]
    df = pd.DataFrame(rows)
    write_parquet(df, out_path)
    return df


def run_summarize_runs(
    training_path, llc_paths: list, out_path, llc_runs: list[str], sampler_ids: list[str]
) -> pd.DataFrame:
    """Stage ``summarize_runs``: the training summary plus final and maximum LLC per run
    (``llc_paths`` and ``sampler_ids`` in the order of ``llc_runs``)."""
    from grokking_llc.gsm import summarize_llc

    df = pd.read_parquet(training_path)
    llc = {r: pd.read_parquet(p) for r, p in zip(llc_runs, llc_paths, strict=True)}
    ids = dict(zip(llc_runs, sampler_ids, strict=True))
    extra = pd.DataFrame([summarize_llc(llc.get(r), ids.get(r)) for r in df["run_id"]])
    out = pd.concat([df, extra], axis=1)
    write_parquet(out, out_path)
    return out


def runs_of_study(table: pd.DataFrame, study: str | None) -> pd.DataFrame:
    """Rows of a summary table whose ``studies`` list holds ``study`` (all rows for None)."""
    if study is None:
        return table
    return table[table["studies"].map(lambda s: study in list(s))].reset_index(drop=True)
