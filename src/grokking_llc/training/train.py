"""Training one run (SPEC section 3): Adam with coupled weight decay, a batch drawn each step,
a checkpoint every ``checkpoint_every`` steps, early stop on validation accuracy.

Resumable and exact. The work dir (``partial/`` in the workflow) holds, per checkpoint, the
weights ``ckpt_<step>.pt`` and the full training state ``state.pt`` (model, optimiser and
generator states as tensors and plain data, the log so far, the early-stop streak and the SHA-256
of every checkpoint file), written in that order, each atomically; the state before it is kept
as ``state.prev.pt``. Every random draw comes from one seeded generator whose state is saved, so
a run killed at any point and resumed ends with exactly the numbers of an uninterrupted run.

Outputs prove whose they are: ``checkpoints.pt`` holds ``"provenance"`` (the run id and the hash
of its settings, :func:`run_provenance`) and ``train_log.parquet`` the same in its metadata;
:func:`load_checkpoints` refuses either when it belongs to another run than the one expected.
A run whose minibatch or split is too small for its loss (one sample under the centred loss,
which is then 0 whatever the weights; SPEC section 2) is refused before anything is written.

Resume trusts nothing it has not checked: it takes the newest state file that loads, belongs to
this run and agrees with the checkpoint files (every logged step has its file with the recorded
digest, the streak matches the log); checkpoint files the state does not list are deleted; a
corrupt state falls back to the previous one; with neither usable it starts over. Each such
decision is logged with the file it concerns. Every file is read with ``weights_only=True``: a
file carrying a pickled callable is refused (:class:`grokking_llc.core.io.UnsafeFileError`).

:func:`train_run` writes the two outputs first (``checkpoints.pt``, then the log), and only
then removes the work dir, by renaming it aside and deleting the renamed folder, so a kill at
any point of the clean-up leaves either the complete work dir or none.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from grokking_llc.core import columns
from grokking_llc.core.data import split_tensors
from grokking_llc.core.io import (
    CheckpointFileError,
    CorruptFileError,
    file_digest,
    torch_load,
    torch_save,
    write_parquet,
)
from grokking_llc.core.model import accuracy, build_model, check_loss_samples, get_loss
from grokking_llc.core.settings import TrainConfig
from grokking_llc.training.checkpoints import (
    CheckpointMismatchError,
    resolve_device,
    run_provenance,
)

log = logging.getLogger(__name__)

LOG_COLUMNS = columns.TRAIN_LOG
STATE_FILE = "state.pt"
PREV_STATE_FILE = "state.prev.pt"
STATE_FORMAT = 2
_STATE_KEYS = ("format", "run_id", "step", "streak", "log", "digests", "model", "optimizer")

# Fault injection for tests: called as ``hook(point, step)`` at every boundary between two
# writes (see :func:`_boundary`). A test sets it to raise, or to SIGKILL its own process.
_FAULT_HOOK: Callable[[str, int], None] | None = None


def _boundary(point: str, step: int = -1) -> None:
    if _FAULT_HOOK is not None:
        _FAULT_HOOK(point, step)


@dataclass
class TrainResult:
    """What a finished run leaves: the log and the stacked checkpoints."""

    log: pd.DataFrame
    checkpoints: dict  # {"steps": LongTensor (T,), "params": {name: Tensor (T, ...)}}


def check_trainable(cfg: TrainConfig, n_train: int, n_val: int) -> None:
    """Refuse a run whose training minibatch, training split or validation split is too small
    for its loss (:func:`grokking_llc.core.model.check_loss_samples`; SPEC section 2), naming the
    key;
    warn when ``early_stop_acc`` is at or below chance accuracy 1/p (every checkpoint counts, so
    the run stops after ``early_stop_patience`` checkpoints whatever it learns)."""
    check_loss_samples(cfg.loss, min(cfg.batch_size, n_train), f"run {cfg.run_id}: batch_size")
    check_loss_samples(cfg.loss, n_train, f"run {cfg.run_id}: the training split")
    check_loss_samples(cfg.loss, n_val, f"run {cfg.run_id}: the validation split (val_loss)")
    if cfg.early_stop_acc <= 1.0 / cfg.p:
        log.warning(
            "%s: early_stop_acc %g is at or below chance accuracy 1/p = %.3g: every checkpoint "
            "counts towards the early stop, so training stops after %d checkpoint(s)",
            cfg.run_id, cfg.early_stop_acc, 1.0 / cfg.p, cfg.early_stop_patience,
        )  # fmt: skip


@torch.no_grad()
def evaluate(model, loss_fn, x, y) -> tuple[float, float]:
    """Loss and accuracy on a full split (SPEC section 3: metrics on the full splits)."""
    pred = model(x)
    return loss_fn(pred, y).item(), accuracy(pred, y)


def _initial_state(cfg: TrainConfig, device: torch.device):
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    model = build_model(
        cfg.model, cfg.p, width=cfg.width, generator=gen, options=cfg.model_options
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return gen, model, opt


def ckpt_path(work_dir: str | Path, step: int) -> Path:
    """The weights file of the checkpoint at ``step`` in a work dir."""
    return Path(work_dir) / f"ckpt_{step:07d}.pt"


def _ckpt_step(path: Path) -> int | None:
    try:
        return int(path.stem.split("_", 1)[1])
    except (IndexError, ValueError):
        return None


def trailing_streak(rows: list[dict], early_stop_acc: float) -> int:
    """Consecutive checkpoints at the end of ``rows`` with ``val_acc >= early_stop_acc``
    (the early-stop count of SPEC section 3)."""
    n = 0
    for row in reversed(rows):
        if row["val_acc"] < early_stop_acc:
            break
        n += 1
    return n


def _state_problem(state: Any, cfg: TrainConfig, work_dir: Path) -> str | None:
    """Why ``state`` cannot be resumed from (None when it can). Another run's state raises."""
    if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
        return "not a training state of this format"
    if state["run_id"] != cfg.run_id:
        raise RuntimeError(f"{work_dir} holds a state that belongs to run {state['run_id']}, "
                           f"not {cfg.run_id}")  # fmt: skip
    if state["format"] != STATE_FORMAT:
        return f"state format {state['format']}, expected {STATE_FORMAT}"
    rows, digests = state["log"], state["digests"]
    steps = [r.get("step") for r in rows] if isinstance(rows, list) else None
    if not steps or len(digests) != len(steps) or steps[0] != 0 or steps[-1] != state["step"]:
        return "its log, digests and step disagree"
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        return "its logged steps are not increasing"
    if state["streak"] != trailing_streak(rows, cfg.early_stop_acc):
        return f"its early-stop streak {state['streak']} disagrees with its log"
    for step, digest in zip(steps, digests, strict=True):
        path = ckpt_path(work_dir, step)
        if not path.exists():
            return f"checkpoint file {path.name} of logged step {step} is missing"
        if file_digest(path) != digest:
            return f"checkpoint file {path.name} differs from the one the state recorded"
    return None


