"""How the LLC scales across runs: the numbers behind Figures 1 and 2 (final LLC against p and
against width, with the closed form's shape beside the data; SPEC sections 5 and 7 items 1-2)
and appendix H.3 (the maximum of the LLC curve against learning rate; SPEC 7 item 6).

Each function returns a plain dict (keys in its docstring): the selected runs with their LLC
columns (:func:`grokking_llc.science.tables.run_llc`), seed means, fits, counts, and the facts a
figure's notes need -- ``validated`` (the table has a validity column), ``varying`` (the
hyperparameters that still vary in the selection) -- and, where a fit was skipped, why. Only
valid estimates enter means and fits, or every one with ``use="all"`` (the paper's protocol,
SPEC section 4).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from grokking_llc.science import theory
from grokking_llc.science.fits import MIN_DISTINCT_LINEAR, fit_linear, fit_proportional
from grokking_llc.science.notes import status_note, varying_note
from grokking_llc.science.stats import group_stats, spearman
from grokking_llc.science.tables import (
    USE_VALID,
    check_use,
    finite_rows,
    most_common,
    run_llc,
)
from grokking_llc.science.text import fmt

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


def theory_curve(fit: Mapping[str, Any], grid: ArrayLike) -> np.ndarray:
    """The scaled closed form ``theory_scale * llc_quadratic`` of a Figure 1 / 2 fit on a grid
    of its x variable (p for Figure 1, width for Figure 2)."""
    g = np.asarray(grid)
    if fit["x"] == "p":
        t = theory_quadratic(g, np.full(g.shape, int(fit["width"])))
    else:
        t = theory_quadratic(np.full(g.shape, int(fit["p"])), g)
    return fit["theory_scale"] * t


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
    value, distinct = most_common(df[fixed])
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


# --------------------------------------------------------------------------- H.3


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
