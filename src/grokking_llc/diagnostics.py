"""Convergence diagnostics for SGLD loss traces (SPEC sections 4 and 10).

All take the draws of a (chains, draws) array, burn-in already removed, except
:func:`plateau_burn_in`, which finds the burn-in:

* :func:`r_hat`: split-R-hat (Gelman et al., Bayesian Data Analysis 3rd ed., section 11.4):
  each chain is cut in half, and the between- and within-half variances of the loss compared.
  Values near 1 mean the chains agree with each other and with themselves over time; SPEC
  section 10 asks for < 1.1 over >= 4 chains. A chain whose loss still drifts raises it.
* :func:`r_hat_tail`: the same on the last half of the draws (SPEC section 10's "tail window"):
  a trace that relaxed only during the first half of the draws passes here and fails
  :func:`r_hat`; one still moving at the end fails both.
* :func:`effective_sample_size`: the number of independent draws the chains are worth for the
  mean loss (and so for the LLC), from the autocorrelation summed with Geyer's initial positive
  sequence (BDA3 section 11.5).
* :func:`drift_z`: the difference of the pooled mean loss of the first and the last quarter of
  the draws in units of its standard error (each quarter's SE from its own ESS): SPEC section
  10's "drift between the first and last quarter of the draws within a few standard errors".
* :func:`plateau_burn_in`: where the chain-mean loss trace reaches its plateau (SPEC section 10:
  "burn-in ends where the trace reaches its plateau"), by the MSER-5 truncation rule (White
  1997; Franklin and White 2008): cut the series into batches of 5 steps and drop the first
  ``d`` batches, ``d`` minimising the squared standard error of the mean of the rest,
  ``sum_{j > d} (z_j - zbar_d)^2 / (k - d)^2`` over ``k`` batches.
"""

from __future__ import annotations

import math

import numpy as np

MSER_BATCH = 5  # batch length of the MSER-5 rule


def _as_draws(draws) -> np.ndarray:
    x = np.asarray(draws, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"draws must have shape (chains, draws), got {x.shape}")
    return x


def r_hat(draws) -> float:
    """Split-R-hat of the loss across chains (BDA3 11.4; SPEC section 10).

    Each of the m chains is cut into halves of ``n = draws // 2`` (the middle draw of an odd
    count dropped), giving 2m sequences; with B = n times the variance (ddof 1) of their means
    and W the mean of their variances (ddof 1),
    ``R = sqrt(((n - 1)/n W + B/n) / W)``. NaN with fewer than 4 draws or non-finite values.
    """
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


def r_hat_tail(draws, fraction: float = 0.5) -> float:
    """Split-R-hat on the last ``fraction`` of the draws (SPEC section 10's tail window)."""
    x = _as_draws(draws)
    keep = int(math.floor(x.shape[1] * fraction))
    return r_hat(x[:, x.shape[1] - keep :]) if keep > 0 else math.nan


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
    (Geyer's initial positive sequence) on the chain-averaged autocorrelation ``rho``.
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


def standard_error(draws) -> float:
    """Standard error of the pooled mean of ``draws``: ``sqrt(var / ESS)`` (var ddof 1)."""
    x = _as_draws(draws)
    ess = effective_sample_size(x)
    if not math.isfinite(ess) or x.size < 2:
        return math.nan
    return float(math.sqrt(x.var(ddof=1) / ess))


def drift_z(draws) -> float:
    """``(mean of the last quarter - mean of the first quarter) / SE`` (SPEC section 10).

    Means pool all chains; ``SE = sqrt(se_first^2 + se_last^2)``, each quarter's SE from its own
    effective sample size (:func:`standard_error`). Positive when the loss still rises.
    NaN with fewer than 16 draws; ``+-inf`` when both quarters are constant but differ.
    """
    x = _as_draws(draws)
    q = x.shape[1] // 4
    if q < 4 or not np.isfinite(x).all():
        return math.nan
    first, last = x[:, :q], x[:, -q:]
    diff = float(last.mean() - first.mean())
    se = math.hypot(standard_error(first), standard_error(last))
    if se == 0 or not math.isfinite(se):
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / se


def plateau_burn_in(trace, minimum: int = 0, max_fraction: float = 0.5) -> int:
    """Steps to drop so that what remains is the plateau of ``trace`` (SPEC section 10).

    ``trace`` is (chains, steps) or one series; chains are averaged first (diverged chains
    should be left out by the caller). MSER-5 (module docstring) over truncation points from
    ``minimum`` up to ``max_fraction`` of the steps; the answer is a multiple of 5 steps or
    ``minimum`` itself, never below ``minimum`` (the configured burn-in) and never above
    ``max(minimum, max_fraction * steps)``, so at least that share of the steps stays as draws.
    A trace that keeps drifting gets the largest cut; the stationarity checks then say so.
    """
    y = np.asarray(trace, dtype=np.float64)
    series = y.mean(axis=0) if y.ndim == 2 else y
    steps = len(series)
    if steps == 0 or not np.isfinite(series).all():
        return int(min(minimum, steps))
    k = steps // MSER_BATCH
    if k < 4:
        return int(min(minimum, steps))
    z = series[: k * MSER_BATCH].reshape(k, MSER_BATCH).mean(axis=1)
    d_min = int(minimum) // MSER_BATCH
    d_max = max(d_min, int(k * max_fraction))
    if d_min >= k - 1:
        return int(min(minimum, steps))
    d_max = min(d_max, k - 2)
    # Suffix sums give every candidate's statistic at once.
    rev = z[::-1]
    count = np.arange(1, k + 1)
    s1 = np.cumsum(rev)[::-1]  # sum of z[d:]
    s2 = np.cumsum(rev**2)[::-1]
    n_rest = count[::-1].astype(np.float64)  # k - d
    sse = s2 - s1**2 / n_rest
    stat = sse / n_rest**2
    d = d_min + int(np.argmin(stat[d_min : d_max + 1]))
    return int(max(minimum, d * MSER_BATCH))
