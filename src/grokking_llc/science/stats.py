"""Statistics every fit, figure and claim uses (SPEC sections 6-7): the coefficient of
determination, the first step reaching a threshold, seed means, Spearman's rank correlation with
its Fisher-z interval, and the bias-corrected bootstrap over runs.

* :func:`r_squared` -- the one coefficient of determination, ``1 - SSE/SST``;
* :func:`first_step_reaching` -- the one "first checkpoint at or above a threshold";
* :func:`group_stats` -- the per-setting mean, standard deviation (ddof=1) and count that every
  figure draws;
* :func:`spearman` (rank correlation, average ranks for ties) with :func:`spearman_ci`
  (Fisher z), and :func:`bootstrap` (bias-corrected percentile intervals,
  :func:`bias_corrected_interval`, from resampling runs within each setting, explicit seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from statistics import NormalDist

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

# Spearman's Fisher-z standard error, sqrt(1.06 / (n - 3)) (Fieller, Hartley and Pearson 1957).
SPEARMAN_FISHER_VAR = 1.06


# --------------------------------------------------------------------------- input checks


def as_1d(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a 1-D float array with at least one entry and no NaN or inf."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D sequence of numbers: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: need at least one value")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def same_length(**arrays: np.ndarray) -> None:
    """Raise ValueError unless every array has the same number of entries."""
    lengths = {name: arr.size for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise ValueError(f"inputs must have equal lengths, got {shown}")


# --------------------------------------------------------------------------- basic statistics


def r_squared(y: ArrayLike, fitted: ArrayLike) -> float:
    """Coefficient of determination ``1 - SSE/SST`` (centred); NaN when ``y`` is constant.

    The paper's ``1 - SSE / (n var y)`` (SPEC section 6) is the same number. Negative when the
    fitted values miss the mean of ``y`` (e.g. a line forced through the origin).
    """
    ya = np.asarray(y, dtype=float)
    fa = np.asarray(fitted, dtype=float)
    sst = float(np.sum((ya - ya.mean()) ** 2))
    if sst == 0.0:
        return math.nan
    return 1.0 - float(np.sum((ya - fa) ** 2)) / sst


def first_step_reaching(steps: ArrayLike, values: ArrayLike, threshold: float) -> float:
    """The first ``steps[i]`` with ``values[i] >= threshold``; NaN if that never happens.

    Used for memorisation / generalisation steps (SPEC section 6: train or validation accuracy
    reaching 0.99). ``steps`` must be strictly increasing and as long as ``values``.
    """
    s = as_1d(steps, "steps")
    v = as_1d(values, "values")
    same_length(steps=s, values=v)
    if s.size > 1 and not np.all(np.diff(s) > 0):
        raise ValueError("steps must be strictly increasing")
    hits = np.flatnonzero(v >= float(threshold))
    return float(s[hits[0]]) if hits.size else math.nan


def group_stats(df: pd.DataFrame, by: str | list[str], y: str) -> pd.DataFrame:
    """Per group of ``by``: ``mean``, ``std`` (ddof=1; NaN for a single run) and ``n`` of ``y``.

    The point and error bar every seed-averaged figure draws (SPEC section 7)."""
    if df.empty:
        cols = [by] if isinstance(by, str) else list(by)
        return pd.DataFrame(columns=[*cols, "mean", "std", "n"])
    g = df.groupby(by, sort=True)[y]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.size()}).reset_index()
    out.loc[out["n"] < 2, "std"] = np.nan
    return out


def average_ranks(values: ArrayLike) -> np.ndarray:
    """Ranks 1..n of ``values``, ties given the mean of the ranks they span."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(v.size, dtype=float)
    sorted_v = v[order]
    i = 0
    while i < v.size:
        j = i
        while j + 1 < v.size and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (ties allowed).

    NaN with fewer than 3 points or when either variable is constant."""
    xa = as_1d(x, "x")
    ya = as_1d(y, "y")
    same_length(x=xa, y=ya)
    if xa.size < 3:
        return math.nan
    rx, ry = average_ranks(xa), average_ranks(ya)
    rx -= rx.mean()
    ry -= ry.mean()
    den = math.sqrt(float(np.sum(rx * rx)) * float(np.sum(ry * ry)))
    if den == 0.0:
        return math.nan
    return float(np.sum(rx * ry)) / den


def spearman_ci(rho: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of a Spearman correlation by Fisher's z transform.

    ``z = atanh(rho)`` with standard error ``sqrt(1.06 / (n - 3))`` (Fieller, Hartley and Pearson
    1957), back-transformed by ``tanh``. NaN for ``n <= 3`` or a NaN ``rho``; ``rho = +-1`` gives
    the degenerate interval ``(rho, rho)``.
    """
    if n <= 3 or not math.isfinite(rho):
        return math.nan, math.nan
    if abs(rho) >= 1.0:
        return float(rho), float(rho)
    zq = NormalDist().inv_cdf(0.5 + level / 2.0)
    z = math.atanh(rho)
    half = zq * math.sqrt(SPEARMAN_FISHER_VAR / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)


# --------------------------------------------------------------------------- bootstrap


