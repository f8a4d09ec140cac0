"""Reading a run's outputs (SPEC section 3): the consolidated ``checkpoints.pt``, checked against
its training log and against the run it should belong to, one checkpoint's weights, and the
device a job runs on.

What every reader of checkpoints needs (the LLC, calibration and theory stages) without the
training loop: :mod:`grokking_llc.training.train` writes the files and uses these too, so a
stage's code version (:mod:`grokking_llc.pipeline.versions`) follows how checkpoints are read,
not how a run is trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from grokking_llc.core.io import (
    CheckpointFileError,
    check_provenance,
    provenance,
    read_parquet,
    torch_load,
)
from grokking_llc.core.settings import TrainConfig


class CheckpointMismatchError(CheckpointFileError):
    """A checkpoints file that does not match its training log (different steps)."""


def run_provenance(cfg: TrainConfig) -> dict[str, Any]:
    """What a run's ``checkpoints.pt`` and ``train_log.parquet`` carry to prove whose they are:
    its run id and the hash of its training settings (:func:`grokking_llc.core.io.provenance`)."""
    return provenance(cfg.run_id, cfg.to_dict())


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def _checkpoints_problem(ckpts: Any) -> str | None:
    if not isinstance(ckpts, dict) or "steps" not in ckpts or "params" not in ckpts:
        return "not a checkpoints file (needs 'steps' and 'params')"
    steps, params = ckpts["steps"], ckpts["params"]
    if not isinstance(steps, torch.Tensor) or steps.ndim != 1 or steps.is_floating_point():
        return "'steps' is not a 1-D integer tensor"
    if len(steps) == 0 or bool((steps[1:] <= steps[:-1]).any()):
        return "'steps' is empty or not increasing"
    if not isinstance(params, dict) or not params:
        return "'params' is not a non-empty mapping of tensors"
    for name, value in params.items():
        if not isinstance(value, torch.Tensor) or value.ndim < 1 or len(value) != len(steps):
            return f"params[{name!r}] does not hold one tensor per checkpoint"
    return None


def _describe_steps(steps: list[int]) -> str:
    if not steps:
        return "no steps"
    return f"{len(steps)} checkpoints, steps {steps[0]}..{steps[-1]}"


def load_checkpoints(
    path: str | Path,
    *,
    train_log: str | Path | pd.DataFrame | None = None,
    expect: TrainConfig | dict[str, Any] | None = None,
) -> dict:
    """Read a consolidated checkpoints file written by :func:`train_run` (``weights_only``).

    With ``expect`` (the run the plan expects, or its :func:`run_provenance`), refuse a file,
    and a ``train_log`` file, made for another run (or not saying whose it is), with
    :class:`grokking_llc.core.io.ProvenanceError` naming the file and both run ids. With
    ``train_log`` (the run's ``train_log.parquet``, or its table), refuse a file whose steps are
    not exactly the logged ones, with :class:`CheckpointMismatchError` naming both files. A file
    carrying a pickled callable raises :class:`grokking_llc.core.io.UnsafeFileError`, an unreadable
    one :class:`grokking_llc.core.io.CorruptFileError`."""
    if isinstance(expect, TrainConfig):
        expect = run_provenance(expect)
    ckpts = torch_load(path)
    problem = _checkpoints_problem(ckpts)
    if problem is not None:
        raise CheckpointFileError(f"{path}: {problem}")
    found = ckpts.get("provenance")
    check_provenance(path, found if isinstance(found, dict) else None, expect)
    if train_log is not None:
        if isinstance(train_log, pd.DataFrame):
            logged, log_name = train_log["step"].tolist(), "the training log"
        else:
            table = read_parquet(train_log, expect=expect, columns=["step"])
            logged, log_name = table["step"].tolist(), str(train_log)
        have = ckpts["steps"].tolist()
        if have != logged:
            first = next(
                (i for i, (a, b) in enumerate(zip(have, logged, strict=False)) if a != b),
                min(len(have), len(logged)),
            )
            raise CheckpointMismatchError(
                f"{path} ({_describe_steps(have)}) does not match {log_name} "
                f"({_describe_steps(logged)}; first difference at checkpoint {first}): "
                "delete both and rerun the training job"
            )
    return ckpts


def checkpoint_state(ckpts: dict, index: int) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of checkpoint number ``index`` (not step) of a consolidated file."""
    return {k: v[index] for k, v in ckpts["params"].items()}
