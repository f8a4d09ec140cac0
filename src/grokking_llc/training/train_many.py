"""Training several runs of the same shape together (SPEC section 3, batched over runs).

The runs of one group (same plain ``quadratic`` model, ``p``, width, batch size, loss,
checkpoint stride and number of training rows) advance in one computation: their parameters
are stacked along a leading run axis (``W`` (R, 2p, K), ``V`` (R, K, p), the Adam moments
likewise), the forward pass is a gather plus one ``bmm`` (SPEC section 2), the gradients are
written by hand and the Adam update (SPEC section 3: coupled weight decay, default betas and
eps) is applied to the whole stack. ``lr``, ``weight_decay``, ``seed``, ``max_steps``, the
early-stop settings and the split's contents may differ per run. Runs that early-stop or reach
their ``max_steps`` leave the stack; the others continue.

Each run is still its own run, on disk exactly as :func:`grokking_llc.training.train.train` leaves
it:
the same seeded generator (the same initial weights from ``build_model(..., generator=gen)``
and the same ``torch.randperm`` minibatch draws), the same checkpoint, state and digest files
in its own work dir (written by the same code path, so :func:`grokking_llc.training.train.train`,
:func:`grokking_llc.training.train.train_run` and
:func:`grokking_llc.training.train.load_checkpoints` accept
them, and either function resumes a state the other wrote), and the same resume checks
(:func:`grokking_llc.training.train._resume_state`). Runs of a group that resume at different steps
are
advanced, the lagging ones first, until they line up.

What is exact and what is tolerance (torch 2.13, CPU):

* Bitwise, by construction: a run's numbers do not depend on which other runs share its
  stack. Every op is either per run (the gathers, each ``bmm`` slice, the per-run column
  reductions over the batch, the scatter-add of the first layer's gradient into each run's own
  rows, in index order) or elementwise. The fused elementwise kernels of Adam (``lerp``,
  ``addcmul``, ``addcdiv``, ``add(alpha=)``) run per run slice (``torch._foreach_*``), so
  each run sees the very kernel calls it would see alone; that is a precaution (their
  vectorised and scalar-tail paths could round differently; on this machine whole-stack
  calls gave the same bits too). Tested with 1 and 2 threads. On CUDA ``index_add_`` uses
  atomic adds: there neither this nor the next point is promised (not tested on a GPU).
* Bitwise, as measured (not promised by torch): the numbers of
:func:`grokking_llc.training.train.train`
  (``nn.Module`` autograd + ``torch.optim.Adam``, whose CPU default is the single-tensor
  path). The hand gradient replays autograd's arithmetic op by op (:func:`_gradients`), each
  ``bmm`` slice gives the bits of ``mm``, and the Adam update replays the single-tensor path
  (:meth:`_Stack._adam`). The contract tested is a tolerance (losses rtol 1e-4, weights
  rtol 1e-4 / atol 1e-6); the measured difference is 0 on every run compared (the tests'
  runs, a grokking run over 525 steps, the benchmark's 1000-step runs at K up to 1024), so
  grokking and early-stop steps agree exactly; even the weights and state files have the same
  bytes. Separate tests assert the bitwise equality.
* Resume after a kill: bitwise the uninterrupted run (each state holds every tensor and the
  generator state), also when the runs of a group were killed at different steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from grokking_llc.core.data import n_train, split_tensors
from grokking_llc.core.model import get_loss
from grokking_llc.core.settings import TrainConfig
from grokking_llc.training.checkpoints import CheckpointMismatchError, resolve_device
from grokking_llc.training.train import (
    LOG_COLUMNS,
    TrainResult,
    _boundary,
    _discard_dir,
    _initial_state,
    _remove_discarded,
    _resume_state,
    check_trainable,
    collect_checkpoints,
    evaluate,
    write_checkpoint,
    write_outputs,
)

log = logging.getLogger(__name__)

# The settings that must agree for runs to share a stack (plus the number of training rows).
GROUP_KEYS = ("model", "model_options", "p", "width", "batch_size", "loss", "checkpoint_every")
BATCHED_MODELS = ("quadratic",)
BATCHED_LOSSES = ("centred_mse",)
# torch.optim.Adam's defaults (SPEC section 3: only lr and weight_decay are configured)
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def can_batch(cfg: TrainConfig) -> bool:
    """Whether :func:`train_many` can train ``cfg``: the plain QuadraticNet (no model
    options) with the centred square loss (the gradient written by hand, SPEC section 2)."""
    return cfg.model in BATCHED_MODELS and not cfg.model_options and cfg.loss in BATCHED_LOSSES


def group_key(cfg: TrainConfig) -> tuple[tuple[str, Any], ...]:
    """What runs trained together must share: :data:`GROUP_KEYS` and ``n_train`` (the number
    of training rows, SPEC section 1). Hashable; equal keys can go to one :func:`train_many`."""
    key = [(k, getattr(cfg, k)) for k in GROUP_KEYS]
    key[1] = ("model_options", json.dumps(cfg.model_options, sort_keys=True))
    return (*key, ("n_train", n_train(cfg.p, cfg.train_frac)))


def _check_group(cfgs, splits, work_dirs) -> None:
    if not cfgs:
        raise ValueError("train_many: no runs given")
    if not len(cfgs) == len(splits) == len(work_dirs):
        raise ValueError(f"train_many: {len(cfgs)} configs, {len(splits)} splits and "
                         f"{len(work_dirs)} work dirs: one of each per run")  # fmt: skip
    for cfg in cfgs:
        if not can_batch(cfg):
            raise ValueError(
                f"train_many: run {cfg.run_id} cannot be batched (model {cfg.model!r}, "
                f"model_options {cfg.model_options!r}, loss {cfg.loss!r}; supported: models "
                f"{BATCHED_MODELS} without options, losses {BATCHED_LOSSES}); train it alone"
            )
    first = cfgs[0]
    for cfg in cfgs[1:]:
        for (name, want), (_, got) in zip(group_key(first), group_key(cfg), strict=True):
            if want != got:
                raise ValueError(f"train_many: runs differ in {name!r}: {first.run_id} has "
                                 f"{want!r}, {cfg.run_id} has {got!r}")  # fmt: skip
    rows = [int((s["split"] == "train").sum()) for s in splits]
    for cfg, split, n in zip(cfgs, splits, rows, strict=True):
        if n != rows[0]:
            raise ValueError(
                f"train_many: runs differ in 'n_train' (training rows of the split): "
                f"{cfgs[0].run_id} has {rows[0]}, {cfg.run_id} has {n}"
            )
        if len(split) != cfg.p * cfg.p:
            raise ValueError(f"train_many: the split of {cfg.run_id} has {len(split)} rows, "
                             f"not p^2 = {cfg.p * cfg.p}")  # fmt: skip
    resolved = [Path(w).resolve() for w in work_dirs]
    if len(set(resolved)) != len(resolved):
        raise ValueError("train_many: two runs share a work dir")


def _scalar_step(step: int) -> torch.Tensor:
    """Adam's ``state["step"]`` as torch.optim.Adam keeps it (a float scalar tensor)."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(float(step), dtype=dtype)


