"""Local learning coefficient estimation (SPEC section 4).

``llc = n_beta * (E_w[L_n(w)] - L_n(w*))``, the expectation over the localised tempered posterior
``p(w) ~ exp(-n_beta L_n(w) - (gamma/2) ||w - w*||^2)`` sampled by SGLD, averaged over chains.

:func:`estimate_llc` is generic over any ``torch.nn.Module`` and any ``loss_fn(pred, target)``
returning a scalar mean loss; the sampler backend is a choice. Both backends produce loss traces
(one row per chain, one column per SGLD step, burn-in included) and share
:func:`llc_from_traces`, the one place where burn-in is dropped and diverged chains are left out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from grokking_llc.config import SamplerConfig

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

BACKENDS = ("devinterp", "fast")

# A chain whose mean loss after burn-in exceeds the starting loss by more than this many
# multiples of 1/n_beta per parameter-free unit is called runaway (see llc_from_traces).
RUNAWAY_FACTOR = 1e3


def default_nbeta(batch_size: int) -> float:
    """DevInterp's default inverse temperature ``m / ln m`` for batch size m (SPEC section 4)."""
    return batch_size / math.log(batch_size)


@dataclass
class LLCResult:
    """One LLC estimate with its diagnostics.

    ``loss_trace`` has shape (num_chains, num_burnin_steps + num_draws): the minibatch loss at
    every SGLD step, burn-in included, so a trace plot shows it; the estimate uses draws only.
    ``llc_mean`` and ``llc_std`` (sample std across chains, ddof=1; 0 for one chain) use the
    chains that did not diverge; NaN with ``reason`` set when none is left.
    """

    llc_mean: float
    llc_std: float
    llc_per_chain: np.ndarray
    loss_trace: np.ndarray
    init_loss: float
    nbeta: float
    num_burnin_steps: int
    diverged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    reason: str = ""
    r_hat: float = math.nan
    ess: float = math.nan

    @property
    def num_chains(self) -> int:
        return int(self.loss_trace.shape[0])

    def summary(self) -> dict[str, Any]:
        """Scalar fields for a results table."""
        return {
            "llc_mean": self.llc_mean,
            "llc_std": self.llc_std,
            "init_loss": self.init_loss,
            "nbeta": self.nbeta,
            "num_burnin_steps": self.num_burnin_steps,
            "num_diverged": int(self.diverged.sum()),
            "reason": self.reason,
            "r_hat": self.r_hat,
            "ess": self.ess,
        }


def llc_from_traces(
    loss_trace: np.ndarray, init_loss: float, nbeta: float, num_burnin_steps: int
) -> LLCResult:
    """LLC per chain ``n_beta * (mean_draws L - L(w*))`` with burn-in excluded (SPEC section 4).

    A chain is marked diverged when any of its losses is NaN or infinite, or when its mean
    loss over the draws exceeds ``init_loss`` by more than ``RUNAWAY_FACTOR * max(1, |init_loss|)``.
    Diverged chains are left out of the mean and std, never averaged in silently; R-hat and
    the effective sample size (:mod:`grokking_llc.diagnostics`) are computed on the draws of
    the chains that remain.
    """
    from grokking_llc.diagnostics import effective_sample_size, r_hat

    trace = np.asarray(loss_trace, dtype=np.float64)
    if trace.ndim != 2 or trace.shape[1] <= num_burnin_steps:
        raise ValueError(
            f"loss_trace of shape {trace.shape} has no draws after {num_burnin_steps} burn-in steps"
        )
    draws = trace[:, num_burnin_steps:]
    finite = np.isfinite(trace).all(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        mean_loss = draws.mean(axis=1)
        per_chain = nbeta * (mean_loss - init_loss)
    runaway = finite & (mean_loss - init_loss > RUNAWAY_FACTOR * max(1.0, abs(init_loss)))
    diverged = ~finite | runaway
    good = per_chain[~diverged]
    reason = ""
    if not math.isfinite(init_loss):
        reason, good = "non-finite loss at the checkpoint itself", good[:0]
    elif good.size == 0:
        reason = "all chains diverged (NaN/inf or runaway loss)"
    return LLCResult(
        llc_mean=float(good.mean()) if good.size else math.nan,
        llc_std=float(good.std(ddof=1)) if good.size > 1 else (0.0 if good.size else math.nan),
        llc_per_chain=per_chain,
        loss_trace=trace,
        init_loss=float(init_loss),
        nbeta=float(nbeta),
        num_burnin_steps=int(num_burnin_steps),
        diverged=diverged,
        reason=reason,
        r_hat=r_hat(draws[~diverged]) if (~diverged).sum() > 1 else math.nan,
        ess=effective_sample_size(draws[~diverged]) if (~diverged).any() else math.nan,
    )


def estimate_llc(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    sampler: Mapping[str, Any] | SamplerConfig,
    *,
    seed: int = 0,
    backend: str = "devinterp",
    device: str | torch.device | None = None,
) -> LLCResult:
    """Estimate the LLC of ``model`` at its current parameters w* (SPEC section 4).

    ``x`` and ``y`` are the full training inputs and targets (any shapes ``model`` and
    ``loss_fn`` accept, first dimension n); SGLD draws minibatches of ``sampler.batch_size``.
    ``sampler`` is a :class:`SamplerConfig` or a mapping with its keys (lr, nbeta, localization,
    num_chains, num_burnin_steps, num_draws, batch_size, ...). ``seed`` fixes every random draw
    (noise and minibatches). The model's parameters are left unchanged.
    """
    cfg = SamplerConfig.from_mapping(sampler)
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
    if cfg.batch_size > len(x):
        raise ValueError(f"sampler batch_size {cfg.batch_size} exceeds the {len(x)} samples")
    if device is None:
        device = next(model.parameters()).device
    if backend == "devinterp":
        from grokking_llc import devinterp_backend

        trace, init_loss = devinterp_backend.sample_loss_traces(
            model, x, y, loss_fn, cfg, seed=seed, device=str(device)
        )
    elif backend == "fast":
        from grokking_llc import sgld

        trace, init_loss = sgld.sample_loss_traces(
            model, x, y, loss_fn, cfg, seed=seed, device=device
        )
    else:
        raise ValueError(f"unknown LLC backend {backend!r}; choose one of {BACKENDS}")
    return llc_from_traces(trace, init_loss, cfg.resolved_nbeta, cfg.num_burnin_steps)


def bias_reduced_llc(nbeta, llc) -> dict[str, float]:
    """Bias-reduced LLC from a temperature sweep (SPEC section 4, appendix B.1, rebuilt).

    Least-squares line of the estimates ``llc`` on ``1 / nbeta`` (``nbeta = n beta``, so this
    is regression on ``1/beta`` up to the fixed factor n); its intercept, the value as
    ``1/beta -> 0``, is the bias-reduced LLC. Returns intercept, slope and r2 (NaN r2 when the
    estimates are all equal). Non-finite estimates are dropped; at least 2 must remain.
    """
    x = 1.0 / np.asarray(nbeta, dtype=np.float64)
    y = np.asarray(llc, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(np.unique(x)) < 2:
        raise ValueError("the temperature sweep needs finite estimates at >= 2 values of nbeta")
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    sst = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / sst if sst > 0 else math.nan
    return {"intercept": float(intercept), "slope": float(slope), "r2": r2, "n": int(len(x))}