def _discard(path: Path, why: str) -> None:
    log.warning("discarding %s: %s", path, why)
    path.unlink(missing_ok=True)


def _resume_state(cfg: TrainConfig, work_dir: Path) -> dict | None:
    """The newest consistent state of ``work_dir`` (None: start over), after tidying the dir.

    Checks and logs as described in the module docstring. A state file carrying a pickled
    callable raises :class:`grokking_llc.core.io.UnsafeFileError` (nothing of it runs)."""
    for tmp in work_dir.glob(".*.tmp"):  # a kill during an atomic write
        tmp.unlink(missing_ok=True)
    chosen = None
    for name in (STATE_FILE, PREV_STATE_FILE):
        path = work_dir / name
        if not path.exists():
            continue
        if chosen is not None:
            continue
        try:
            state = torch_load(path)
        except CorruptFileError as err:
            _discard(path, f"{err}")
            continue
        try:
            problem = _state_problem(state, cfg, work_dir)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            problem = f"malformed state ({type(err).__name__}: {err})"
        if problem is None:
            chosen = (path, state)
        else:
            _discard(path, problem)
    if chosen is None:
        stale = sorted(work_dir.glob("ckpt_*.pt"))
        if stale:
            log.warning("%s: no consistent training state; discarding %d checkpoint file(s) "
                        "and starting %s over", work_dir, len(stale), cfg.run_id)  # fmt: skip
        for path in stale:
            path.unlink()
        (work_dir / PREV_STATE_FILE).unlink(missing_ok=True)
        return None
    path, state = chosen
    if path.name == PREV_STATE_FILE:
        log.warning("resuming %s from the previous state %s", cfg.run_id, path)
        os.replace(path, work_dir / STATE_FILE)
    keep = {ckpt_path(work_dir, r["step"]).name for r in state["log"]}
    for stale in sorted(work_dir.glob("ckpt_*.pt")):
        if stale.name not in keep:
            _discard(stale, f"not a checkpoint of the state resumed from (step {state['step']})")
    return state


