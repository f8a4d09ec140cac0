"""What the training tests share: the small run that train.train trains alone and
train_many.train_many trains in a stack, and SPEC section 3's training loop written out plainly
(the reference both are held to)."""

from __future__ import annotations

import numpy as np
import torch

from grokking_llc.core.model import QuadraticNet, centred_mse
from grokking_llc.core.settings import TrainConfig

__all__ = ["SMALL_RUN", "plain_training_loop"]

SMALL_RUN = TrainConfig(p=7, train_frac=0.6, width=16, lr=1e-2, weight_decay=1e-4, batch_size=16,
                        max_steps=120, checkpoint_every=20)  # fmt: skip


def _xy(split, part):
    d = split[split["split"] == part]
    return (
        torch.tensor(d[["a", "b"]].to_numpy(dtype=np.int64)),
        torch.tensor(d["c"].to_numpy(dtype=np.int64)),
    )


def _accuracy(pred, target) -> float:
    return (pred.argmax(1) == target).float().mean().item()


def plain_training_loop(c: TrainConfig, split):
    """SPEC section 3 written out for the quadratic net and the centred MSE: one run's log rows
    ``(step, train loss, val loss, train acc, val acc)``, its parameters at every checkpoint
    (``{step: state dict}``) and its final Adam optimiser."""
    assert (c.model, c.loss, c.model_options) == ("quadratic", "centred_mse", {})
    gen = torch.Generator().manual_seed(c.seed)
    model = QuadraticNet(c.p, c.width, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    xt, yt = _xy(split, "train")
    xv, yv = _xy(split, "val")
    rows, weights, streak, step = [], {}, 0, 0

    def check():
        nonlocal streak
        with torch.no_grad():
            pt, pv = model(xt), model(xv)
            row = (step, centred_mse(pt, yt).item(), centred_mse(pv, yv).item(),
                   _accuracy(pt, yt), _accuracy(pv, yv))  # fmt: skip
        rows.append(row)
        weights[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        streak = streak + 1 if row[4] >= c.early_stop_acc else 0

    check()
    while streak < c.early_stop_patience and step < c.max_steps:
        idx = torch.randperm(len(yt), generator=gen)[: c.batch_size]
        loss = centred_mse(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % c.checkpoint_every == 0 or step == c.max_steps:
            check()
    return rows, weights, opt
