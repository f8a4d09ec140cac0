"""One run's LLC curve against its validation loss (Figures 3 and 13, SPEC section 7 items 3
and 8): the memorisation and generalisation steps, the rank correlation of the used LLC
estimates with the validation loss over a window, and where the curve peaks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from grokking_llc.science.stats import first_step_reaching, spearman, spearman_ci
from grokking_llc.science.tables import (
    USE_ALL,
    USE_VALID,
    check_use,
    estimate_status,
    llc_validity,
    status_counts,
)


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
