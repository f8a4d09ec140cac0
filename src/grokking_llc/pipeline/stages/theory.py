"""Stage entry point of ``compute_theory``: the closed-form learning coefficients (SPEC section
5) at the checkpoints of a run that its LLC tracks sample (every k-th and the last)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from grokking_llc.core.io import provenance, write_parquet
from grokking_llc.core.settings import TrainConfig
from grokking_llc.sampling.refine import select_checkpoints
from grokking_llc.science.theory import theory_table
from grokking_llc.training.checkpoints import load_checkpoints


def run_compute_theory(
    checkpoints_path: str, train_log_path: str, out_path: str, params: Mapping[str, Any]
) -> pd.DataFrame:
    """One row per selected checkpoint: K_eff, closed forms, lazy bounds, data-restricted count.
    The run's files must be the run of ``params``; the table carries its id and params' hash."""
    cfg = TrainConfig(**params["run"])
    ckpts = load_checkpoints(checkpoints_path, train_log=train_log_path, expect=cfg)
    keep = select_checkpoints(len(ckpts["steps"]), params["every"])
    subset = {
        "steps": ckpts["steps"][keep],
        "params": {k: v[keep] for k, v in ckpts["params"].items()},
    }
    df = theory_table(subset, cfg.p, cfg.width, cfg.train_frac, cfg.data_seed)
    write_parquet(df, out_path, provenance=provenance(cfg.run_id, params))
    return df
