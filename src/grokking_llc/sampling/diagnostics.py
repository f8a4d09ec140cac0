"""Convergence diagnostics for SGLD loss traces (SPEC sections 4 and 10).

All take the draws of a (chains, draws) array, burn-in already removed, except
:func:`plateau_burn_in`, which finds the burn-in. R-hat, the effective sample sizes and the Monte
Carlo standard error are ArviZ's (``arviz_stats.base.array_stats``): the definitions the field
uses (Vehtari, Gelman, Simpson, Carpenter and Buerkner 2021, "Rank-normalization, folding, and
localization: an improved R-hat for assessing convergence of MCMC"), not formulas written here.

* :func:`r_hat`: rank-normalised split-R-hat (the larger of the bulk R-hat and the R-hat of the
  folded draws |x - median|), so it also sees chains that agree in location but not in scale.
  Values near 1 mean the chains agree with each other and with themselves over time; SPEC
  section 10 asks for < 1.1 (Vehtari et al.'s lenient threshold; 1.01 is their strict one) over
  >= 4 chains. A chain whose loss still drifts raises it.
* :func:`r_hat_tail`: the same on the last half of the draws (SPEC section 10's "tail window"):
  a trace that relaxed only during the first half of the draws passes here and fails
  :func:`r_hat`; one still moving at the end fails both.
* :func:`effective_sample_size` (bulk ESS, rank-normalised) and :func:`tail_ess` (ESS of the 5%
  and 95% quantiles, the smaller): how many independent draws the chains are worth for the
  centre and for the tails of the loss distribution.
* :func:`standard_error`: the Monte Carlo standard error of the mean (ArviZ ``mcse``, method
  "mean"): the error of the LLC estimate's mean loss.
* :func:`drift_z`: the difference of the pooled mean loss of the first and the last quarter of
  the draws in units of its standard error (each quarter's from :func:`standard_error`): SPEC
  section 10's "drift between the first and last quarter of the draws within a few standard
  errors". Not in ArviZ; written here.
* :func:`plateau_burn_in`: where the chain-mean loss trace reaches its plateau (SPEC section 10:
  "burn-in ends where the trace reaches its plateau"), by the MSER-5 truncation rule (White
  1997; Franklin and White 2008): cut the series into batches of 5 steps and drop the first
  ``d`` batches, ``d`` minimising the squared standard error of the mean of the rest,
  ``sum_{j > d} (z_j - zbar_d)^2 / (k - d)^2`` over ``k`` batches. Not in ArviZ; written here.

Conventions beyond ArviZ's: NaN for fewer than 4 draws, fewer than 2 chains (R-hat) or any
non-finite value; identical constant chains have R-hat 1, constant chains that differ inf.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

MSER_BATCH = 5  # batch length of the MSER-5 rule
TAIL_PROB = (0.05, 0.95)  # quantiles of the tail ESS (Vehtari et al. 2021)


def _as_draws(draws) -> np.ndarray:
    x = np.asarray(draws, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"draws must have shape (chains, draws), got {x.shape}")
    return x


def _usable(x: np.ndarray, min_chains: int = 1) -> bool:
    return x.shape[1] >= 4 and x.shape[0] >= min_chains and bool(np.isfinite(x).all())


def _stats():
    from arviz_stats.base import array_stats

    return array_stats


def _quiet(fn, *args, **kwargs) -> float:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(fn(*args, **kwargs))


def r_hat(draws) -> float:
    """Rank-normalised split-R-hat of the loss across chains (ArviZ; module docstring).

    NaN with fewer than 4 draws, fewer than 2 chains or non-finite values; 1.0 when every
    chain is the same constant, inf when chains are constant but differ."""
    x = _as_draws(draws)
    if not _usable(x, min_chains=2):
        return math.nan
    if np.ptp(x, axis=1).max() == 0:  # constant chains: ArviZ's ranks are undefined
        return 1.0 if np.ptp(x[:, 0]) == 0 else math.inf
    value = _quiet(_stats().rhat, x, chain_axis=-2, draw_axis=-1, method="rank")
    return value if not math.isnan(value) else math.inf


def r_hat_tail(draws, fraction: float = 0.5) -> float:
    """:func:`r_hat` on the last ``fraction`` of the draws (SPEC section 10's tail window)."""
    x = _as_draws(draws)
    keep = int(math.floor(x.shape[1] * fraction))
    return r_hat(x[:, x.shape[1] - keep :]) if keep > 0 else math.nan


def effective_sample_size(draws) -> float:
    """Bulk effective sample size (rank-normalised, ArviZ), all chains together; NaN with fewer
    than 4 draws or non-finite values; the number of draws for constant chains."""
    x = _as_draws(draws)
    if not _usable(x):
        return math.nan
    if np.ptp(x) == 0:
        return float(x.size)
    return _quiet(_stats().ess, x, chain_axis=-2, draw_axis=-1, method="bulk")


def tail_ess(draws) -> float:
    """Tail effective sample size: the smaller ESS of the 5% and 95% quantiles (ArviZ); NaN as
    :func:`effective_sample_size`; the number of draws for constant chains."""
    x = _as_draws(draws)
    if not _usable(x):
        return math.nan
    if np.ptp(x) == 0:
        return float(x.size)
    return _quiet(_stats().ess, x, chain_axis=-2, draw_axis=-1, method="tail", prob=TAIL_PROB)


def standard_error(draws) -> float:
    """Monte Carlo standard error of the pooled mean of ``draws`` (ArviZ ``mcse``, method
    "mean"); NaN with fewer than 4 draws or non-finite values; 0 for constant draws."""
    x = _as_draws(draws)
    if not _usable(x):
        return math.nan
    if np.ptp(x) == 0:
        return 0.0
    return _quiet(_stats().mcse, x, chain_axis=-2, draw_axis=-1, method="mean")


def drift_z(draws) -> float:
    """``(mean of the last quarter - mean of the first quarter) / SE`` (SPEC section 10).

    Means pool all chains; ``SE = sqrt(se_first^2 + se_last^2)``, each quarter's from
    :func:`standard_error`. Positive when the loss still rises. NaN with fewer than 16 draws;
    ``+-inf`` when both quarters are constant but differ.
    """
    x = _as_draws(draws)
    diff, se = drift(x)
    if math.isnan(diff):
        return math.nan
    if se == 0 or not math.isfinite(se):
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / se


def drift(draws) -> tuple[float, float]:
    """``(last-quarter mean - first-quarter mean, its standard error)`` of the pooled draws
    (the numerator and denominator of :func:`drift_z`); NaNs with fewer than 16 draws or
    non-finite values."""
    x = _as_draws(draws)
    q = x.shape[1] // 4
    if q < 4 or not np.isfinite(x).all():
        return math.nan, math.nan
    first, last = x[:, :q], x[:, -q:]
    se = math.hypot(standard_error(first), standard_error(last))
    return float(last.mean() - first.mean()), se


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