def bias_corrected_interval(
    replicates: ArrayLike, estimate: float, level: float = 0.95
) -> tuple[float, float, float]:
    """Bias-corrected percentile (BC) bootstrap interval (Efron 1981; Efron and Tibshirani
    1993, section 14.3). Returns ``(low, high, z0)``.

    ``z0 = Phi^-1(p)``, ``p`` the fraction of ``replicates`` below ``estimate`` (ties count
    half; clipped to ``[0.5/B, 1 - 0.5/B]`` for B replicates), measures how far the bootstrap
    distribution's median sits from the estimate: a statistic whose replicates are skewed or
    biased (a plug-in variance, a rank correlation near -1 on resampled runs with ties) has
    ``z0 != 0``. The interval is the ``Phi(2 z0 + z_a)`` and ``Phi(2 z0 + z_{1-a})`` quantiles
    of the replicates (``a = (1 - level)/2``); ``z0 = 0`` gives the percentile interval. A NaN
    ``estimate`` gives the percentile interval and ``z0 = NaN``; no finite replicate gives NaN
    throughout. (Where the replicates lie almost all on one side of the estimate both ends move
    into that tail and the interval can still miss the estimate: :func:`bootstrap` guards it.)
    """
    reps = np.asarray(replicates, dtype=float)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return math.nan, math.nan, math.nan
    unit = NormalDist()
    z_a = unit.inv_cdf((1.0 - level) / 2.0)
    if not math.isfinite(estimate):
        lo, hi = np.quantile(reps, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
        return float(lo), float(hi), math.nan
    below = float(np.sum(reps < estimate)) + 0.5 * float(np.sum(reps == estimate))
    frac = min(max(below / reps.size, 0.5 / reps.size), 1.0 - 0.5 / reps.size)
    z0 = unit.inv_cdf(frac)
    q_lo, q_hi = unit.cdf(2.0 * z0 + z_a), unit.cdf(2.0 * z0 - z_a)
    lo, hi = (float(v) for v in np.quantile(reps, [q_lo, q_hi]))
    return lo, hi, float(z0)


def bootstrap(
    table: pd.DataFrame,
    statistic: Callable[[pd.DataFrame], float | Mapping[str, float]],
    *,
    by: str | list[str],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Bias-corrected percentile bootstrap over runs, resampling runs within each setting.

    Each replicate draws, for every group of ``by`` (a setting: one x value, or one
    combination of hyperparameters), as many rows as the group has, with replacement, from
    that group, and evaluates ``statistic`` on the concatenation; so the number of runs per
    setting stays fixed and only the seeds vary. Random draws come from
    ``numpy.random.default_rng(seed)``.

    ``statistic`` returns a float or a mapping of named floats. Returns, per name (``"value"``
    for a float statistic), a dict with ``value`` (the statistic on ``table``), ``ci_low``,
    ``ci_high``, ``z0``, ``n_boot`` (finite replicates) and ``n_failed`` (replicates that gave
    NaN or raised ValueError).

    The interval spans the bias-corrected percentile interval of the finite replicates
    (:func:`bias_corrected_interval`, ``z0`` its bias correction), the plain percentile
    interval and the value itself: it always contains its own point estimate, and it is never
    narrower than either interval. Both guards matter with a few runs per setting: in a case
    like Figure 4's at wd 1e-4 (rho -0.972 over 4 learning rates x 3 seeds, one swapped pair;
    tests/science/test_stats.py) 99.8% of the replicates fall below the value (resamples that drop
    one of the pair order perfectly), the percentile interval [-0.989, -0.973] excludes it, and
    BC pushes both ends to the top replicate; the interval reported is [-0.989, -0.972]. With
    2-3 runs per setting the bootstrap sees only a handful of distinct resamples, and its
    interval is narrower than the truth; the claims treat it as such.
    """

    def evaluate(df: pd.DataFrame) -> dict[str, float]:
        try:
            out = statistic(df)
        except ValueError:
            return {}
        if isinstance(out, Mapping):
            return {k: float(v) for k, v in out.items()}
        return {"value": float(out)}

    full = evaluate(table)
    keys = list(full) or ["value"]
    groups = [np.asarray(idx) for idx in table.groupby(by, sort=True).indices.values()]
    positions = np.arange(len(table))
    rng = np.random.default_rng(seed)
    reps: dict[str, list[float]] = {k: [] for k in keys}
    failed = dict.fromkeys(keys, 0)
    for _ in range(int(n_boot)):
        idx = np.concatenate([rng.choice(positions[g], size=g.size, replace=True) for g in groups])
        res = evaluate(table.iloc[idx])
        for k in keys:
            v = res.get(k, math.nan)
            if math.isfinite(v):
                reps[k].append(v)
            else:
                failed[k] += 1
    out: dict[str, dict[str, float]] = {}
    for k in keys:
        arr = np.asarray(reps[k])
        value = full.get(k, math.nan)
        lo, hi, z0 = bias_corrected_interval(arr, value, level)
        if arr.size:
            p_lo, p_hi = np.quantile(arr, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
            point = [value] if math.isfinite(value) else []
            lo, hi = min(lo, float(p_lo), *point), max(hi, float(p_hi), *point)
        out[k] = {
            "value": value,
            "ci_low": lo,
            "ci_high": hi,
            "z0": z0,
            "n_boot": int(arr.size),
            "n_failed": int(failed[k]),
        }
    return out