class _Run:
    """One run: its config, generator, model and optimiser (used for evaluation and for the
    state files, in train.py's format), its tensors while outside a stack, its log."""

    def __init__(self, cfg: TrainConfig, split: pd.DataFrame, work_dir: Path, dev, loss_fn):
        self.cfg, self.work_dir, self.loss_fn = cfg, work_dir, loss_fn
        self.x_tr, self.y_tr = split_tensors(split, "train", dev)
        self.x_va, self.y_va = split_tensors(split, "val", dev)
        check_trainable(cfg, len(self.y_tr), len(self.y_va))
        work_dir.mkdir(parents=True, exist_ok=True)
        self.gen, self.model, self.opt = _initial_state(cfg, dev)
        self.rows: list[dict] = []
        self.digests: list[str] = []
        self.step, self.streak = 0, 0
        _boundary("start")
        state = _resume_state(cfg, work_dir)
        if state is not None:  # as train.train does
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.gen.set_state(state["generator"])
            self.rows, self.digests = list(state["log"]), list(state["digests"])
            self.step, self.streak = int(state["step"]), int(state["streak"])
            log.info("resuming %s from step %d (%d checkpoints)", cfg.run_id, self.step,
                     len(self.rows))  # fmt: skip
        # the Adam moments (SPEC section 3) of W and V, zero before the first step
        self.moments = {}
        for name, param in (("W", self.model.W), ("V", self.model.V)):
            st = self.opt.state.get(param, {})
            self.moments[name] = (
                st["exp_avg"].detach().clone() if st else torch.zeros_like(param),
                st["exp_avg_sq"].detach().clone() if st else torch.zeros_like(param),
            )

    @property
    def done(self) -> bool:
        """Early-stopped (SPEC section 3) or at its ``max_steps``."""
        return self.streak >= self.cfg.early_stop_patience or self.step >= self.cfg.max_steps

    def load(self, W, V, mW, vW, mV, vV) -> None:
        """Copy a stack's slices of this run back (exact copies)."""
        with torch.no_grad():
            self.model.W.copy_(W)
            self.model.V.copy_(V)
        self.moments["W"][0].copy_(mW)
        self.moments["W"][1].copy_(vW)
        self.moments["V"][0].copy_(mV)
        self.moments["V"][1].copy_(vV)

    def checkpoint(self) -> None:
        """Evaluate, save weights and state: the code path of ``train.train``'s checkpoint."""
        cfg, model, work_dir, step = self.cfg, self.model, self.work_dir, self.step
        if step > 0:  # the optimiser state torch.optim.Adam would hold after `step` steps
            for name, param in (("W", model.W), ("V", model.V)):
                m, v = self.moments[name]
                self.opt.state[param] = {
                    "step": _scalar_step(step),
                    "exp_avg": m.clone(),
                    "exp_avg_sq": v.clone(),
                }
        model.eval()
        tr_loss, tr_acc = evaluate(model, self.loss_fn, self.x_tr, self.y_tr)
        va_loss, va_acc = evaluate(model, self.loss_fn, self.x_va, self.y_va)
        model.train()
        self.rows.append(
            dict(zip(LOG_COLUMNS, (step, tr_loss, va_loss, tr_acc, va_acc), strict=True))
        )
        self.streak = self.streak + 1 if va_acc >= cfg.early_stop_acc else 0
        write_checkpoint(cfg, work_dir, step, model, self.opt, self.gen, self.rows, self.digests,
                         self.streak)  # fmt: skip

    def result(self) -> TrainResult:
        _boundary("trained", self.step)
        steps = [r["step"] for r in self.rows]
        ckpts = collect_checkpoints(self.work_dir, steps=steps, digests=self.digests)
        return TrainResult(pd.DataFrame(self.rows, columns=LOG_COLUMNS), ckpts)


