"""Every fit and statistic behind a figure or a claim, computed once (SPEC sections 4-7).

Figures (:mod:`grokking_llc.figures`) draw what these functions return and the scorecard
(:mod:`grokking_llc.science.claims`) turns them into verdicts; neither fits anything itself.

Building blocks:

* :func:`r_squared` -- the one coefficient of determination, ``1 - SSE/SST``;
* :func:`first_step_reaching` -- the one "first checkpoint at or above a threshold";
* :func:`fit_linear` (free least squares), :func:`fit_proportional` (through the origin),
  :func:`fit_exponential_decay` (``a exp(-b x) + c``; reports when it did not converge or found
  absurd parameters instead of returning numbers to draw);
* :func:`spearman` (rank correlation, average ranks for ties) with :func:`spearman_ci`
  (Fisher z), and :func:`bootstrap` (bias-corrected percentile intervals,
  :func:`bias_corrected_interval`, from resampling runs within each setting, explicit seed);
* :func:`group_stats` -- the per-setting mean, standard deviation (ddof=1) and count that
  every figure draws.

Validity (issue 10): a fit that uses the LLC takes only estimates whose ``valid`` flag is true
(:func:`llc_validity`, :func:`run_llc`) and reports how many there were (``n_valid``). A table
without the flag is treated as holding no validated estimate, and the returned notes say so.

The figure-level fits (:func:`fit_llc_vs_p`, :func:`fit_llc_vs_width`, :func:`fit_lr_vs_gsm`,
:func:`fit_gsm_vs_llc`, :func:`lr_vs_max_llc`, :func:`bias_reduced`,
:func:`sampler_sensitivity`, :func:`calibration_points`, :func:`track_statistics`,
:func:`regime_boundary`) return plain dicts; each lists its keys in its docstring.

GSM (SPEC section 6): runs that never generalise have no grokking severity (the GSM's
indicator is 0); they are counted apart (``n_never``), never averaged in as GSM 0. Whether a run
ended generalised is the GSM's indicator -- both final accuracies above the threshold, strictly
-- which callers pass as ``gen_threshold`` (``grokking_llc.science.gsm.GSM_THRESHOLD``); this module
does not import :mod:`grokking_llc.science.gsm`, which imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from grokking_llc.science import theory

# Fewest distinct x values for a fit to be attempted (a line has 2 parameters, a decay with an
# offset 3). Figures skip a fit, with a note, below these.
MIN_DISTINCT_LINEAR = 2
MIN_DISTINCT_EXP = 3

# fit_exponential_decay's search range for the scaled rate k = b * (max x - min x).
EXP_RATE_RANGE = (1e-4, 1e3)
# Scaled rates k = b (max x - min x) at or below this give a curve within k/8 (1.25%) of a
# straight line, relative to its drop over the data: no exponential curvature is resolved.
EXP_MIN_CURVATURE = 0.1
# A fit that has decayed to below this fraction of its amplitude at the second distinct x fell
# within the first x spacing: the rate is not resolved by the data.
EXP_UNRESOLVED_FRACTION = 0.01
# Parameters larger than this many times the data's own scale are called absurd.
EXP_ABSURD_FACTOR = 1e3

# Exponential-fit status values (fit_exponential_decay's "status").
FIT_OK = "ok"
FIT_NO_CURVATURE = "no_curvature"
FIT_TOO_FAST = "too_fast"
FIT_ABSURD = "absurd"
FIT_SKIPPED = "skipped"

# Spearman's Fisher-z standard error, sqrt(1.06 / (n - 3)) (Fieller, Hartley and Pearson 1957).
SPEARMAN_FISHER_VAR = 1.06

# SPEC section 7 item 9: Tian (2025)'s critical ratio and the paper's baseline, in n / (p ln p).
TIAN_CRITICAL_RATIO = 2.75
PAPER_BASELINE_RATIO = 5.3

# Hyperparameters that should be constant within a figure's selection (beyond its x variable).
HYPERPARAMETERS = (
    "model",
    "loss",
    "p",
    "width",
    "train_frac",
    "lr",
    "weight_decay",
    "batch_size",
    "max_steps",
)

NOT_VALIDATED = "no validity column: every estimate treated as not validated"

# An estimate's status (SPEC section 10; issue 19's ``status`` column, derived from ``valid``
# and ``invalid_reason`` where a table lacks it: :func:`estimate_status`).
STATUS_VALID = "valid"
STATUS_INVALID = "invalid"
STATUS_NOT_A_MINIMUM = "not_a_minimum"
STATUSES = (STATUS_VALID, STATUS_INVALID, STATUS_NOT_A_MINIMUM)

# Which LLC estimates enter means, fits and statistics: the valid ones (every validated
# sampler), or all of them, as the paper does (a sampler running the paper's protocol, SPEC
# section 4; figures and the scorecard's as-published verdicts).
USE_VALID = "valid"
USE_ALL = "all"
USES = (USE_VALID, USE_ALL)


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


def _xy(x: ArrayLike, y: ArrayLike, n_params: int) -> tuple[np.ndarray, np.ndarray]:
    xa = as_1d(x, "x")
    ya = as_1d(y, "y")
    same_length(x=xa, y=ya)
    n_distinct = np.unique(xa).size
    if n_distinct < n_params:
        raise ValueError(
            f"need at least {n_params} distinct x values to fit {n_params} parameters, "
            f"got {n_distinct} (from {xa.size} points)"
        )
    return xa, ya


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


# --------------------------------------------------------------------------- fits


def fit_linear(x: ArrayLike, y: ArrayLike) -> dict[str, float | int]:
    """Ordinary least-squares line ``y = slope * x + intercept`` (SPEC sections 6 and 7).

    Returns ``slope``, ``intercept``, ``r2`` (:func:`r_squared`) and ``n``.

    Raises:
        ValueError: unequal lengths, NaN/inf, or fewer than 2 distinct x values.
    """
    xa, ya = _xy(x, y, 2)
    xm, ym = xa.mean(), ya.mean()
    slope = float(np.sum((xa - xm) * (ya - ym)) / np.sum((xa - xm) ** 2))
    intercept = float(ym - slope * xm)
    return {
        "slope": slope,
        "intercept": intercept,
        "r2": r_squared(ya, slope * xa + intercept),
        "n": int(xa.size),
    }


def fit_proportional(x: ArrayLike, y: ArrayLike) -> dict[str, float | int]:
    """Least squares through the origin, ``y = c x``: ``c = sum(x y) / sum(x^2)``.

    Returns ``c``, ``r2`` (centred, :func:`r_squared` of ``c x``; negative when the line through
    the origin misses the mean) and ``n``.

    Raises:
        ValueError: unequal lengths, NaN/inf, or every x equal to 0.
    """
    xa = as_1d(x, "x")
    ya = as_1d(y, "y")
    same_length(x=xa, y=ya)
    den = float(np.sum(xa * xa))
    if den == 0.0:
        raise ValueError("every x is 0: no line through the origin")
    c = float(np.sum(xa * ya)) / den
    return {"c": c, "r2": r_squared(ya, c * xa), "n": int(xa.size)}


def _exp_profile(k: float, u: np.ndarray, y: np.ndarray, offset: bool) -> tuple[float, np.ndarray]:
    """For a fixed scaled rate ``k``: SSE and linear coefficients of ``y ~ A e^{-k u} (+ c)``."""
    basis = np.exp(-k * u)
    design = np.column_stack([basis, np.ones_like(u)]) if offset else basis[:, None]
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    sse = float(np.sum((y - design @ coef) ** 2))
    return sse, coef


def fit_exponential_decay(x: ArrayLike, y: ArrayLike, *, offset: bool = True) -> dict[str, Any]:
    """Least-squares fit of ``y = a * exp(-b * x) + c`` with ``b > 0`` (SPEC section 6, Fig. 4).

    The paper fits GSM against learning rate with "an exponential decay". The offset form is the
    default: GSM need not decay to 0 at large learning rates (SPEC section 9), and forcing
    ``c = 0`` would bend ``b`` to absorb that floor. ``offset=False`` fits ``a exp(-b x)``
    (``c`` reported as 0).

    Method (variable projection): for a fixed ``b`` the model is linear in ``a`` and ``c``; only
    ``SSE(b)`` is minimised, over a log grid of the scaled rate ``k = b (max x - min x)`` in
    :data:`EXP_RATE_RANGE` and then by golden-section search between the best grid point's
    neighbours. numpy only; deterministic.

    Returns a dict with ``a``, ``b``, ``c``, ``r2``, ``sse``, ``n``, ``x_min``,
    ``a_at_x_min = a exp(-b x_min)`` (finite even where ``a`` overflows), ``status`` and
    ``usable``. ``status`` says whether the numbers mean anything:

    * ``"ok"``: an interior optimum with parameters on the data's scale;
    * ``"no_curvature"``: the scaled rate ``k`` is at most :data:`EXP_MIN_CURVATURE`, so the
      fitted curve is within ``k/8`` of a straight line (relative to its drop): the data lie on
      a line or are flat, ``a`` and ``c`` trade off without bound;
    * ``"too_fast"``: the fit has fallen below :data:`EXP_UNRESOLVED_FRACTION` of its amplitude
      by the second distinct x -- the fall happens within the first x spacing, so ``b`` and
      ``a`` are not determined (issue 11's ``a = -1.7e14``);
    * ``"absurd"``: ``a`` or ``c`` is not finite or exceeds :data:`EXP_ABSURD_FACTOR` times the
      data's scale ``max(max |y|, max y - min y)``.

    ``usable`` is ``status == "ok"``: only then may a figure draw the curve or a text quote ``b``.

    Raises:
        ValueError: unequal lengths, NaN/inf, or fewer distinct x values than parameters (3 with
            the offset, 2 without).
    """
    n_params = 3 if offset else 2
    xa, ya = _xy(x, y, n_params)
    x0 = float(xa.min())
    span = float(xa.max() - x0)
    u = (xa - x0) / span  # in [0, 1]: the rate search is scale-free

    def sse_of(log_k: float) -> float:
        return _exp_profile(math.exp(log_k), u, ya, offset)[0]

    grid = np.linspace(math.log(EXP_RATE_RANGE[0]), math.log(EXP_RATE_RANGE[1]), 281)
    sses = np.array([sse_of(g) for g in grid])
    i = int(np.argmin(sses))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    c1, c2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    f1, f2 = sse_of(c1), sse_of(c2)
    for _ in range(200):
        if hi - lo < 1e-12:
            break
        if f1 <= f2:
            hi, c2, f2 = c2, c1, f1
            c1 = hi - ratio * (hi - lo)
            f1 = sse_of(c1)
        else:
            lo, c1, f1 = c1, c2, f2
            c2 = lo + ratio * (hi - lo)
            f2 = sse_of(c2)
    log_k = 0.5 * (lo + hi)
    if sses[i] < sse_of(log_k):  # the grid point itself was better (flat or boundary case)
        log_k = float(grid[i])
    k = math.exp(log_k)
    sse, coef = _exp_profile(k, u, ya, offset)
    # Shifted form y = A exp(-b (x - x0)) + c (A = a exp(-b x0)) stays finite whatever x0 is.
    b = k / span
    amp = float(coef[0])
    c = float(coef[1]) if offset else 0.0
    log_scale = b * x0  # a = A exp(b x0); inf (with A's sign) if that overflows a float
    a = amp * math.exp(log_scale) if log_scale < 700.0 else math.copysign(math.inf, amp)
    fitted = amp * np.exp(-b * (xa - x0)) + c

    scale = max(float(np.max(np.abs(ya))), float(np.ptp(ya)))
    limit = EXP_ABSURD_FACTOR * scale if scale > 0 else math.inf
    first_gap = float(np.unique(u)[1])  # the first x spacing, in units of the span
    if k <= EXP_MIN_CURVATURE:
        status = FIT_NO_CURVATURE
    elif math.exp(-k * first_gap) < EXP_UNRESOLVED_FRACTION:
        status = FIT_TOO_FAST
    elif not (math.isfinite(a) and math.isfinite(c)) or abs(a) > limit or abs(c) > limit:
        status = FIT_ABSURD
    else:
        status = FIT_OK
    return {
        "a": a,
        "b": b,
        "c": c,
        "r2": r_squared(ya, fitted),
        "sse": float(sse),
        "n": int(xa.size),
        "x_min": x0,
        "a_at_x_min": amp,
        "status": status,
        "usable": status == FIT_OK,
    }


def exponential_curve(fit: Mapping[str, Any], x: ArrayLike) -> np.ndarray:
    """``a exp(-b x) + c`` of a :func:`fit_exponential_decay` result, evaluated stably."""
    xa = np.asarray(x, dtype=float)
    return fit["a_at_x_min"] * np.exp(-fit["b"] * (xa - fit["x_min"])) + fit["c"]


def describe_exponential(fit: Mapping[str, Any]) -> str:
    """One line for a figure's note or a claim's reason: the parameters, or why there are none."""
    status = fit.get("status")
    if status == FIT_SKIPPED:
        return f"exponential fit skipped: {fit.get('skipped')}"
    params = f"a = {fmt(fit['a'])}, b = {fmt(fit['b'])}, c = {fmt(fit['c'])}"
    if status == FIT_OK:
        return f"{params}, R² = {fmt(fit['r2'], 3)}"
    why = {
        FIT_NO_CURVATURE: "no exponential curvature resolved (within 1.25% of a straight line)",
        FIT_TOO_FAST: "the fall happens within the first x spacing (rate not resolved)",
        FIT_ABSURD: "absurd parameters",
    }.get(status, str(status))
    return f"exponential fit not usable: {why} ({params}); curve not drawn"


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
    tests/test_analysis.py) 99.8% of the replicates fall below the value (resamples that drop
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


# --------------------------------------------------------------------------- tables and validity


def fmt(x: Any, digits: int = 4) -> str:
    """A number as ``{:.{digits}g}`` (nan / inf spelled out); other values as ``str``."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def select(
    table: pd.DataFrame, *, study: str | None = None, sampler: str | None = None
) -> pd.DataFrame:
    """Rows of a summary table in ``study`` (its ``studies`` list holds it) and for the named
    ``sampler`` (its ``sampler`` column equals it); None selects everything on that axis."""
    out = table
    if study is not None and "studies" in out:
        out = out[out["studies"].map(lambda s: study in list(s))]
    if sampler is not None and "sampler" in out:
        out = out[out["sampler"] == sampler]
    return out.reset_index(drop=True)


