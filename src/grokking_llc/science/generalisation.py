"""Generalisation across runs: the numbers behind Figure 4 (grokking severity against learning
rate, SPEC section 7 item 4), the GSM-on-LLC line (SPEC section 6) and Figure 14 (where runs
start to generalise in the scaled data size, SPEC section 7 item 9).

GSM (SPEC section 6): runs that never generalise have no grokking severity (the GSM's indicator
is 0); they are counted apart (``n_never``), never averaged in as GSM 0. Whether a run ended
generalised is :func:`grokking_llc.science.tables.generalised` at ``gen_threshold``
(``grokking_llc.science.gsm.GSM_THRESHOLD``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from grokking_llc.science.fits import exp_fit_or_skip, line_or_skip
from grokking_llc.science.notes import status_note
from grokking_llc.science.stats import group_stats
from grokking_llc.science.tables import (
    USE_VALID,
    check_use,
    finite_rows,
    generalised,
    run_llc,
    scaled_data_size,
)


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
        fit = exp_fit_or_skip(x, gen["gsm"].to_numpy(dtype=float))
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
    pooled = line_or_skip(used["llc"].to_numpy(float), used["gsm"].to_numpy(float))
    per_wd = {}
    if "weight_decay" in used:
        for wd, sub in used.groupby("weight_decay", sort=True):
            per_wd[float(wd)] = line_or_skip(sub["llc"].to_numpy(float), sub["gsm"].to_numpy(float))
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
