"""What several sampling tests share: small problems and a way to ask the fast sampler for its
loss traces with the knobs only tests and benchmarks turn (grokking_llc.sampling.sgld's
underscored arguments)."""

from __future__ import annotations

import math

import numpy as np
import torch
from known_answers import half_mse
from torch import nn

from grokking_llc.core.data import make_split, split_tensors
from grokking_llc.core.model import QuadraticNet
from grokking_llc.core.settings import SamplerConfig, TrainConfig
from grokking_llc.sampling.sgld import sample_chains_many
from grokking_llc.training.checkpoints import checkpoint_state
from grokking_llc.training.train import train

__all__ = [
    "P",
    "TINY_SGLD",
    "WIDTH",
    "half_mse",
    "loss_traces",
    "loss_traces_many",
    "noise_trace",
    "quad_setup",
    "regular_problem",
    "train_small_quadratic",
    "whitened_regression",
]

P, WIDTH = 11, 16  # n = round(0.4 * 121) = 48 training pairs: 3 batches of 16

# A few SGLD steps on the p = 3 problem of :func:`quad_setup` (9 rows: batches of 3), with every
# term of the update switched on.
TINY_SGLD = dict(lr=0.01, nbeta=3.0, localization=2.0, num_chains=2, num_burnin_steps=2,
                 num_draws=4, batch_size=3, weight_decay=0.1, num_init_loss_batches=2)  # fmt: skip


def quad_setup(p=3, K=2, S=2, seed=0):
    """A quadratic net on all p^2 pairs of Z_p (model, S checkpoint states near its
    initialisation, x, y): the first state is the model's own parameters."""
    gen = torch.Generator().manual_seed(seed)
    model = QuadraticNet(p, K, generator=gen)
    states = [{k: v.detach().clone() for k, v in model.state_dict().items()}]
    for _ in range(S - 1):
        states.append(
            {k: v + 0.3 * torch.randn(v.shape, generator=gen) for k, v in states[0].items()}
        )
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.reshape(-1), b.reshape(-1)], 1)
    y = (x[:, 0] + x[:, 1]) % p
    return model, states, x, y


def train_small_quadratic(directory) -> tuple[QuadraticNet, torch.Tensor, torch.Tensor]:
    """A quadratic net (p=11, K=16) trained 400 steps at lr 1e-2 (train loss ~3e-3): model at
    its final checkpoint, training inputs and targets."""
    cfg = TrainConfig(p=P, width=WIDTH, lr=1e-2, weight_decay=0.0, batch_size=16, max_steps=400,
                      checkpoint_every=400)  # fmt: skip
    split = make_split(P, cfg.train_frac, 0)
    result = train(cfg, split, directory)
    model = QuadraticNet(P, WIDTH)
    model.load_state_dict(checkpoint_state(result.checkpoints, -1))
    x, y = split_tensors(split, "train")
    return model, x, y


def loss_traces_many(model, states, x, y, loss_fn, cfg, *, seeds, device, path="auto",
                     epoch_mode="reshuffle", overlap_noise="auto", on_step=None):  # fmt: skip
    """``[(trace, init_loss)]`` of :func:`grokking_llc.sampling.sgld.sample_chains_many` (no
    diagnostics, fixed length) with its test-only knobs; ``cfg`` a SamplerConfig or mapping."""
    out = sample_chains_many(
        model, states, x, y, loss_fn, SamplerConfig.from_mapping(cfg), seeds=seeds,
        device=device, _path=path, _epoch_mode=epoch_mode, _overlap_noise=overlap_noise,
        _on_step=on_step,
    )  # fmt: skip
    return [(res.trace, res.init_loss) for res in out]


def loss_traces(model, x, y, loss_fn, cfg, *, seed, device, **knobs):
    """``(trace, init_loss)`` of the fast sampler at the model's own parameters."""
    state = {name: p.detach() for name, p in model.named_parameters()}
    [out] = loss_traces_many(model, [state], x, y, loss_fn, cfg, seeds=[seed], device=device,
                             **knobs)  # fmt: skip
    return out


def linear_problem(q=5, n=100, seed=3):
    """A linear regression ``y = x w`` without noise, inputs scaled 0.5 to 2 by column: the
    Hessian of ``half_mse`` is ``x^T x / n`` (a known curvature)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, q, generator=g) * torch.linspace(0.5, 2.0, q)
    y = x @ torch.randn(q, 1, generator=g)
    return nn.Linear(q, 1, bias=False), x, y


def regular_problem(q=6, n=400, seed=0):
    """Linear regression with q parameters and a full-rank design; w* = least squares."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, q, generator=g)
    y = x @ torch.randn(q, 1, generator=g) + 0.3 * torch.randn(n, 1, generator=g)
    model = nn.Linear(q, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    return model, x, y


def whitened_regression(q=100, n=200, seed=0):
    """Linear regression with q parameters whose design has ``X^T X / n = I`` exactly
    (orthonormal columns times sqrt(n)); w* = least squares. The loss is then
    ``L* + |w - w*|^2 / 2``: a regular model (lambda = q/2) with curvature 1 in every direction,
    so each coordinate of full-batch SGLD mixes at the same known rate."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(n, q, generator=g, dtype=torch.float64))
    x = (basis * math.sqrt(n)).float()
    y = x @ torch.randn(q, 1, generator=g) + 0.3 * torch.randn(n, 1, generator=g)
    model = nn.Linear(q, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    return model, x, y


def noise_trace(chains, steps, seed=0, level=1.0, scale=0.1):
    """A stationary loss trace: ``level`` plus i.i.d. Gaussian noise of sd ``scale``."""
    return level + scale * np.random.default_rng(seed).standard_normal((chains, steps))