def finite_rows(df: pd.DataFrame, cols: Iterable[str]) -> tuple[pd.DataFrame, int]:
    """Rows whose ``cols`` are all finite numbers, and how many rows were dropped."""
    mask = np.ones(len(df), dtype=bool)
    for c in cols:
        if c not in df:
            mask[:] = False
            break
        vals = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
        mask &= np.isfinite(vals)
    return df.loc[mask].reset_index(drop=True), int((~mask).sum())


def llc_validity(llc: pd.DataFrame) -> tuple[np.ndarray, str | None]:
    """The ``valid`` flag of each LLC estimate (rows of an LLC table) as a bool array, and a
    note when the table has no such column (then no estimate counts as valid)."""
    if "valid" not in llc:
        return np.zeros(len(llc), dtype=bool), NOT_VALIDATED
    return llc["valid"].fillna(False).astype(bool).to_numpy(), None


def estimate_status(
    table: pd.DataFrame,
    *,
    status: str = "status",
    valid: str = "valid",
    reason: str | None = "invalid_reason",
) -> np.ndarray:
    """Each estimate's status (SPEC section 10): :data:`STATUS_VALID`, :data:`STATUS_INVALID`
    (failed a validity check) or :data:`STATUS_NOT_A_MINIMUM` (w* is not a minimum: the LLC is
    not defined there, apart from sampler failures). The one place the fallback lives.

    The ``status`` column when the table has it (a row where it is missing falls back); else
    ``not_a_minimum`` where ``reason`` (``invalid_reason``) starts with it, ``valid`` where the
    ``valid`` flag is true, ``invalid`` otherwise (a table without the flag: every estimate
    ``invalid``, as :func:`llc_validity` treats it). An LLC table reads ``status`` / ``valid``
    / ``invalid_reason``; a runs table ``final_llc_status`` / ``final_llc_valid`` (or ``max_``).
    """
    n = len(table)
    flag = (
        table[valid].fillna(False).astype(bool).to_numpy()
        if valid in table
        else np.zeros(n, dtype=bool)
    )
    out = np.where(flag, STATUS_VALID, STATUS_INVALID).astype(object)
    if reason is not None and reason in table:
        why = table[reason].to_numpy(dtype=object)
        nam = np.array(
            [isinstance(r, str) and r.startswith(STATUS_NOT_A_MINIMUM) for r in why], dtype=bool
        )
        out[nam & ~flag] = STATUS_NOT_A_MINIMUM
    if status in table:
        given = table[status].to_numpy(dtype=object)
        known = np.array([g in STATUSES for g in given], dtype=bool)
        out[known] = given[known]
    return out


