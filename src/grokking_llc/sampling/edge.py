"""The stability edge of a sampler at a state (SPEC section 10).

A step is stable when ``eps (nbeta lambda + gamma g_max) <~ 1``: ``lambda`` the largest
eigenvalue of ``G^(1/2) H G^(1/2)`` (``H`` the Hessian of the full-batch loss at w*, ``G`` the
kind's diagonal preconditioner, 1 for SGLD) and ``g_max`` the largest entry of ``G``. A setting
is written as a fraction ``lr_scaled`` of that edge (:func:`step_at_edge`): the calibration
(:mod:`grokking_llc.sampling.calibrate`) searches in those units, and an LLC track whose chains
diverge at a checkpoint at the calibration target's absolute step is run again at the same
fraction of that checkpoint's own edge (:mod:`grokking_llc.pipeline.stages.llc`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call, grad, jvp

from grokking_llc.core.settings import SamplerConfig
from grokking_llc.sampling.sgld import gauss_newton_diagonal

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
State = Mapping[str, torch.Tensor]


def preconditioner(model, params, x, y, loss_fn, cfg: SamplerConfig, batch_size: int, seed):
    """``cfg.kind``'s diagonal ``G`` at w* ({name: tensor}), or None for SGLD.

    gn_diag: the sampler's own (:func:`grokking_llc.sampling.sgld.gauss_newton_diagonal`, damped).
    rmsprop: its stationary value ``1 / (sqrt(E[g^2]) + delta)`` with ``E[g^2]`` the mean squared
    minibatch gradient at w* over 8 minibatches of ``batch_size`` (the sampler's running average
    starts at 0, so early steps have larger ``G``; a rough scale only).
    """
    if cfg.kind == "sgld":
        return None
    if cfg.kind == "gn_diag":
        diag = gauss_newton_diagonal(model, params, x, y, loss_fn, num_probes=cfg.gn_probes, seed=0)
        out = {}
        for name, h in diag.items():
            floor = cfg.gn_damping * float(h.mean())
            out[name] = 1.0 / (h + (floor if floor > 0 else 1.0))
        return out
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    buffers = dict(model.named_buffers())
    sq = {k: torch.zeros_like(v) for k, v in params.items()}
    for _ in range(8):
        rows = torch.randperm(len(x), generator=gen, device=x.device)[:batch_size]
        g = grad(lambda p, r=rows: loss_fn(functional_call(model, (p, buffers), (x[r],)), y[r]))(
            dict(params)
        )
        for k in sq:
            sq[k] += g[k].detach() ** 2 / 8
    return {k: 1.0 / (v.sqrt() + cfg.rmsprop_eps) for k, v in sq.items()}


def top_curvature(
    model: nn.Module,
    params: State,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    precond: State | None = None,
    iters: int = 30,
    seed: int = 0,
) -> float:
    """Largest |eigenvalue| of ``G^(1/2) H G^(1/2)``, ``H`` the Hessian of the full-batch loss at
    ``params`` (SPEC section 10's ``lambda_max`` when ``G = 1``), by power iteration on
    Hessian-vector products (forward-over-reverse)."""
    names = list(params)
    buffers = dict(model.named_buffers())
    p0 = {k: v.detach() for k, v in params.items()}
    half = {k: precond[k].sqrt() for k in names} if precond is not None else None

    def loss(p):
        return loss_fn(functional_call(model, (p, buffers), (x,)), y)

    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    v = {k: torch.randn(p0[k].shape, generator=gen, device=x.device, dtype=p0[k].dtype)
         for k in names}  # fmt: skip
    value = 0.0
    # forward-over-reverse: attention on its math kernel (the fused CPU kernel has no
    # forward-mode derivative; see grokking_llc.sampling.llc.point_checks)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        for _ in range(iters):
            norm = math.sqrt(sum(float((t**2).sum()) for t in v.values()))
            if norm == 0:
                return 0.0
            v = {k: t / norm for k, t in v.items()}
            u = {k: v[k] * half[k] for k in names} if half else v
            _, hu = jvp(grad(loss), (p0,), (u,))
            w = {k: hu[k].detach() * half[k] for k in names} if half else hu
            value = sum(float((w[k] * v[k]).sum()) for k in names)
            v = {k: w[k].detach() for k in names}
    return abs(value)


def edge_scale(
    model: nn.Module,
    params: State,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    cfg: SamplerConfig,
    *,
    seed: int = 0,
) -> tuple[float, float]:
    """``(lambda, g_max)`` of ``cfg.kind`` at ``params`` (module docstring; SPEC section 10), the
    preconditioner's minibatches of ``cfg.batch_size`` (at most the data)."""
    bs = min(int(cfg.batch_size), len(x))
    G = preconditioner(model, params, x, y, loss_fn, cfg, bs, seed)
    lam = top_curvature(model, params, x, y, loss_fn, precond=G, seed=seed)
    gmax = 1.0 if G is None else max(float(g.max()) for g in G.values())
    return lam, gmax


def step_at_edge(lr_scaled: float, nbeta: float, gamma: float, lam: float, gmax: float) -> float:
    """The absolute step ``lr_scaled / (nbeta lambda + gamma g_max)`` (SPEC section 10), to 4
    significant digits."""
    return float(f"{lr_scaled / (nbeta * lam + gamma * gmax):.4g}")
