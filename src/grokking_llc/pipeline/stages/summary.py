"""Stage entry points of the summary tables (SPEC section 6): ``summarize_training`` (one row per
run from its training log) and ``summarize_runs`` (one row per run and named sampler: the
training summary plus the final and maximum LLC of its track, with their validity)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from grokking_llc.core import columns
from grokking_llc.core.io import provenance, read_parquet, write_parquet
from grokking_llc.science.gsm import summarize_training

LLC_SUMMARY_COLUMNS = columns.RUN_LLC


def run_summarize_training(
    log_paths: Sequence[str], out_path: str, runs: Mapping[str, Mapping[str, Any]]
) -> pd.DataFrame:
    """One row per run (``runs``: run id -> {"run": settings, "studies": [...]}, in the order of
    ``log_paths``); each log must carry its run's provenance."""
    rows = [
        summarize_training(
            meta["run"],
            read_parquet(path, expect=provenance(rid, meta["run"])),
            run_id=rid,
            studies=meta["studies"],
        )
        for (rid, meta), path in zip(runs.items(), log_paths, strict=True)
    ]
    df = pd.DataFrame(rows)
    write_parquet(df, out_path)
    return df


def _valid(track: pd.DataFrame) -> np.ndarray:
    """The validity flag of each estimate; a table written before validity existed counts as
    not validated (False), never as valid."""
    if "valid" not in track:
        return np.zeros(len(track), dtype=bool)
    return track["valid"].fillna(False).to_numpy(dtype=bool)


def _statuses(track: pd.DataFrame, valid: np.ndarray) -> np.ndarray:
    """``valid`` / ``not_a_minimum`` / ``invalid`` of each estimate (SPEC section 10); a table
    without the column: valid or invalid from its flag."""
    if "status" in track:
        return track["status"].fillna("invalid").astype(str).to_numpy()
    return np.where(valid, "valid", "invalid")


def summarize_track(track: pd.DataFrame) -> dict[str, Any]:
    """Final and maximum LLC of one track, each with its validity, status and reason, and how
    many of the track's estimates are valid and how many are at no minimum. ``max_llc`` is over
    the valid estimates when any is valid (an invalid peak is not a result), else over every
    finite one, flagged not valid; ``max_llc_all`` is over every finite estimate whatever its
    validity (the paper's statistic, for the verdict as published)."""
    valid = _valid(track)
    status = _statuses(track, valid)
    reasons = (
        track["invalid_reason"].fillna("").astype(str).to_numpy()
        if "invalid_reason" in track
        else np.full(len(track), "")
    )
    values = track["llc_mean"].to_numpy(dtype=np.float64)
    last = int(np.argmax(track["step"].to_numpy()))
    finite = np.isfinite(values)
    pool = finite & (valid if valid.any() else True)
    best = int(np.argmax(np.where(pool, values, -np.inf))) if pool.any() else None
    top = int(np.argmax(np.where(finite, values, -np.inf))) if finite.any() else None
    return {
        "final_llc": float(values[last]),
        "final_llc_std": float(track["llc_std"].iloc[last]),
        "final_llc_valid": bool(valid[last]),
        "final_llc_status": str(status[last]),
        "final_llc_invalid_reason": str(reasons[last]),
        "final_step_llc": int(track["step"].iloc[last]),
        "max_llc": float(values[best]) if best is not None else math.nan,
        "max_llc_step": float(track["step"].iloc[best]) if best is not None else math.nan,
        "max_llc_valid": bool(valid[best]) if best is not None else False,
        "max_llc_status": str(status[best]) if best is not None else "invalid",
        "max_llc_invalid_reason": str(reasons[best]) if best is not None else "no estimate",
        "max_llc_all": float(values[top]) if top is not None else math.nan,
        "max_llc_all_step": float(track["step"].iloc[top]) if top is not None else math.nan,
        "n_llc": int(len(track)),
        "n_llc_valid": int(valid.sum()),
        "n_llc_not_a_minimum": int((status == "not_a_minimum").sum()),
    }


def run_summarize_runs(
    training_path: str, tracks: Sequence[Mapping[str, str]], out_path: str
) -> pd.DataFrame:
    """``tracks``: one entry per (run, named sampler) with keys run_id, sampler, sampler_id and
    path (its LLC table, which must carry that run and sampler id). The training summary's row
    of each run is repeated per sampler."""
    training = pd.read_parquet(training_path).set_index("run_id", drop=False)
    rows = []
    for entry in tracks:
        ids = {"run_id": entry["run_id"], "sampler_id": entry["sampler_id"]}
        # ids only (a track without provenance was made by hand: the workflow rebuilds those)
        summary = summarize_track(read_parquet(entry["path"], expect=ids, missing_ok=True))
        base = training.loc[entry["run_id"]].to_dict()
        rows.append(
            base | {"sampler": entry["sampler"], "sampler_id": entry["sampler_id"]} | summary
        )
    columns = list(training.columns) + list(LLC_SUMMARY_COLUMNS)
    df = pd.DataFrame(rows, columns=columns).sort_values(["sampler", "run_id"], ignore_index=True)
    write_parquet(df, out_path)
    return df
