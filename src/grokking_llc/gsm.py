"""Grokking severity, generalisation delay, regime labels and the fits used beside them.

SPEC section 6 defines the grokking severity measure (GSM) and asks for the raw delay beside it;
SPEC section 7 (Figures 4 and 9) needs an exponential-decay fit of GSM against learning rate, linear
fits (GSM on final LLC, LLC on p) and a per-run label "no generalisation / grokking / immediate
generalisation". Everything here works on the per-checkpoint accuracy curves of one run (SPEC
section 3: a checkpoint every 100 steps, accuracies on the full splits) and needs only numpy;
scipy, when importable, only polishes the exponential fit.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

NO_GENERALISATION = "no_generalisation"
GROKKING = "grokking"
IMMEDIATE_GENERALISATION = "immediate_generalisation"
REGIMES = (NO_GENERALISATION, GROKKING, IMMEDIATE_GENERALISATION)

GSM_THRESHOLD = 0.9  # SPEC section 6: both final accuracies must exceed 0.9
DELAY_THRESHOLD = 0.99  # SPEC section 6: raw delay from train acc >= 0.99 to val acc >= 0.99

__all__ = [
    "DELAY_THRESHOLD",
    "GROKKING",
    "GSM_THRESHOLD",
    "IMMEDIATE_GENERALISATION",
    "NO_GENERALISATION",
    "REGIMES",
    "classify_regime",
    "first_step_reaching",
    "fit_exponential_decay",
    "fit_linear",
    "generalisation_delay",
    "grokking_severity",
]


# --------------------------------------------------------------------------- input checks


def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a 1-D float array with at least one entry and no NaN or inf."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D sequence of numbers: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: need at least one checkpoint")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_accuracy(values: ArrayLike, name: str) -> np.ndarray:
    arr = _as_1d(values, name)
    if np.any(arr < 0.0) or np.any(arr > 1.0):
        raise ValueError(
            f"{name} must hold accuracies in [0, 1], got values in [{arr.min()}, {arr.max()}]"
        )
    return arr


def _as_steps(values: ArrayLike, name: str = "steps") -> np.ndarray:
    arr = _as_1d(values, name)
    if arr.size > 1 and not np.all(np.diff(arr) > 0):
        raise ValueError(f"{name} must be strictly increasing")
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: arr.size for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise ValueError(f"inputs must have equal lengths, got {shown}")


def _check_threshold(threshold: float, name: str = "threshold") -> float:
    t = float(threshold)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {threshold!r}")
    return t


# --------------------------------------------------------------------------- GSM and delays


def grokking_severity(
    train_acc: ArrayLike, val_acc: ArrayLike, threshold: float = GSM_THRESHOLD
) -> float:
    """Grokking severity measure of one run (SPEC section 6).

    Over the ``T`` checkpoints of the run::

        GSM = 1[acc_val(T) > threshold and acc_train(T) > threshold]
              * (1/T) * sum_{t=1..T} ( acc_train(t) - acc_val(t) )

    i.e. the mean train-minus-validation accuracy gap (a Riemann sum of the area between the two
    curves, in units of checkpoints), counted only when the run ends generalised; 0 when it never
    generalises. The comparisons with ``threshold`` (0.9 in the paper) are strict, as in the
    paper's code (``grokking_test3``). The gap is signed, as there: a run whose validation accuracy
    leads its training accuracy gets a (small) negative GSM. Because the mean runs over checkpoints,
    GSM depends on how long the run goes on after generalising (SPEC section 3's early stop bounds
    that); compare GSMs only between runs with the same checkpoint schedule and stopping rule.

    Args:
        train_acc, val_acc: accuracies on the full training / validation split at each
            checkpoint, in checkpoint order: 1-D array-likes of the same length ``T >= 1`` with
            values in [0, 1].
        threshold: generalisation threshold for the final accuracies, in [0, 1].

    Raises:
        ValueError: empty, non-1-D or unequal-length inputs, NaN/inf, values outside [0, 1].
    """
    train = _as_accuracy(train_acc, "train_acc")
    val = _as_accuracy(val_acc, "val_acc")
    _same_length(train_acc=train, val_acc=val)
    thr = _check_threshold(threshold)
    if not (val[-1] > thr and train[-1] > thr):
        return 0.0
    return float(np.mean(train - val))


def first_step_reaching(steps: ArrayLike, acc: ArrayLike, threshold: float) -> float:
    """The first ``steps[i]`` with ``acc[i] >= threshold``; NaN if ``acc`` never gets there.

    ``steps`` must be strictly increasing and as long as ``acc``; accuracies lie in [0, 1].
    """
    s = _as_steps(steps)
    a = _as_accuracy(acc, "acc")
    _same_length(steps=s, acc=a)
    thr = _check_threshold(threshold)
    hits = np.flatnonzero(a >= thr)
    return float(s[hits[0]]) if hits.size else math.nan


def generalisation_delay(
    steps: ArrayLike,
    train_acc: ArrayLike,
    val_acc: ArrayLike,
    threshold: float = DELAY_THRESHOLD,
) -> float:
    """Raw generalisation delay in steps (SPEC section 6, reported beside the GSM).

    ``delay = first step with val_acc >= threshold - first step with train_acc >= threshold``,
    both read off the checkpoints (so the delay is resolved to the checkpoint spacing, 100 steps
    under SPEC section 3). Returns NaN when either accuracy never reaches ``threshold`` (the run
    never memorised or never generalised within its checkpoints), so such runs drop out of means
    and fits rather than entering as a fake number. The delay is negative when validation accuracy
    reaches the threshold first.
    """
    s = _as_steps(steps)
    train = _as_accuracy(train_acc, "train_acc")
    val = _as_accuracy(val_acc, "val_acc")
    _same_length(steps=s, train_acc=train, val_acc=val)
    t_train = first_step_reaching(s, train, threshold)
    t_val = first_step_reaching(s, val, threshold)
    return t_val - t_train  # NaN propagates


# --------------------------------------------------------------------------- regimes


def classify_regime(
    train_acc: ArrayLike,
    val_acc: ArrayLike,
    steps: ArrayLike | None = None,
    *,
    gen_threshold: float = GSM_THRESHOLD,
    immediate_rel_delay: float = 0.5,
    immediate_gap_checkpoints: float = 2.0,
) -> str:
    """Label a run ``"no_generalisation"``, ``"grokking"`` or ``"immediate_generalisation"``.

    Used for SPEC section 7, Figure 9 (the paper's Fig. 14), whose rule the paper does not state;
    this one is ours.
    With ``thr = gen_threshold`` (default 0.9, the GSM's threshold of SPEC section 6):

    1. **no_generalisation** if the run does not end generalised, i.e. unless both final
       accuracies exceed ``thr`` (strictly): exactly the runs whose GSM indicator is 0.
    2. Otherwise let ``t_train`` and ``t_val`` be the first checkpoint steps at which the training
       and the validation accuracy reach ``thr`` (``>=``), ``delay = t_val - t_train``, and
       ``allowed = max(immediate_rel_delay * t_train, immediate_gap_checkpoints * dt)`` with ``dt``
       the median spacing between checkpoints. The run is **immediate_generalisation** if
       ``delay <= allowed`` and **grokking** otherwise. With the defaults a run is immediate when
       validation accuracy reaches ``thr`` by step ``1.5 * t_train`` or at most two checkpoints
       after ``t_train``, whichever is later.

    ``steps`` defaults to the checkpoint numbers 1, 2, ..., T (then ``dt = 1``). The relative
    allowance makes the rule independent of the time unit; the absolute one in checkpoints keeps
    runs that memorise within a checkpoint or two from being called grokking for a one-checkpoint
    lag that the checkpoint spacing cannot resolve.

    Raises:
        ValueError: bad accuracy or step inputs (as for :func:`grokking_severity`), or a negative
            knob.
    """
    train = _as_accuracy(train_acc, "train_acc")
    val = _as_accuracy(val_acc, "val_acc")
    _same_length(train_acc=train, val_acc=val)
    s = np.arange(1.0, train.size + 1.0) if steps is None else _as_steps(steps)
    _same_length(train_acc=train, steps=s)
    thr = _check_threshold(gen_threshold, "gen_threshold")
    if immediate_rel_delay < 0 or immediate_gap_checkpoints < 0:
        raise ValueError("immediate_rel_delay and immediate_gap_checkpoints must be >= 0")

    if not (val[-1] > thr and train[-1] > thr):
        return NO_GENERALISATION
    # Both final accuracies exceed thr, so both first-reach steps exist.
    t_train = first_step_reaching(s, train, thr)
    t_val = first_step_reaching(s, val, thr)
    dt = float(np.median(np.diff(s))) if s.size > 1 else 0.0
    allowed = max(immediate_rel_delay * abs(t_train), immediate_gap_checkpoints * dt)
    return IMMEDIATE_GENERALISATION if t_val - t_train <= allowed else GROKKING


# --------------------------------------------------------------------------- fits


def _r_squared(y: np.ndarray, fitted: np.ndarray) -> float:
    """Coefficient of determination ``1 - SSE/SST``; NaN when ``y`` is constant (SST = 0)."""
    sst = float(np.sum((y - y.mean()) ** 2))
    if sst == 0.0:
        return math.nan
    return 1.0 - float(np.sum((y - fitted) ** 2)) / sst


def _xy(x: ArrayLike, y: ArrayLike, n_params: int) -> tuple[np.ndarray, np.ndarray]:
    xa = _as_1d(x, "x")
    ya = _as_1d(y, "y")
    _same_length(x=xa, y=ya)
    n_distinct = np.unique(xa).size
    if n_distinct < n_params:
        raise ValueError(
            f"need at least {n_params} distinct x values to fit {n_params} parameters, "
            f"got {n_distinct} (from {xa.size} points)"
        )
    return xa, ya


def fit_linear(x: ArrayLike, y: ArrayLike) -> dict[str, float | int]:
    """Ordinary least-squares line ``y = slope * x + intercept`` (SPEC sections 6 and 7).

    Used for GSM on final LLC (the paper reports GSM = 0.1288 * LLC - 2.098, R^2 = 0.955) and for
    LLC on p (Figure 1). Returns ``slope``, ``intercept``, ``r2`` (``1 - SSE/SST``, the same as the
    paper's ``1 - SSE / (n var y)``; NaN for constant ``y``) and ``n``.

    Raises:
        ValueError: unequal lengths, NaN/inf, or fewer than 2 distinct x values.
    """
    xa, ya = _xy(x, y, 2)
    design = np.column_stack([xa, np.ones_like(xa)])
    (slope, intercept), *_ = np.linalg.lstsq(design, ya, rcond=None)
    fitted = slope * xa + intercept
    return {
        "slope": float(slope),
        "intercept": float(intercept),
        "r2": _r_squared(ya, fitted),
        "n": int(xa.size),
    }


def _exp_profile(k: float, u: np.ndarray, y: np.ndarray, offset: bool) -> tuple[float, np.ndarray]:
    """For a fixed scaled rate ``k``: SSE and linear coefficients of ``y ~ A e^{-k u} (+ c)``."""
    basis = np.exp(-k * u)
    design = np.column_stack([basis, np.ones_like(u)]) if offset else basis[:, None]
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    sse = float(np.sum((y - design @ coef) ** 2))
    return sse, coef


def fit_exponential_decay(
    x: ArrayLike, y: ArrayLike, *, offset: bool = True
) -> dict[str, float | int | str]:
    """Least-squares fit of ``y = a * exp(-b * x) + c`` with ``b > 0`` (SPEC section 6, Figure 4).

    The paper fits GSM against learning rate with "an exponential decay". We fit the offset form
    by default: GSM need not decay to 0 at large learning rates (the signed train-minus-validation
    gap stays positive while both accuracies rise, and the accuracies can settle below 1, SPEC
    section 9), and forcing ``c = 0`` would bend ``b`` to absorb that floor. ``offset=False`` fits
    ``y = a * exp(-b * x)`` (then ``c`` is reported as 0.0).

    Method (variable projection): for a fixed ``b`` the model is linear in ``a`` and ``c``, so they
    come from linear least squares and only the sum of squared errors ``SSE(b)`` remains to be
    minimised: over a log grid of ``b * (max x - min x)`` in [1e-4, 1e3] and then by golden-section
    search between the grid neighbours of the best point. This needs only numpy and, unlike a
    log-linear fit of ``log(y - c)``, needs no guess of ``c``, no positive ``y`` and weights all
    points alike. When scipy is importable its ``curve_fit`` polishes that solution (kept only if
    it lowers the SSE). ``method`` in the result says which one produced the numbers.

    Returns:
        dict with ``a``, ``b``, ``c``, ``r2`` (``1 - SSE/SST``; NaN for constant ``y``), ``sse``,
        ``n``, ``method``, ``x_min`` and ``a_at_x_min = a * exp(-b * x_min)`` (the decaying part at
        the smallest x; finite even where ``a`` overflows to +-inf for large ``b * x_min``), and
        ``b_at_search_limit`` (True when the search ended at an end of its ``b`` range: the data
        show no exponential curvature, e.g. they lie on a line, or drop faster than the x spacing
        resolves; do not quote ``b`` then).

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

    grid = np.linspace(math.log(1e-4), math.log(1e3), 281)
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
    k_min, k_max = math.exp(grid[0]), math.exp(grid[-1])
    k = math.exp(log_k)
    sse, coef = _exp_profile(k, u, ya, offset)
    # Work in the shifted form  y = A exp(-b (x - x0)) + c  (A = a exp(-b x0)), which stays finite
    # whatever x0 is; a itself is only converted at the end.
    b = k / span
    amp = float(coef[0])
    c = float(coef[1]) if offset else 0.0
    method = "variable_projection"

    try:
        from scipy.optimize import curve_fit
    except ImportError:
        curve_fit = None
    if curve_fit is not None:

        def shifted(xx, aa, bb, cc=0.0):
            return aa * np.exp(-bb * (xx - x0)) + cc

        p0 = [amp, b, c][:n_params]
        lower = [-np.inf, 0.0, -np.inf][:n_params]
        try:
            popt, _ = curve_fit(shifted, xa, ya, p0=p0, bounds=(lower, np.inf), maxfev=10000)
            sse_polished = float(np.sum((ya - shifted(xa, *popt)) ** 2))
            if np.all(np.isfinite(popt)) and sse_polished < sse:
                amp, b = float(popt[0]), float(popt[1])
                c = float(popt[2]) if offset else 0.0
                sse, method = sse_polished, "curve_fit"
        except (RuntimeError, ValueError):
            pass

    fitted = amp * np.exp(-b * (xa - x0)) + c
    log_scale = b * x0  # a = A exp(b x0); inf (with A's sign) if that overflows a float
    a = amp * math.exp(log_scale) if log_scale < 700.0 else math.copysign(math.inf, amp)
    return {
        "a": a,
        "b": b,
        "c": c,
        "r2": _r_squared(ya, fitted),
        "sse": float(sse),
        "n": int(xa.size),
        "method": method,
        "x_min": x0,
        "a_at_x_min": amp,
        "b_at_search_limit": bool(
            method == "variable_projection" and not k_min * 1.0001 < k < k_max / 1.0001
        ),
    }


# --------------------------------------------------------------------------------------------
# One summary row per run (results/tables/runs.parquet)
# --------------------------------------------------------------------------------------------


def summarize_training(
    run: dict, train_log: pd.DataFrame, *, run_id: str = "", studies: list[str] | None = None
) -> dict:
    """One row of ``training_summary.parquet``: hyperparameters, GSM, delay, regime and final
    accuracies and losses of a run (SPEC section 6)."""
    from grokking_llc.data import n_train

    steps = train_log["step"].to_numpy()
    tr, va = train_log["train_acc"].to_numpy(), train_log["val_acc"].to_numpy()
    last = train_log.iloc[-1]
    return {
        "run_id": run_id,
        "studies": list(studies or []),
        **{k: v for k, v in run.items() if k != "model_options"},
        "model_options": json.dumps(run.get("model_options", {}), sort_keys=True),
        "n_train": n_train(run["p"], run["train_frac"]),
        "final_step": int(last["step"]),
        "final_train_acc": float(last["train_acc"]),
        "final_val_acc": float(last["val_acc"]),
        "final_train_loss": float(last["train_loss"]),
        "final_val_loss": float(last["val_loss"]),
        "gsm": grokking_severity(tr, va),
        "delay": generalisation_delay(steps, tr, va),
        "t_memorise": first_step_reaching(steps, tr, DELAY_THRESHOLD),
        "t_generalise": first_step_reaching(steps, va, DELAY_THRESHOLD),
        "regime": classify_regime(tr, va, steps),
    }


LLC_SUMMARY_COLUMNS = ("llc_final", "llc_final_std", "llc_max", "llc_max_step", "sampler_id")


def summarize_llc(llc: pd.DataFrame | None, sampler_id: str | None = None) -> dict:
    """Final and maximum LLC of a run's LLC track (and the step of the maximum); NaN without one.

    The maximum is over the per-checkpoint means of chains that did not diverge.
    """
    row = dict.fromkeys(LLC_SUMMARY_COLUMNS[:-1], math.nan) | {"sampler_id": sampler_id}
    if llc is not None and len(llc):
        final = llc.iloc[int(llc["step"].argmax())]
        best = llc.iloc[int(llc["llc_mean"].fillna(-math.inf).argmax())]
        row.update(
            llc_final=float(final["llc_mean"]),
            llc_final_std=float(final["llc_std"]),
            llc_max=float(best["llc_mean"]),
            llc_max_step=float(best["step"]),
        )
    return row