def status_counts(statuses: ArrayLike) -> dict[str, int]:
    """``{status: count}`` over :data:`STATUSES` (zeros included)."""
    arr = np.asarray(statuses, dtype=object)
    return {s: int(np.sum(arr == s)) for s in STATUSES}


def status_note(
    statuses: ArrayLike, what: str = "estimates", *, use: str = USE_VALID, fitted: bool = True
) -> str | None:
    """The sentence an LLC figure prints about estimates that are not valid, by kind.

    ``use="valid"`` (validated samplers): they are left out (of means and fits when
    ``fitted``); invalid ones drawn hollow, those at a checkpoint that is not a minimum as a
    grey x. ``use="all"`` (the paper's protocol): every estimate is drawn and fitted as the
    paper does, and the sentence counts how many fail the validity checks. None when every
    estimate is valid."""
    c = status_counts(statuses)
    total = sum(c.values())
    bad = total - c[STATUS_VALID]
    if use == USE_ALL:
        kinds = f"{c[STATUS_INVALID]} failed a check, {c[STATUS_NOT_A_MINIMUM]} not a minimum"
        return (
            f"paper's protocol (SPEC section 4), drawn and fitted as the paper does: every one "
            f"of {total} {what} used; {bad} of {total} fail the validity checks ({kinds})"
        )
    if not bad:
        return None
    if not c[STATUS_NOT_A_MINIMUM]:
        return invalid_note(bad, total, what, fitted=fitted)
    tail = ", left out of means and fits" if fitted else ""
    return (
        f"{bad} of {total} {what} not valid{tail}: {c[STATUS_INVALID]} failed a check (hollow), "
        f"{c[STATUS_NOT_A_MINIMUM]} at a checkpoint that is not a minimum (grey x)"
    )


def check_use(use: str) -> str:
    """``use`` if it is :data:`USE_VALID` or :data:`USE_ALL`; ValueError naming it otherwise."""
    if use not in USES:
        raise ValueError(f"use must be one of {USES}, got {use!r}")
    return use


def fmt_step(step: Any) -> str:
    """A training step for a note or a reason: the number, or "never" for an event that did
    not happen (NaN)."""
    try:
        v = float(step)
    except (TypeError, ValueError):
        return str(step)
    return "never" if math.isnan(v) else fmt(v, 8)


# Runs-table LLC columns: value column, validity column, and the pre-validity name of the value.
_RUN_LLC = {
    "final": ("final_llc", "final_llc_valid", "llc_final"),
    "max": ("max_llc", "max_llc_valid", "llc_max"),
}


def run_llc(
    runs: pd.DataFrame, which: str = "final", use: str = USE_VALID
) -> tuple[pd.DataFrame, str | None]:
    """A copy of ``runs`` with columns ``llc`` (the run's ``final`` or ``max`` LLC),
    ``llc_valid`` (bool), ``llc_status`` (:func:`estimate_status` of ``<which>_llc_status`` /
    ``<which>_llc_valid`` / ``<which>_llc_invalid_reason``) and ``llc_used`` (bool: whether
    the estimate enters means and fits -- the valid ones under ``use="valid"``, every one under
    ``use="all"``, the paper's protocol), and a note when the validity column is missing.

    Columns read: ``final_llc`` / ``final_llc_valid`` or ``max_llc`` / ``max_llc_valid``
    (``max_llc_all``, the maximum over every estimate, under ``use="all"``). An old
    table with only ``llc_final`` / ``llc_max`` (or without the validity column) is read with
    every estimate marked not valid, and the note says so.
    """
    check_use(use)
    value, flag, old = _RUN_LLC[which]
    df = runs.copy()
    note = None
    if which == "max" and use == USE_ALL and "max_llc_all" in df:
        # the paper's maximum is over every estimate of the curve, valid or not
        df["llc"] = pd.to_numeric(df["max_llc_all"], errors="coerce")
        value = None
    if value is None:
        pass
    elif value in df:
        df["llc"] = pd.to_numeric(df[value], errors="coerce")
    elif old in df:
        df["llc"] = pd.to_numeric(df[old], errors="coerce")
    else:
        df["llc"] = np.nan
    if flag in df:
        df["llc_valid"] = df[flag].fillna(False).astype(bool)
    else:
        df["llc_valid"] = False
        note = NOT_VALIDATED
    stem = _RUN_LLC[which][0].removesuffix("_llc")
    df["llc_status"] = estimate_status(
        df, status=f"{stem}_llc_status", valid=flag, reason=f"{stem}_llc_invalid_reason"
    )
    df["llc_used"] = df["llc_valid"].to_numpy(dtype=bool) | (use == USE_ALL)
    return df, note


def generalised(table: pd.DataFrame, gen_threshold: float) -> np.ndarray:
    """Whether each run ended generalised: both final accuracies strictly above
    ``gen_threshold`` (the GSM's indicator, SPEC section 6; pass ``gsm.GSM_THRESHOLD``).

    Reads ``final_train_acc`` and ``final_val_acc``; a run missing either counts as not
    generalised."""
    if "final_train_acc" not in table or "final_val_acc" not in table:
        return np.zeros(len(table), dtype=bool)
    tr = pd.to_numeric(table["final_train_acc"], errors="coerce").to_numpy(dtype=float)
    va = pd.to_numeric(table["final_val_acc"], errors="coerce").to_numpy(dtype=float)
    return (tr > gen_threshold) & (va > gen_threshold)


