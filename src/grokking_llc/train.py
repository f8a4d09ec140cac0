"""Training one run (SPEC section 3): Adam with coupled weight decay, a batch drawn each step,
a checkpoint every ``checkpoint_every`` steps, early stop on validation accuracy.

Resumable. At every checkpoint the weights go to ``<work_dir>/ckpt_<step>.pt`` and then the full
training state (model, optimiser, batch generator, log so far) to ``<work_dir>/state.pt``, both
atomically. A run killed at any point restarts from its last state and, because every random draw
comes from one seeded generator whose state is saved, ends with exactly the result of an
uninterrupted run. :func:`train_run` then consolidates the checkpoints into one file.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from grokking_llc.config import TrainConfig
from grokking_llc.data import split_tensors
from grokking_llc.io import torch_save, write_parquet
from grokking_llc.model import accuracy, build_model, get_loss

log = logging.getLogger(__name__)

LOG_COLUMNS = ("step", "train_loss", "val_loss", "train_acc", "val_acc")
STATE_FILE = "state.pt"


@dataclass
class TrainResult:
    """What a finished run leaves: the log and the stacked checkpoints."""

    log: pd.DataFrame
    checkpoints: dict  # {"steps": LongTensor (T,), "params": {name: Tensor (T, ...)}}


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


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


def train(
    cfg: TrainConfig,
    split: pd.DataFrame,
    work_dir: str | Path,
    *,
    device: str = "cpu",
    progress_every_s: float = 10.0,
    _stop_after_step: int | None = None,
) -> TrainResult:
    """Train ``cfg`` on ``split`` (the output of :func:`grokking_llc.data.make_split`).

    ``work_dir`` holds the resumable state; when it has one from an earlier, interrupted call
    with the same run id, training continues from there. ``_stop_after_step`` simulates a kill
    (for tests): the function returns ``None`` right after the checkpoint at that step.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    loss_fn = get_loss(cfg.loss)
    x_tr, y_tr = split_tensors(split, "train", dev)
    x_va, y_va = split_tensors(split, "val", dev)
    n = len(y_tr)

    gen, model, opt = _initial_state(cfg, dev)
    rows: list[dict] = []
    step, streak = 0, 0
    state_path = work_dir / STATE_FILE
    if state_path.exists():
        state = torch.load(state_path, map_location=dev, weights_only=False)
        if state["run_id"] != cfg.run_id:
            raise RuntimeError(f"{state_path} belongs to run {state['run_id']}, not {cfg.run_id}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        rows, step, streak = state["log"], state["step"], state["streak"]
        log.info("resuming %s from step %d", cfg.run_id, step)

    def checkpoint() -> bool:
        """Evaluate, save weights and state; True when the early stop fires."""
        nonlocal streak
        model.eval()
        tr_loss, tr_acc = evaluate(model, loss_fn, x_tr, y_tr)
        va_loss, va_acc = evaluate(model, loss_fn, x_va, y_va)
        model.train()
        rows.append(dict(zip(LOG_COLUMNS, (step, tr_loss, va_loss, tr_acc, va_acc), strict=True)))
        streak = streak + 1 if va_acc >= cfg.early_stop_acc else 0
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        torch_save(weights, work_dir / f"ckpt_{step:07d}.pt")
        torch_save(
            {
                "run_id": cfg.run_id,
                "step": step,
                "streak": streak,
                "log": rows,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "generator": gen.get_state(),
            },
            state_path,
        )
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
                    r["val_loss"], r["val_acc"], (step - step0) / (now - t0),
                )  # fmt: skip
                last_report = now
            if _stop_after_step is not None and step >= _stop_after_step:
                return None
    if stopped:
        log.info("%s early stop at step %d", cfg.run_id, step)
    return TrainResult(pd.DataFrame(rows, columns=LOG_COLUMNS), collect_checkpoints(work_dir))


def collect_checkpoints(work_dir: str | Path) -> dict:
    """Stack every ``ckpt_*.pt`` of ``work_dir`` into ``{"steps", "params"}`` (ordered by step)."""
    files = sorted(Path(work_dir).glob("ckpt_*.pt"))
    states = [torch.load(f, weights_only=True) for f in files]
    steps = torch.tensor([int(f.stem.split("_")[1]) for f in files], dtype=torch.long)
    params = {k: torch.stack([s[k] for s in states]) for k in states[0]}
    return {"steps": steps, "params": params}


def train_run(
    cfg: TrainConfig,
    split: pd.DataFrame,
    *,
    log_path: str | Path,
    checkpoints_path: str | Path,
    work_dir: str | Path,
    device: str = "cpu",
) -> TrainResult:
    """Train and write the two outputs atomically; remove the work dir once both are written."""
    result = train(cfg, split, work_dir, device=device)
    torch_save(
        {**result.checkpoints, "config": cfg.to_dict(), "run_id": cfg.run_id}, checkpoints_path
    )
    write_parquet(result.log, log_path)
    shutil.rmtree(work_dir, ignore_errors=True)
    return result


def load_checkpoints(path: str | Path) -> dict:
    """Read a consolidated checkpoints file written by :func:`train_run`."""
    return torch.load(path, map_location="cpu", weights_only=False)


def checkpoint_state(ckpts: dict, index: int) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of checkpoint number ``index`` (not step) of a consolidated file."""
    return {k: v[index] for k, v in ckpts["params"].items()}
