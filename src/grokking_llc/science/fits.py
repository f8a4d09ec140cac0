"""Least-squares fits (SPEC sections 4, 6 and 7): a free line, a line through the origin, an
exponential decay with an offset, and the bias-reduced LLC of a temperature sweep.

:func:`fit_exponential_decay` reports when it did not converge or found absurd parameters
(``status``) instead of returning numbers to draw; :func:`line_or_skip` and
:func:`exp_fit_or_skip` give a fit's dict, or the same keys as NaN with the reason it was
skipped (too few distinct x values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from grokking_llc.science.stats import as_1d, r_squared, same_length

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


def exp_fit_or_skip(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
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


def line_or_skip(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
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