def _gradients(W, V, ia, ib, Y, batch: int):
    """Gradients of the centred square loss (SPEC section 2) for every run of a stack.

    ``W`` (R, 2p, K), ``V`` (R, K, p); ``ia``/``ib`` (R*B,) rows of the flattened ``W``
    (``a`` and ``p + b``, offset by ``2p`` per run); ``Y`` (R, B, p) one-hot targets.
    The forward pass is the gather of SPEC section 2, ``h = W[a] + W[p+b]``,
    ``pred = (h*h) @ V``; the backward pass replays, op for op, what autograd does for
    ``QuadraticNet`` + ``centred_mse`` (loss ``0.5 * sum((r - mean_0 r)^2) / B``,
    ``r = Y - pred``), so each run's gradient has the bits of ``loss.backward()``."""
    R, two_p, K = W.shape
    Wf = W.reshape(R * two_p, K)
    h = (Wf.index_select(0, ia) + Wf.index_select(0, ib)).view(R, batch, K)
    s = h * h
    pred = torch.bmm(s, V)
    r = Y - pred
    rm = r - r.mean(dim=1, keepdim=True)  # centring over the batch (SPEC section 2)
    g = (torch.ones((), dtype=W.dtype, device=W.device) / batch) * 0.5  # d loss / d sum(rm^2)
    d_rm = g * (2.0 * rm)  # pow backward
    d_pred = -(d_rm + (-d_rm).sum(dim=1, keepdim=True) / batch)  # mean and sub backward
    gV = torch.bmm(s.transpose(1, 2), d_pred)
    d_h = ((torch.bmm(d_pred, V.transpose(1, 2)) * h) * 2.0).view(R * batch, K)
    gW = torch.zeros_like(Wf).index_add_(0, ia, d_h).index_add_(0, ib, d_h)
    return gW.view(R, two_p, K), gV