def scaled_data_size(n_train: ArrayLike, p: ArrayLike) -> np.ndarray:
    """Figure 14's x axis (SPEC section 7 item 9): ``n_train / (p ln p)`` (natural log)."""
    n = np.asarray(n_train, dtype=float)
    pa = np.asarray(p, dtype=float)
    return n / (pa * np.log(pa))


def _mode(values: pd.Series) -> tuple[Any, list[Any]]:
    """Most common value (ties: the smallest) and the sorted distinct values."""
    counts = values.value_counts()
    top = counts[counts == counts.max()].index
    return sorted(top.tolist())[0], sorted(counts.index.tolist())


def varying_note(df: pd.DataFrame, exclude: Iterable[str]) -> str | None:
    """A note naming the hyperparameters (other than ``exclude``) that vary within ``df``."""
    ex = set(exclude)
    varying = []
    for c in HYPERPARAMETERS:
        if c in ex or c not in df or df.empty:
            continue
        vals = df[c].dropna().unique()
        if len(vals) > 1:
            shown = ", ".join(fmt(v, 3) for v in sorted(vals, key=str)[:4])
            more = ", ..." if len(vals) > 4 else ""
            varying.append(f"{c} in {{{shown}{more}}}")
    return ("mixed: " + "; ".join(varying)) if varying else None


def invalid_note(
    n_invalid: int, n_total: int, what: str = "estimates", *, fitted: bool = True
) -> str | None:
    """The sentence every LLC figure prints about estimates that failed the validity checks
    (``fitted``: the figure also has means or fits they are left out of)."""
    if not n_invalid:
        return None
    tail = ", left out of means and fits" if fitted else ""
    return f"{n_invalid} of {n_total} {what} not valid: drawn hollow{tail}"


# --------------------------------------------------------------------------- theory beside data


@lru_cache(maxsize=4096)
def _bound_cached(p: int, K: int, train_frac: float, data_seed: int) -> float:
    return float(theory.data_restricted_bound(p, K, train_frac=train_frac, seed=data_seed))


def bound_per_run(df: pd.DataFrame) -> tuple[np.ndarray | None, str | None]:
    """:func:`theory.data_restricted_bound` for each run (graph counting on its split, cheap);
    None and the reason when the table lacks the columns or a split cannot be drawn."""
    need = ("p", "width", "train_frac", "data_seed")
    if any(c not in df for c in need):
        return None, "data-restricted bound skipped: no train_frac / data_seed columns"
    try:
        vals = [
            _bound_cached(int(r.p), int(r.width), float(r.train_frac), int(r.data_seed))
            for r in df[list(need)].itertuples(index=False)
        ]
    except (ValueError, TypeError) as exc:
        return None, f"data-restricted bound skipped ({exc})"
    return np.asarray(vals, dtype=float), None


def theory_quadratic(p: Iterable[Any], K: Iterable[Any]) -> np.ndarray:
    """:func:`theory.llc_quadratic` (SPEC section 5, Thm 4.1/4.2) element-wise."""
    return np.asarray(
        [theory.llc_quadratic(int(pp), int(kk)) for pp, kk in zip(p, K, strict=True)], dtype=float
    )


# --------------------------------------------------------------------------- Figures 1 and 2


def _select_fixed(
    runs: pd.DataFrame, fixed: str, vary: str, use: str = USE_VALID
) -> tuple[pd.DataFrame, dict[str, Any], list[str | None]]:
    """Runs with a finite final LLC at the most common value of ``fixed``."""
    df, note = run_llc(runs, "final", use)
    notes: list[str | None] = [note]
    df, dropped = finite_rows(df, ["llc", vary, fixed])
    info: dict[str, Any] = {"n_dropped_nan": dropped}
    if dropped:
        notes.append(f"dropped {dropped} run(s) with NaN final LLC / {vary} / {fixed}")
    if df.empty:
        info[fixed] = math.nan
        return df, info, notes
    value, distinct = _mode(df[fixed])
    info[fixed] = value
    if len(distinct) > 1:
        notes.append(
            f"{len(distinct)} values of {fixed} present ({', '.join(fmt(v) for v in distinct)}); "
            f"using the most common, {fixed} = {fmt(value)}"
        )
    df = df[df[fixed] == value].reset_index(drop=True)
    notes.append(varying_note(df, exclude=(vary, fixed)))
    return df, info, notes


def _theory_fit(y: np.ndarray, t: np.ndarray, x: np.ndarray, prefix: str, out: dict) -> None:
    """Scale ``t`` to ``y`` by least squares through the origin and record the scale, its R^2
    and the slope (against ``x``) of the scaled curve over the distinct x values."""
    try:
        prop = fit_proportional(t, y)
    except ValueError:
        return
    c = prop["c"]
    out[f"{prefix}scale"], out[f"{prefix}r2"] = c, prop["r2"]
    per_x = pd.Series(t).groupby(np.asarray(x, dtype=float)).mean()
    if per_x.size >= MIN_DISTINCT_LINEAR:
        out[f"{prefix}slope"] = fit_linear(per_x.index.to_numpy(), per_x.to_numpy())["slope"]
        out[f"{prefix}slope_scaled"] = c * out[f"{prefix}slope"]


def _fit_llc_scaling(runs: pd.DataFrame, x: str, fixed: str, use: str) -> dict[str, Any]:
    df, info, notes = _select_fixed(runs, fixed=fixed, vary=x, use=use)
    valid = df["llc_valid"].to_numpy(dtype=bool) if len(df) else np.zeros(0, dtype=bool)
    mask = df["llc_used"].to_numpy(dtype=bool) if len(df) else np.zeros(0, dtype=bool)
    used = df[mask].reset_index(drop=True)
    out: dict[str, Any] = {
        fixed: info[fixed],
        "x": x,
        "use": use,
        "points": df,
        "means": group_stats(used, x, "llc"),
        "n_runs": len(df),
        "n_valid": int(valid.sum()),
        "n_used": len(used),
        f"n_{x}": int(used[x].nunique()) if len(used) else 0,
        "n_dropped_nan": info["n_dropped_nan"],
        "slope": math.nan,
        "intercept": math.nan,
        "r2": math.nan,
        "fit_skipped": None,
    }
    for prefix in ("theory_", "bound_"):
        out.update({prefix + k: math.nan for k in ("scale", "r2", "slope", "slope_scaled")})
    statuses = df["llc_status"] if len(df) else []
    notes.append(status_note(statuses, "final LLC estimates", use=use) if len(df) else None)
    if used.empty:
        out["fit_skipped"] = (
            "no runs with a finite final LLC" if df.empty else "no valid final LLC estimate"
        )
        out["notes"] = [n for n in [*notes, out["fit_skipped"]] if n]
        return out
    xv = used[x].to_numpy(dtype=float)
    yv = used["llc"].to_numpy(dtype=float)
    n_distinct = np.unique(xv).size
    if n_distinct >= MIN_DISTINCT_LINEAR:
        out.update({k: v for k, v in fit_linear(xv, yv).items() if k != "n"})
    else:
        out["fit_skipped"] = (
            f"fits skipped: {n_distinct} distinct {x} value(s) with a "
            f"{'valid ' if use == USE_VALID else ''}estimate, need {MIN_DISTINCT_LINEAR}"
        )
        notes.append(out["fit_skipped"])
    _theory_fit(yv, theory_quadratic(used["p"], used["width"]), xv, "theory_", out)
    bound, why = bound_per_run(used)
    if bound is None:
        notes.append(why)
    else:
        _theory_fit(yv, bound, xv, "bound_", out)
        b = pd.DataFrame({x: xv, "b": bound}).groupby(x, sort=True)["b"].mean()
        out["bound_points"] = pd.DataFrame({x: b.index.to_numpy(), "bound": b.to_numpy()})
    out["notes"] = [n for n in notes if n]
    return out