def write_checkpoint(cfg, work_dir: Path, step: int, model, opt, gen, rows, digests, streak):
    """Checkpoint ``step`` of a run: its weights (digest appended to ``digests``), then the full
    training state, the previous one kept as ``state.prev.pt``; every file atomically, a fault
    boundary between each (module docstring). Shared by :func:`train` and ``train_many``."""
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    digests.append(torch_save(weights, ckpt_path(work_dir, step), record=False))
    _boundary("ckpt_written", step)
    state_path, prev_path = work_dir / STATE_FILE, work_dir / PREV_STATE_FILE
    if state_path.exists():
        os.replace(state_path, prev_path)
    _boundary("state_rotated", step)
    torch_save(
        {
            "format": STATE_FORMAT,
            "run_id": cfg.run_id,
            "config": cfg.to_dict(),
            "step": step,
            "streak": streak,
            "log": rows,
            "digests": digests,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "generator": gen.get_state(),
        },
        state_path,
        record=False,  # a work file: the state lists its checkpoints' digests itself
    )
    _boundary("state_written", step)


def train(
    cfg: TrainConfig,
    split: pd.DataFrame,
    work_dir: str | Path,
    *,
    device: str = "cpu",
    progress_every_s: float = 10.0,
    _stop_after_step: int | None = None,
) -> TrainResult:
    """Train ``cfg`` on ``split`` (the output of :func:`grokking_llc.core.data.make_split`).

    ``work_dir`` holds the resumable state; when it has one from an earlier, interrupted call
    with the same run id, training continues from the last consistent checkpoint (see the module
    docstring). ``_stop_after_step`` simulates a kill (for tests): the function returns ``None``
    right after the checkpoint at that step.
    """
    work_dir = Path(work_dir)
    dev = resolve_device(device)
    loss_fn = get_loss(cfg.loss)
    x_tr, y_tr = split_tensors(split, "train", dev)
    x_va, y_va = split_tensors(split, "val", dev)
    n = len(y_tr)
    check_trainable(cfg, n, len(y_va))
    work_dir.mkdir(parents=True, exist_ok=True)

    gen, model, opt = _initial_state(cfg, dev)
    rows: list[dict] = []
    digests: list[str] = []
    step, streak = 0, 0
    _boundary("start")
    state = _resume_state(cfg, work_dir)
    if state is not None:
        # loaded on the CPU: load_state_dict moves values to the parameters' device, and the
        # generator state must stay a CPU ByteTensor
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        rows, digests = list(state["log"]), list(state["digests"])
        step, streak = int(state["step"]), int(state["streak"])
        log.info("resuming %s from step %d (%d checkpoints)", cfg.run_id, step, len(rows))

    def checkpoint() -> bool:
        """Evaluate, save weights and state; True when the early stop fires."""
        nonlocal streak
        model.eval()
        tr_loss, tr_acc = evaluate(model, loss_fn, x_tr, y_tr)
        va_loss, va_acc = evaluate(model, loss_fn, x_va, y_va)
        model.train()
        rows.append(dict(zip(LOG_COLUMNS, (step, tr_loss, va_loss, tr_acc, va_acc), strict=True)))
        streak = streak + 1 if va_acc >= cfg.early_stop_acc else 0
        write_checkpoint(cfg, work_dir, step, model, opt, gen, rows, digests, streak)
        return streak >= cfg.early_stop_patience

    if not rows:
        checkpoint()  # step 0: the initialisation
    stopped = streak >= cfg.early_stop_patience
    t0, last_report, step0 = time.perf_counter(), time.perf_counter(), step
    model.train()
    while not stopped and step < cfg.max_steps:
        idx = torch.randperm(n, generator=gen)[: cfg.batch_size].to(dev)
        loss = loss_fn(model(x_tr[idx]), y_tr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            stopped = checkpoint()
            now = time.perf_counter()
            if now - last_report >= progress_every_s or stopped or step == cfg.max_steps:
                r = rows[-1]
                log.info(
                    "%s step %d/%d  train loss %.3g acc %.3f  val loss %.3g acc %.3f  %.0f steps/s",
                    cfg.run_id, step, cfg.max_steps, r["train_loss"], r["train_acc"],
                    r["val_loss"], r["val_acc"], (step - step0) / max(now - t0, 1e-9),
                )  # fmt: skip
                last_report = now
            if _stop_after_step is not None and step >= _stop_after_step:
                return None
    if stopped:
        log.info("%s early stop at step %d", cfg.run_id, step)
    _boundary("trained", step)
    steps = [r["step"] for r in rows]
    ckpts = collect_checkpoints(work_dir, steps=steps, digests=digests)
    return TrainResult(pd.DataFrame(rows, columns=LOG_COLUMNS), ckpts)


def collect_checkpoints(
    work_dir: str | Path, *, steps: list[int] | None = None, digests: list[str] | None = None
) -> dict:
    """Stack the checkpoint files of ``work_dir`` into ``{"steps", "params"}``.

    With ``steps`` (the logged steps), exactly those files, in that order, each one required
    (and matching ``digests`` when given); without, every ``ckpt_*.pt`` ordered by step."""
    work_dir = Path(work_dir)
    if steps is None:
        found = [(_ckpt_step(f), f) for f in work_dir.glob("ckpt_*.pt")]
        steps = sorted(s for s, _ in found if s is not None)
    files = [ckpt_path(work_dir, s) for s in steps]
    if not files:
        raise CheckpointFileError(f"{work_dir}: no checkpoint files to collect")
    if digests is not None:
        for f, digest in zip(files, digests, strict=True):
            if not f.exists() or file_digest(f) != digest:
                raise CheckpointFileError(f"{f} is missing or differs from the one logged")
    states = [torch_load(f) for f in files]
    params = {k: torch.stack([s[k] for s in states]) for k in states[0]}
    return {"steps": torch.tensor(steps, dtype=torch.long), "params": params}


def _discard_dir(work_dir: Path) -> Path:
    """Where :func:`train_run` moves a finished work dir before deleting it."""
    return work_dir.with_name(work_dir.name + ".discard")


def _remove_discarded(trash: Path) -> None:
    if not trash.exists():
        return
    for f in sorted(trash.iterdir()):
        if f.is_dir():
            shutil.rmtree(f)
        else:
            f.unlink()
        _boundary("cleanup_file")
    trash.rmdir()


def train_run(
    cfg: TrainConfig,
    split: pd.DataFrame,
    *,
    log_path: str | Path,
    checkpoints_path: str | Path,
    work_dir: str | Path,
    device: str = "cpu",
) -> TrainResult:
    """Train, write the two outputs atomically, then remove the work dir.

    Order: ``checkpoints.pt``, the log, then the work dir is renamed to ``<work_dir>.discard``
    and deleted. A kill before the rename leaves the complete work dir (a rerun re-consolidates
    it without training); after it, no work dir (a rerun trains from scratch, to the same
    numbers). A leftover ``.discard`` folder of an earlier kill is removed first."""
    work_dir = Path(work_dir)
    trash = _discard_dir(work_dir)
    if trash.exists():
        log.warning("removing %s, left by a clean-up that was interrupted", trash)
        shutil.rmtree(trash)
    result = train(cfg, split, work_dir, device=device)
    if result.checkpoints["steps"].tolist() != result.log["step"].tolist():
        raise CheckpointMismatchError(f"{work_dir}: checkpoint steps differ from the log")
    write_outputs(cfg, result, checkpoints_path, log_path)
    _boundary("outputs_written")
    os.replace(work_dir, trash)
    _boundary("partial_renamed")
    _remove_discarded(trash)
    return result


def write_outputs(cfg: TrainConfig, result: TrainResult, checkpoints_path, log_path) -> None:
    """A finished run's two outputs, each atomically and carrying :func:`run_provenance`:
    ``checkpoints.pt`` first, then the log (a fault boundary between). Shared with
    ``train_many``."""
    prov = run_provenance(cfg)
    ckpts = {**result.checkpoints, "config": cfg.to_dict(), "run_id": cfg.run_id}
    torch_save({**ckpts, "provenance": prov}, checkpoints_path, provenance=prov)
    _boundary("checkpoints_written")
    write_parquet(result.log, log_path, provenance=prov)
