"""Stage entry point of ``train_model``: one run, resumed from its partial state if an earlier
job was killed (SPEC section 3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from grokking_llc.config import TrainConfig
from grokking_llc.train import train_run


def run_train_model(
    params: Mapping[str, Any], split_path: str, *, train_log: str, checkpoints: str,
    work_dir: str, device: str,
) -> None:  # fmt: skip
    """Train the run of ``params`` on its split; write the log and checkpoints atomically."""
    train_run(
        TrainConfig(**params),
        pd.read_parquet(split_path),
        log_path=train_log,
        checkpoints_path=checkpoints,
        work_dir=work_dir,
        device=device,
    )