def fit_llc_vs_p(runs: pd.DataFrame, use: str = USE_VALID) -> dict[str, Any]:
    """Numbers behind Figure 1 (SPEC section 7 item 1): final LLC against p at one width.

    Selection: runs with a finite final LLC, p and width, at the most common width; of those,
    only valid estimates (``final_llc_valid``) enter the means and fits -- or, with
    ``use="all"`` (the paper's protocol, SPEC section 4), every estimate, as the paper draws
    them. Returns: ``width``; ``use``; ``points`` (every selected run, columns ``llc``,
    ``llc_valid``, ``llc_status`` and ``llc_used`` added, :func:`run_llc`); ``means``
    (:func:`group_stats` of the used runs per p); ``n_runs``, ``n_valid``, ``n_used``, ``n_p``
    (distinct p with a used estimate), ``n_dropped_nan``; the least-squares line on the used
    per-run points (``slope``, ``intercept``, ``r2``; NaN with fewer than 2 distinct p,
    ``fit_skipped`` then says why); the theory's shape ``theory.llc_quadratic(p, K)`` scaled to
    the data through the origin (``theory_scale``, ``theory_r2``, ``theory_slope`` -- the
    unscaled theory's slope in p over the observed p, ``3K/2`` in the under-parametrised regime
    -- and ``theory_slope_scaled``); the same for ``theory.data_restricted_bound`` under
    ``bound_*`` with ``bound_points`` (bound per p, seed-averaged); ``notes``.
    """
    return _fit_llc_scaling(runs, x="p", fixed="width", use=check_use(use))


def fit_llc_vs_width(runs: pd.DataFrame, use: str = USE_VALID) -> dict[str, Any]:
    """Numbers behind Figure 2 (SPEC section 7 item 2): final LLC against width K at one p.

    As :func:`fit_llc_vs_p` with ``x = "width"`` at the most common ``p`` (``n_width``), plus the
    proportional fit through the origin on the used per-run points, ``prop_c`` and ``prop_r2``
    (:func:`fit_proportional`; NaN when the free fit is skipped).
    """
    out = _fit_llc_scaling(runs, x="width", fixed="p", use=check_use(use))
    out["prop_c"], out["prop_r2"] = math.nan, math.nan
    if out["fit_skipped"] is None:
        pts = out["points"][out["points"]["llc_used"]]
        prop = fit_proportional(pts["width"].to_numpy(float), pts["llc"].to_numpy(float))
        out["prop_c"], out["prop_r2"] = prop["c"], prop["r2"]
    return out


def theory_curve(fit: Mapping[str, Any], grid: ArrayLike) -> np.ndarray:
    """The scaled closed form ``theory_scale * llc_quadratic`` of a Figure 1 / 2 fit on a grid
    of its x variable (p for Figure 1, width for Figure 2)."""
    g = np.asarray(grid)
    if fit["x"] == "p":
        t = theory_quadratic(g, np.full(g.shape, int(fit["width"])))
    else:
        t = theory_quadratic(np.full(g.shape, int(fit["p"])), g)
    return fit["theory_scale"] * t


# --------------------------------------------------------------------------- Figure 4