class _Stack:
    """The runs of a group at the same step, their tensors stacked along a run axis."""

    def __init__(self, runs: list[_Run], p: int, batch: int):
        self.runs, self.p, self.batch = list(runs), p, batch
        self.n = len(runs[0].y_tr)
        self._build(
            torch.stack([r.model.W.detach() for r in runs]),
            torch.stack([r.model.V.detach() for r in runs]),
            *(torch.stack([r.moments[k][i] for r in runs]) for k in ("W", "V") for i in (0, 1)),
        )

    def _build(self, W, V, mW, vW, mV, vV) -> None:
        R, p, n, dev = len(self.runs), self.p, self.n, W.device
        self.W, self.V, self.mW, self.vW, self.mV, self.vV = W, V, mW, vW, mV, vV
        # per-run slices (views) for the ops applied run by run
        self.params = [*W.unbind(0), *V.unbind(0)]
        self.exp_avgs = [*mW.unbind(0), *mV.unbind(0)]
        self.exp_avg_sqs = [*vW.unbind(0), *vV.unbind(0)]
        self.lrs = [r.cfg.lr for r in self.runs] * 2
        wds: dict[float, list[int]] = {}
        for i, r in enumerate(self.runs * 2):
            wds.setdefault(float(r.cfg.weight_decay), []).append(i)
        self.wd_groups = [(wd, ids) for wd, ids in wds.items() if wd != 0]
        off = torch.arange(R, device=dev) * (2 * p)
        self.a_rows = (torch.stack([r.x_tr[:, 0] for r in self.runs]) + off[:, None]).view(-1)
        self.b_rows = (torch.stack([r.x_tr[:, 1] for r in self.runs]) + p + off[:, None]).view(-1)
        y = torch.stack([r.y_tr for r in self.runs]).view(-1)
        self.Y = F.one_hot(y, p).to(W.dtype)
        self.row_off = (torch.arange(R, device=dev) * n)[:, None]

    def keep(self, kept: list[_Run]) -> None:
        """Drop the runs not in ``kept`` (their slices have been written back)."""
        ids = torch.tensor([self.runs.index(r) for r in kept], device=self.W.device)
        self.runs = list(kept)
        if not kept:
            return
        self._build(*(t.index_select(0, ids) for t in self.tensors()))

    def tensors(self):
        return self.W, self.V, self.mW, self.vW, self.mV, self.vV

    def write_back(self, run: _Run) -> None:
        i = self.runs.index(run)
        run.load(*(t[i] for t in self.tensors()))

    def step(self) -> None:
        """One training step of every run (SPEC section 3: a fresh batch of ``B`` rows drawn
        by each run's own generator, as train.train draws it, then Adam)."""
        B, dev = self.batch, self.W.device
        idx = torch.stack([torch.randperm(self.n, generator=r.gen)[:B] for r in self.runs])
        rows = (idx.to(dev) + self.row_off).view(-1)
        gW, gV = _gradients(
            self.W, self.V, self.a_rows.index_select(0, rows), self.b_rows.index_select(0, rows),
            self.Y.index_select(0, rows).view(len(self.runs), B, self.p), B,
        )  # fmt: skip
        step = self.runs[0].step + 1
        self._adam(list(gW.unbind(0)) + list(gV.unbind(0)), step)
        for r in self.runs:
            r.step = step

    def _adam(self, grads: list[torch.Tensor], step: int) -> None:
        """``torch.optim.Adam(lr, weight_decay)`` with coupled weight decay and default betas
        and eps (SPEC sections 2-3), replaying its single-tensor arithmetic:
        ``g += wd * w``; ``m = lerp(m, g, 1 - b1)``; ``v = b2 v + (1 - b2) g^2``;
        ``w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``. Fused kernels run per
        run slice (foreach), plain elementwise ones on the whole stack (same bits either way)."""
        for wd, ids in self.wd_groups:
            torch._foreach_add_([grads[i] for i in ids], [self.params[i] for i in ids], alpha=wd)
        torch._foreach_lerp_(self.exp_avgs, grads, 1 - BETA1)
        self.vW.mul_(BETA2)
        self.vV.mul_(BETA2)
        torch._foreach_addcmul_(self.exp_avg_sqs, grads, grads, value=1 - BETA2)
        t = float(step)
        bias_correction1 = 1 - BETA1**t
        bias_correction2_sqrt = (1 - BETA2**t) ** 0.5
        denoms = [
            *(self.vW.sqrt() / bias_correction2_sqrt).add_(EPS).unbind(0),
            *(self.vV.sqrt() / bias_correction2_sqrt).add_(EPS).unbind(0),
        ]
        torch._foreach_addcdiv_(
            self.params, self.exp_avgs, denoms, [-(lr / bias_correction1) for lr in self.lrs]
        )


