"""Stage entry points of the training rules (SPEC section 3): ``train_model`` (one run) and the
``train_group_<id>`` rules (runs equal in all but the seed, trained together by
:func:`grokking_llc.training.train_many.train_many`). Either resumes from the runs' partial states
if an
earlier job was killed.

A run that :func:`grokking_llc.training.train_many.can_batch` handles is trained by ``train_many``
also
when alone: a run's numbers are bitwise the same whichever runs share its stack (tested), so
they never depend on whether, or with whom, it was trained together; they equal
:func:`grokking_llc.training.train.train`'s to float rounding (bitwise at the sizes measured, p >=
7; a
few 1e-8 apart at p = 5), and the hand-written gradient is faster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from grokking_llc.core.settings import TrainConfig
from grokking_llc.training.train import train_run
from grokking_llc.training.train_many import can_batch, train_many_run


def run_train_model(
    params: Mapping[str, Any], split_path: str, *, train_log: str, checkpoints: str,
    work_dir: str, device: str,
) -> None:  # fmt: skip
    """Train the run of ``params`` on its split; write the log and checkpoints atomically."""
    cfg = TrainConfig(**params)
    split = pd.read_parquet(split_path)
    if can_batch(cfg):
        train_many_run([cfg], [split], log_paths=[train_log], checkpoints_paths=[checkpoints],
                       work_dirs=[work_dir], device=device)  # fmt: skip
        return
    train_run(cfg, split, log_path=train_log, checkpoints_path=checkpoints, work_dir=work_dir,
              device=device)  # fmt: skip


def run_train_group(
    params: Mapping[str, Any], split_paths: Sequence[str], *, train_logs: Sequence[str],
    checkpoints: Sequence[str], work_dirs: Sequence[str], device: str,
) -> None:  # fmt: skip
    """Train the runs of ``params["runs"]`` together, each on its split; write each run's log
    and checkpoints atomically (train_run's order)."""
    cfgs = [TrainConfig(**run) for run in params["runs"]]
    train_many_run(
        cfgs, [pd.read_parquet(path) for path in split_paths], log_paths=list(train_logs),
        checkpoints_paths=list(checkpoints), work_dirs=list(work_dirs), device=device,
    )  # fmt: skip