def _exp_fit_or_skip(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    n_distinct = np.unique(x).size
    nan_fit = {
        "a": math.nan,
        "b": math.nan,
        "c": math.nan,
        "r2": math.nan,
        "n": int(x.size),
        "status": FIT_SKIPPED,
        "usable": False,
    }
    if n_distinct < MIN_DISTINCT_EXP:
        why = f"{n_distinct} distinct lr value(s) with a generalised run, need {MIN_DISTINCT_EXP}"
        return {**nan_fit, "skipped": why}
    return {**fit_exponential_decay(x, y), "skipped": None}


def gsm_rows(training: pd.DataFrame, gen_threshold: float) -> tuple[pd.DataFrame, int]:
    """Runs with finite lr > 0, GSM and weight decay, a bool column ``generalised``
    (:func:`generalised`), and the number of rows dropped."""
    df, dropped = finite_rows(training, ["lr", "gsm", "weight_decay"])
    keep = df["lr"] > 0
    df = df.loc[keep].reset_index(drop=True)
    df["generalised"] = generalised(df, gen_threshold)
    return df, dropped + int((~keep).sum())


def fit_lr_vs_gsm(training: pd.DataFrame, gen_threshold: float) -> dict[float, dict[str, Any]]:
    """Numbers behind Figure 4 (SPEC section 7 item 4): per weight decay, GSM against lr.

    Only runs that ended generalised carry a GSM; the others (GSM indicator 0) are counted per
    learning rate in ``never`` and left out of the means and the fit. Keys: weight decays
    (floats, ascending). Each value holds :func:`fit_exponential_decay`'s dict on the
    generalised per-run points (``status`` ``"skipped"`` and ``skipped`` the reason with fewer
    than 3 distinct learning rates) plus ``points`` (the runs, with ``generalised``),
    ``means`` (:func:`group_stats` of the generalised runs' GSM per lr), ``never`` (a DataFrame
    lr, n_never, n_runs), ``n_runs``, ``n_generalised``, ``n_never`` and ``n_lr``.
    """
    df, _ = gsm_rows(training, gen_threshold)
    out: dict[float, dict[str, Any]] = {}
    for wd, sub in df.groupby("weight_decay", sort=True):
        sub = sub.reset_index(drop=True)
        gen = sub[sub["generalised"]]
        x = gen["lr"].to_numpy(dtype=float)
        fit = _exp_fit_or_skip(x, gen["gsm"].to_numpy(dtype=float))
        never = sub.groupby("lr", sort=True)["generalised"].agg(
            n_never=lambda s: int((~s).sum()), n_runs="size"
        )
        fit.update(
            points=sub,
            means=group_stats(gen, "lr", "gsm"),
            never=never.reset_index(),
            n_runs=len(sub),
            n_generalised=len(gen),
            n_never=len(sub) - len(gen),
            n_lr=int(np.unique(x).size),
        )
        out[float(wd)] = fit
    return out


# --------------------------------------------------------------------------- H.3 and GSM vs LLC


def lr_vs_max_llc(runs: pd.DataFrame, use: str = USE_VALID) -> dict[str, Any]:
    """Numbers behind the H.3 figure (SPEC section 7 item 6): the maximum of each run's LLC
    curve against learning rate, per weight decay.

    Only valid maxima enter the means and the rank correlation, or every one with
    ``use="all"`` (the paper's protocol). Returns ``use``, ``points`` (runs with finite lr > 0,
    max LLC and weight decay; ``llc``, ``llc_valid``, ``llc_status``, ``llc_used`` added),
    ``per_wd`` (weight decay -> dict with ``means`` (:func:`group_stats` of the used runs per
    lr), ``spearman`` (rank correlation of the used max LLC with lr), ``n``, ``n_valid``,
    ``n_used``), ``n_runs``, ``n_valid``, ``n_used``, ``n_dropped_nan`` and ``notes``.
    """
    df, note = run_llc(runs, "max", check_use(use))
    df, dropped = finite_rows(df, ["lr", "llc", "weight_decay"])
    bad = df["lr"] <= 0
    df = df.loc[~bad].reset_index(drop=True)
    dropped += int(bad.sum())
    per_wd: dict[float, dict[str, Any]] = {}
    for wd, sub in df.groupby("weight_decay", sort=True):
        ok = sub[sub["llc_used"]]
        rho = spearman(ok["lr"], ok["llc"]) if len(ok) >= 3 else math.nan
        per_wd[float(wd)] = {
            "means": group_stats(ok, "lr", "llc"),
            "spearman": rho,
            "n": len(sub),
            "n_valid": int(sub["llc_valid"].sum()),
            "n_used": len(ok),
        }
    n_valid = int(df["llc_valid"].sum())
    notes = [
        note,
        f"dropped {dropped} run(s) with NaN lr / max LLC / weight decay (or lr <= 0)"
        if dropped
        else None,
        status_note(df["llc_status"], "maximum-LLC estimates", use=use) if len(df) else None,
        varying_note(df, exclude=("lr", "weight_decay")),
    ]
    return {
        "use": use,
        "points": df,
        "per_wd": per_wd,
        "n_runs": len(df),
        "n_valid": n_valid,
        "n_used": int(df["llc_used"].sum()),
        "n_dropped_nan": dropped,
        "notes": [n for n in notes if n],
    }


def _line_or_skip(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    n_distinct = np.unique(x).size
    if n_distinct < MIN_DISTINCT_LINEAR:
        return {
            "slope": math.nan,
            "intercept": math.nan,
            "r2": math.nan,
            "n": int(x.size),
            "skipped": f"fit skipped: {n_distinct} distinct LLC value(s), "
            f"need {MIN_DISTINCT_LINEAR}",
        }
    return {**fit_linear(x, y), "skipped": None}


def fit_gsm_vs_llc(
    runs: pd.DataFrame, gen_threshold: float, use: str = USE_VALID
) -> dict[str, Any]:
    """Linear fits ``GSM = slope * final LLC + intercept`` (SPEC section 6; the paper reports
    0.1288 LLC - 2.098, R^2 = 0.955, for its own sampler), pooled and per weight decay.

    Points entering the fits: runs that ended generalised (:func:`generalised`; the others
    have no GSM and are counted in ``n_never``) with a finite, valid final LLC (any finite one
    with ``use="all"``, the paper's protocol). Returns ``use``, ``points`` (every run with
    finite GSM and final LLC; ``llc``, ``llc_valid``, ``llc_status``, ``llc_used``,
    ``generalised`` added), ``pooled`` and ``per_wd`` (weight decay -> fit), each fit a dict
    with ``slope``, ``intercept``, ``r2``, ``n`` and ``skipped`` (None, or why: fewer than 2
    distinct LLC values); ``n_runs``, ``n_valid`` (valid and generalised), ``n_used`` (the
    points fitted), ``n_never``, ``n_invalid`` (generalised, not valid), ``n_dropped_nan`` and
    ``notes``.
    """
    df, note = run_llc(runs, "final", check_use(use))
    df, dropped = finite_rows(df, ["gsm", "llc"])
    df["generalised"] = generalised(df, gen_threshold)
    used = df[df["generalised"] & df["llc_used"]]
    pooled = _line_or_skip(used["llc"].to_numpy(float), used["gsm"].to_numpy(float))
    per_wd = {}
    if "weight_decay" in used:
        for wd, sub in used.groupby("weight_decay", sort=True):
            per_wd[float(wd)] = _line_or_skip(
                sub["llc"].to_numpy(float), sub["gsm"].to_numpy(float)
            )
    n_never = int((~df["generalised"]).sum())
    gen = df["generalised"].to_numpy(dtype=bool)
    n_invalid = int((gen & ~df["llc_valid"].to_numpy(dtype=bool)).sum())
    notes = [
        note,
        f"dropped {dropped} run(s) with NaN GSM / final LLC" if dropped else None,
        f"{n_never} run(s) never generalised: no GSM, shown apart, not fitted" if n_never else None,
        status_note(df["llc_status"][gen], "final LLC estimates", use=use) if gen.any() else None,
    ]
    return {
        "use": use,
        "points": df,
        "pooled": pooled,
        "per_wd": per_wd,
        "n_runs": len(df),
        "n_valid": int((gen & df["llc_valid"].to_numpy(dtype=bool)).sum()),
        "n_used": len(used),
        "n_never": n_never,
        "n_invalid": n_invalid,
        "n_dropped_nan": dropped,
        "notes": [n for n in notes if n],
    }


# --------------------------------------------------------------------------- Figure 14


def regime_boundary(training: pd.DataFrame, gen_threshold: float) -> dict[str, Any]:
    """Where runs start to generalise in the scaled data size ``x = n_train / (p ln p)``
    (SPEC section 7 item 9; Tian (2025): near 2.75).

    For each p, a setting (value of x) *generalises* when at least half of its runs end
    generalised (:func:`generalised`). ``x_gen`` is the smallest x from which every larger x
    of that p generalises, ``x_fail`` the largest x below it; the boundary lies in
    ``(x_fail, x_gen]``. Returns ``points`` (runs with ``x`` and ``generalised``),
    ``per_p`` (a DataFrame p, x_fail, x_gen, n_x; NaN where the bracket is open: no x
    generalises, or the smallest does), ``lower`` / ``upper`` (means over p of ``x_fail`` /
    ``x_gen``; NaN when any p's bracket is open), ``mid`` and ``open_p`` (the p with an open
    bracket).
    """
    df, _ = finite_rows(training, ["p", "n_train"])
    df = df[df["p"] > 1].reset_index(drop=True)
    df["x"] = scaled_data_size(df["n_train"], df["p"])
    df["generalised"] = generalised(df, gen_threshold)
    rows, open_p = [], []
    for p, sub in df.groupby("p", sort=True):
        frac = sub.groupby("x", sort=True)["generalised"].mean()
        xs = frac.index.to_numpy(dtype=float)
        ok = frac.to_numpy() >= 0.5
        # smallest index from which every setting generalises
        tail = np.flatnonzero(~ok)
        start = 0 if tail.size == 0 else int(tail[-1]) + 1
        x_gen = float(xs[start]) if start < xs.size else math.nan
        x_fail = float(xs[start - 1]) if 0 < start <= xs.size else math.nan
        if not (math.isfinite(x_gen) and math.isfinite(x_fail)):
            open_p.append(float(p))
        rows.append({"p": float(p), "x_fail": x_fail, "x_gen": x_gen, "n_x": int(xs.size)})
    per_p = pd.DataFrame(rows, columns=["p", "x_fail", "x_gen", "n_x"])
    if len(per_p) and not open_p:
        lower, upper = float(per_p["x_fail"].mean()), float(per_p["x_gen"].mean())
    else:
        lower = upper = math.nan
    return {
        "points": df,
        "per_p": per_p,
        "lower": lower,
        "upper": upper,
        "mid": 0.5 * (lower + upper),
        "open_p": open_p,
    }


# --------------------------------------------------------------------------- one run's track


def track_statistics(
    train_log: pd.DataFrame,
    llc: pd.DataFrame,
    *,
    window: str = "grokking",
    threshold: float = 0.99,
    level: float = 0.95,
    use: str = USE_VALID,
) -> dict[str, Any]:
    """How one run's LLC curve moves with its validation loss (Figures 3 and 13, SPEC 7).

    ``t_mem`` / ``t_gen``: the first checkpoints where train / validation accuracy reach
    ``threshold`` (:func:`first_step_reaching`, SPEC section 6; NaN: never). Over the used LLC
    estimates in the window -- the valid ones, or every finite one with ``use="all"`` (the
    paper's protocol); window ``"grokking"``: steps in ``[t_mem, t_gen]``, where validation loss
    falls while the model already fits the training set; ``"all"``: every step -- the
    validation loss at the same checkpoints is paired with the estimate. Returns ``use``,
    ``t_mem``, ``t_gen``, ``n_estimates`` (all rows), ``n_valid``, ``status_counts``
    (:func:`status_counts`), ``n_window`` (used estimates in the window), ``spearman`` (rank
    correlation of LLC with validation loss; positive: the LLC falls as the validation loss
    falls) with ``ci_low`` / ``ci_high`` (:func:`spearman_ci`), ``llc_start`` / ``llc_end``
    (first and last used estimate in the window), ``rel_change`` (``llc_end / llc_start -
    1``), ``peak_step`` and ``peak_llc`` (step and value of the largest used estimate over the
    run), ``first_step`` / ``first_llc`` and ``last_step`` / ``last_llc`` (the run's first and
    last used estimates) and ``peak_position`` (``"before memorisation"``, ``"between
    memorisation and generalisation"``, ``"after generalisation"`` or ``"unknown"``); ``notes``.
    """
    check_use(use)
    t_mem = t_gen = math.nan
    if len(train_log):
        steps = train_log["step"].to_numpy(dtype=float)
        t_mem = first_step_reaching(steps, train_log["train_acc"], threshold)
        t_gen = first_step_reaching(steps, train_log["val_acc"], threshold)
    valid, note = llc_validity(llc)
    if use == USE_ALL:
        note = None  # every estimate is used: a missing validity column changes nothing
    est = llc.assign(_used=valid | (use == USE_ALL))
    est = est[est["_used"] & np.isfinite(pd.to_numeric(est["llc_mean"], errors="coerce"))]
    merged = est[["step", "llc_mean"]].merge(
        train_log[["step", "val_loss"]], on="step", how="inner"
    )
    merged = merged.sort_values("step").reset_index(drop=True)
    out: dict[str, Any] = {
        "use": use,
        "t_mem": t_mem,
        "t_gen": t_gen,
        "n_estimates": len(llc),
        "n_valid": int(valid.sum()),
        "status_counts": status_counts(estimate_status(llc)),
        "n_window": 0,
        "spearman": math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "llc_start": math.nan,
        "llc_end": math.nan,
        "rel_change": math.nan,
        "peak_step": math.nan,
        "peak_llc": math.nan,
        "first_step": math.nan,
        "first_llc": math.nan,
        "last_step": math.nan,
        "last_llc": math.nan,
        "peak_position": "unknown",
        "notes": [n for n in [note] if n],
    }
    if len(merged):
        top = int(merged["llc_mean"].to_numpy().argmax())
        peak = float(merged.loc[top, "step"])
        out["peak_step"], out["peak_llc"] = peak, float(merged.loc[top, "llc_mean"])
        out["first_step"], out["first_llc"] = (
            float(v) for v in merged.iloc[0][["step", "llc_mean"]]
        )
        out["last_step"], out["last_llc"] = (
            float(v) for v in merged.iloc[-1][["step", "llc_mean"]]
        )
        if math.isfinite(t_mem) and peak < t_mem:
            out["peak_position"] = "before memorisation"
        elif math.isfinite(t_gen) and peak > t_gen:
            out["peak_position"] = "after generalisation"
        elif math.isfinite(t_mem) and math.isfinite(t_gen):
            out["peak_position"] = "between memorisation and generalisation"
    if window == "grokking":
        if not (math.isfinite(t_mem) and math.isfinite(t_gen)):
            out["notes"].append("no grokking window: the run never memorised or generalised")
            return out
        win = merged[(merged["step"] >= t_mem) & (merged["step"] <= t_gen)]
    elif window == "all":
        win = merged
    else:
        raise ValueError(f"window must be 'grokking' or 'all', got {window!r}")
    out["n_window"] = len(win)
    if len(win) >= 3:
        rho = spearman(win["llc_mean"], win["val_loss"])
        out["spearman"] = rho
        out["ci_low"], out["ci_high"] = spearman_ci(rho, len(win), level)
    if len(win):
        out["llc_start"] = float(win["llc_mean"].iloc[0])
        out["llc_end"] = float(win["llc_mean"].iloc[-1])
        if out["llc_start"] != 0.0:
            out["rel_change"] = out["llc_end"] / out["llc_start"] - 1.0
    return out


# --------------------------------------------------------------------------- sampler grids


def sampler_sensitivity(table: pd.DataFrame) -> dict[str, Any]:
    """Numbers behind the B.2 figure (SPEC section 7 item 5): LLC at the final checkpoint per
    (SGLD step size, localisation) setting.

    Returns ``points`` (rows with finite localization > 0, sampler_lr and llc_mean; ``valid``
    added, :func:`llc_validity`), ``n``, ``n_valid``, ``all_positive`` (every estimate > 0:
    log y axis possible), ``n_repeated`` (settings appearing more than once) and ``notes``.
    """
    df, dropped = finite_rows(table, ["localization", "sampler_lr", "llc_mean"])
    bad = df["localization"] <= 0
    df = df.loc[~bad].reset_index(drop=True)
    dropped += int(bad.sum())
    valid, note = llc_validity(df)
    df["valid"] = valid
    df["llc_std"] = pd.to_numeric(df.get("llc_std", np.nan), errors="coerce")
    reps = df.groupby(["sampler_lr", "localization"]).size()
    notes = [
        note,
        f"dropped {dropped} row(s) with NaN setting / estimate (or γ <= 0)" if dropped else None,
        invalid_note(len(df) - int(valid.sum()), len(df), fitted=False),
    ]
    return {
        "points": df,
        "n": len(df),
        "n_valid": int(valid.sum()),
        "all_positive": bool(len(df) and (df["llc_mean"] > 0).all()),
        "n_repeated": int((reps > 1).sum()),
        "notes": [n for n in notes if n],
    }


def bias_reduced_llc(nbeta: ArrayLike, llc: ArrayLike) -> dict[str, float]:
    """Bias-reduced LLC from a temperature sweep (SPEC section 4, appendix B.1, rebuilt).

    Least-squares line of the estimates ``llc`` on ``1 / nbeta`` (``nbeta = n beta``, so this
    is regression on ``1/beta`` up to the fixed factor n); its intercept, the value as
    ``1/beta -> 0``, is the bias-reduced LLC. Returns intercept, slope, r2 (:func:`r_squared`;
    NaN when the estimates are all equal) and n. Non-finite estimates are dropped; at least 2
    distinct nbeta values must remain.
    """
    x = 1.0 / np.asarray(nbeta, dtype=np.float64)
    y = np.asarray(llc, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(np.unique(x)) < 2:
        raise ValueError("the temperature sweep needs finite estimates at >= 2 values of nbeta")
    line = fit_linear(x, y)
    return {"intercept": line["intercept"], "slope": line["slope"], "r2": line["r2"], "n": len(x)}


def bias_reduced(table: pd.DataFrame) -> dict[str, Any]:
    """The bias-reduced LLC (SPEC section 4, appendix B.1) from a temperature sweep.

    Fits the valid, finite estimates with :func:`bias_reduced_llc` (least squares of the
    estimate on ``1 / nbeta``; the intercept is the bias-reduced LLC). Returns
    ``points`` (finite rows, ``valid`` added), ``fit`` (that function's dict, or None),
    ``skipped`` (None, or why), ``n``, ``n_valid`` and ``notes``.
    """
    df, dropped = finite_rows(table, ["nbeta", "llc_mean"])
    valid, note = llc_validity(df)
    df["valid"] = valid
    used = df[valid]
    fit, skipped = None, None
    try:
        fit = bias_reduced_llc(used["nbeta"], used["llc_mean"])
    except ValueError as err:
        skipped = f"no fit: {err}"
    notes = [
        note,
        f"dropped {dropped} non-finite estimate(s)" if dropped else None,
        invalid_note(len(df) - int(valid.sum()), len(df)),
        skipped,
    ]
    return {
        "points": df,
        "fit": fit,
        "skipped": skipped,
        "n": len(df),
        "n_valid": int(valid.sum()),
        "notes": [n for n in notes if n],
    }


CALIBRATION_CHECK_ROLES = ("step", "nbeta", "rescale x2", "rescale x0.5", "reference")


def _calibration_check_of(row: pd.Series, candidates: pd.DataFrame) -> pd.Series | None:
    """The candidate row a check run of :mod:`grokking_llc.sampling.calibrate` belongs to: the same
    kind, nbeta and gamma (the smaller step, the rescaled states), half of both (the nbeta
    check), or the same nbeta and gamma of any kind (the Metropolis-adjusted reference)."""
    if candidates.empty:
        return None
    factor = 2.0 if row["role"] == "nbeta" else 1.0
    mask = np.isclose(candidates["nbeta"].to_numpy(float), factor * float(row["nbeta"]))
    mask &= np.isclose(
        candidates["localization"].to_numpy(float), factor * float(row["localization"])
    )
    if row["role"] != "reference":
        mask &= (candidates["kind"] == row["kind"]).to_numpy()
    hits = candidates[mask]
    return hits.iloc[0] if len(hits) else None


def calibration_points(table: pd.DataFrame) -> dict[str, Any]:
    """Numbers behind the calibration figure: the table of :mod:`grokking_llc.sampling.calibrate`
    (one
    row per estimate with its ``role``: ladder, candidate, a check's run -- step, nbeta,
    rescale x2, rescale x0.5, reference -- or target, SPEC section 10) placed on the
    resolution axis ``kappa = nbeta lambda / gamma``.

    Returns ``points``: every row with a finite estimate (at the search target also a finite
    place on the axis), with ``x`` (the resolution where it is drawn: a check's run sits at
    the resolution of the candidate it checks, a rescaled run or the reference too),
    ``series`` (the nbeta of that ladder), ``panel`` (its kind), ``status``
    (:func:`estimate_status`), ``valid`` and ``chosen`` as bools; ``ladder``, ``candidates``
    and ``checks`` (those rows at the search target, the one the ladders ran at; a step run
    with a candidate's own settings is that candidate's estimate, not among the checks) and
    ``targets`` (rows at the other targets); ``chosen`` (the chosen rows), ``chosen_valid``
    (None when nothing was chosen) and ``reason`` (the calibration's sentence); ``kinds``
    (the ladders' kinds in table order), ``nbetas`` (descending), ``search_target``,
    ``target_labels`` (``{target: "step 9000"}`` from the label columns before ``target``),
    ``n``, ``n_valid``, ``n_not_a_minimum`` and ``notes``. A table without ``role`` is read as
    ladder rows, one without ``target`` as one target.
    """
    df = table.copy().reset_index(drop=True)
    defaults = {"role": "ladder", "target": 0, "rescale": 1.0, "resolution": math.nan}
    for col, value in defaults.items():
        if col not in df:
            df[col] = value
    for col in ("kind", "nbeta", "localization"):
        if col not in df:
            df[col] = "sgld" if col == "kind" else math.nan
    df["chosen"] = df["chosen"].fillna(False).astype(bool) if "chosen" in df else False
    valid, note = llc_validity(df)
    df["valid"] = valid
    df["status"] = estimate_status(df)
    with_ladder = df.loc[df["role"] == "ladder", "target"]
    search = int(with_ladder.max() if len(with_ladder) else (df["target"].max() if len(df) else 0))
    at_search = (df["target"] == search).to_numpy()
    df["x"] = pd.to_numeric(df["resolution"], errors="coerce").astype(float)
    df["series"] = pd.to_numeric(df["nbeta"], errors="coerce").astype(float)
    df["panel"] = df["kind"]
    candidates = df[at_search & (df["role"] == "candidate").to_numpy()]
    for i in np.flatnonzero(at_search & df["role"].isin(CALIBRATION_CHECK_ROLES).to_numpy()):
        cand = _calibration_check_of(df.loc[i], candidates)
        if cand is not None:
            df.loc[i, ["x", "series", "panel"]] = [cand["resolution"], cand["nbeta"], cand["kind"]]
    if "llc_mean" not in df:
        df["llc_mean"] = math.nan
    llc = pd.to_numeric(df["llc_mean"], errors="coerce").to_numpy(float)
    keep = np.isfinite(llc) & (np.isfinite(df["x"].to_numpy(float)) | ~at_search)
    dropped = int((~keep).sum())
    df = df[keep].reset_index(drop=True)
    at_search = at_search[keep]
    role = df["role"].to_numpy(dtype=object)
    labels = list(table.columns[: list(table.columns).index("target")]) if "target" in table else []
    target_labels = {}
    for t, rows in df.groupby("target", sort=True):
        first = rows.iloc[0]
        text = ", ".join(f"{c} {fmt(first[c], 8)}" for c in labels)
        target_labels[int(t)] = text or f"target {int(t)}"
    ladder = df[at_search & (role == "ladder")]
    # a step run at the candidate's own step is the candidate's estimate, drawn as such
    own_step = np.zeros(len(df), dtype=bool)
    if "settings" in df:
        own = set(df.loc[at_search & (role == "candidate"), "settings"])
        own_step = (role == "step") & df["settings"].isin(own).to_numpy()
    chosen = df[df["chosen"]]
    chosen_valid = None
    if not chosen.empty:
        flags = chosen["chosen_valid"] if "chosen_valid" in chosen else pd.Series([False])
        chosen_valid = bool(flags.fillna(False).astype(bool).all())
    reason = str(table["reason"].iloc[0]) if "reason" in table and len(table) else ""
    n_nam = int((df["status"] == STATUS_NOT_A_MINIMUM).sum())
    notes = [
        note,
        f"dropped {dropped} row(s) without an estimate or a resolution" if dropped else None,
        status_note(df["status"], "estimates", fitted=False),
        "no setting chosen" if chosen.empty else None,
        "the chosen setting is NOT valid (the calibration's fallback)"
        if chosen_valid is False
        else None,
    ]
    return {
        "points": df,
        "ladder": ladder,
        "candidates": df[at_search & (role == "candidate")],
        "checks": df[at_search & np.isin(role, CALIBRATION_CHECK_ROLES) & ~own_step],
        "targets": df[~at_search],
        "chosen": chosen,
        "chosen_valid": chosen_valid,
        "reason": reason,
        "kinds": list(dict.fromkeys(ladder["kind"].tolist())),
        "nbetas": sorted(set(ladder["series"].tolist()), reverse=True),
        "search_target": search,
        "target_labels": target_labels,
        "n": len(df),
        "n_valid": int(df["valid"].sum()),
        "n_not_a_minimum": n_nam,
        "notes": [n for n in notes if n],
    }