def train_many(
    cfgs: list[TrainConfig],
    splits: list[pd.DataFrame],
    work_dirs: list[str | Path],
    *,
    device: str = "cpu",
    progress_every_s: float = 10.0,
    _stop_after_step: int | None = None,
) -> list[TrainResult] | None:
    """Train the runs ``cfgs`` (one split and one work dir each) together; one
    :class:`~grokking_llc.training.train.TrainResult` per run, in order, each what
    ``train.train(cfg, split, work_dir)`` returns (see the module docstring for what is exact).

    The runs must share :func:`group_key` (else ``ValueError`` naming the differing key) and
    satisfy :func:`can_batch`. Each work dir is resumed as ``train.train`` resumes it.
    ``_stop_after_step`` simulates a kill (for tests): return ``None`` right after the first
    checkpoints at a step ``>=`` it."""
    cfgs, work_dirs = list(cfgs), [Path(w) for w in work_dirs]
    _check_group(cfgs, splits, work_dirs)
    dev = resolve_device(device)
    loss_fn = get_loss(cfgs[0].loss)
    p, batch, every = cfgs[0].p, cfgs[0].batch_size, cfgs[0].checkpoint_every
    runs = [_Run(c, s, w, dev, loss_fn) for c, s, w in zip(cfgs, splits, work_dirs, strict=True)]
    for run in runs:
        if not run.rows:
            run.checkpoint()  # step 0: the initialisation
    t0 = last_report = time.perf_counter()
    steps_done = 0
    while active := [r for r in runs if not r.done]:
        # the runs furthest behind advance until they reach the next run ahead (or finish)
        step = min(r.step for r in active)
        ahead = [r.step for r in active if r.step > step]
        target = min(ahead) if ahead else math.inf
        stack = _Stack([r for r in active if r.step == step], p, batch)
        while stack.runs and step < target:
            stack.step()
            step += 1
            steps_done += len(stack.runs)
            due = [r for r in stack.runs if step % every == 0 or step == r.cfg.max_steps]
            for run in due:
                stack.write_back(run)
                run.checkpoint()
                if run.done:
                    why = "early stop" if step < run.cfg.max_steps else "done"
                    log.info("%s %s at step %d", run.cfg.run_id, why, step)
            if due:
                if any(r.done for r in due):
                    stack.keep([r for r in stack.runs if not r.done])
                now = time.perf_counter()
                if now - last_report >= progress_every_s:
                    log.info("train_many: %d runs at step %d, %.0f run-steps/s",
                             len(stack.runs), step, steps_done / max(now - t0, 1e-9))  # fmt: skip
                    last_report = now
                if _stop_after_step is not None and step >= _stop_after_step:
                    return None
        for run in stack.runs:
            stack.write_back(run)
    return [run.result() for run in runs]


def train_many_run(
    cfgs: list[TrainConfig],
    splits: list[pd.DataFrame],
    *,
    log_paths: list[str | Path],
    checkpoints_paths: list[str | Path],
    work_dirs: list[str | Path],
    device: str = "cpu",
) -> list[TrainResult]:
    """:func:`grokking_llc.training.train.train_run` for a group: train together, then per run write
    ``checkpoints.pt``, the log, and remove the work dir, in train_run's order and format."""
    work_dirs = [Path(w) for w in work_dirs]
    if not len(cfgs) == len(log_paths) == len(checkpoints_paths) == len(work_dirs):
        raise ValueError("train_many_run: one log path, checkpoints path and work dir per run")
    for work_dir in work_dirs:
        trash = _discard_dir(work_dir)
        if trash.exists():
            log.warning("removing %s, left by a clean-up that was interrupted", trash)
            shutil.rmtree(trash)
    results = train_many(cfgs, splits, work_dirs, device=device)
    for cfg, result, log_path, ck_path, work_dir in zip(
        cfgs, results, log_paths, checkpoints_paths, work_dirs, strict=True
    ):
        if result.checkpoints["steps"].tolist() != result.log["step"].tolist():
            raise CheckpointMismatchError(f"{work_dir}: checkpoint steps differ from the log")
        write_outputs(cfg, result, ck_path, log_path)
        _boundary("outputs_written")
        trash = _discard_dir(work_dir)
        os.replace(work_dir, trash)
        _boundary("partial_renamed")
        _remove_discarded(trash)
    return results
