"""The sampler's own checks as numbers to draw: the B.2 grid (LLC at the final checkpoint over
step size and localisation, SPEC section 7 item 5), the B.1 temperature sweep and its
bias-reduced LLC (SPEC section 4), and a calibration table placed on the resolution axis of its
localisation ladder (SPEC section 10)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from grokking_llc.science.fits import bias_reduced_llc
from grokking_llc.science.notes import invalid_note, status_note
from grokking_llc.science.tables import (
    STATUS_NOT_A_MINIMUM,
    estimate_status,
    finite_rows,
    llc_validity,
)
from grokking_llc.science.text import fmt

# The runs of a candidate's checks in a calibration table (grokking_llc.sampling.calibrate).
CALIBRATION_CHECK_ROLES = ("step", "nbeta", "rescale x2", "rescale x0.5", "reference")


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
