"""Convergence diagnostics for SGLD loss traces (SPEC section 4: "diagnostics users expect").

Both take the draws of a (chains, draws) array, burn-in already removed:

* :func:`r_hat`: split-R-hat (Gelman et al., Bayesian Data Analysis 3rd ed., section 11.4):
  each chain is cut in half, and the between- and within-half variances of the loss compared.
  Values near 1 mean the chains agree with each other and with themselves over time; the usual
  warning level is 1.01-1.1. A chain whose loss still drifts (not yet stationary) raises it.
* :func:`effective_sample_size`: the number of independent draws the chains are worth for the
  mean loss (and so for the LLC), from the autocorrelation summed with Geyer's initial positive
  sequence (BDA3 section 11.5).
"""

from __future__ import annotations

import math

import numpy as np


def _as_draws(draws) -> np.ndarray:
    x = np.asarray(draws, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"draws must have shape (chains, draws), got {x.shape}")
    return x


def r_hat(draws) -> float:
    """Split-R-hat of the loss across chains (NaN with fewer than 4 draws or non-finite values)."""
    x = _as_draws(draws)
    n = x.shape[1] // 2
    if n < 2 or not np.isfinite(x).all():
        return math.nan
    halves = np.concatenate([x[:, :n], x[:, -n:]], axis=0)  # (2 * chains, n)
    means = halves.mean(axis=1)
    within = halves.var(axis=1, ddof=1).mean()
    between = n * means.var(ddof=1)
    if within == 0:
        return 1.0 if between == 0 else math.inf
    var_plus = (n - 1) / n * within + between / n
    return float(math.sqrt(var_plus / within))


def _autocorr(x: np.ndarray) -> np.ndarray:
    """Autocorrelation of each row at every lag, by FFT (biased estimator, lag 0 = 1)."""
    n = x.shape[1]
    centred = x - x.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(centred, n=size, axis=1)
    acov = np.fft.irfft(f * np.conj(f), n=size, axis=1)[:, :n] / n
    var = acov[:, :1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, acov / var, 0.0)


def effective_sample_size(draws) -> float:
    """Effective number of independent draws of the mean loss, all chains together.

    ``chains * draws / tau`` with the integrated autocorrelation time
    ``tau = -1 + 2 * sum_k (rho_2k + rho_2k+1)``, summing pairs while they are positive
    (Geyer's initial positive sequence) on the chain-averaged autocorrelation.
    """
    x = _as_draws(draws)
    chains, n = x.shape
    if n < 4 or not np.isfinite(x).all():
        return math.nan
    rho = _autocorr(x).mean(axis=0)
    tau = -1.0
    for k in range(0, n - 1, 2):
        pair = rho[k] + rho[k + 1]
        if pair <= 0:
            break
        tau += 2.0 * pair
    tau = max(tau, 1.0 / math.log10(max(chains * n, 10)))  # guard anti-correlated extremes
    return float(chains * n / tau)
