"""Selecting runs and LLC estimates from the pipeline's tables, and each estimate's validity and
status (SPEC sections 4, 6 and 10).

Validity (issue 10): a statistic of the LLC takes only estimates whose ``valid`` flag is true
(:func:`llc_validity`, :func:`run_llc`) -- or every estimate under the paper's protocol
(:data:`USE_ALL`, SPEC section 4). A table without the flag is treated as holding no validated
estimate; the functions say so in the note they return
(:data:`~grokking_llc.science.text.NOT_VALIDATED`).

Generalisation (SPEC section 6): whether a run ended generalised is the GSM's indicator -- both
final accuracies above the threshold, strictly -- which callers pass as ``gen_threshold``
(``grokking_llc.science.gsm.GSM_THRESHOLD``; :mod:`grokking_llc.science.gsm` imports the
statistics this layer rests on, not the other way round).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from grokking_llc.core import columns as C
from grokking_llc.science.text import NOT_VALIDATED

# Hyperparameters that should be constant within a figure's selection (beyond its x variable).
HYPERPARAMETERS = (
    C.MODEL, C.LOSS, C.P, C.WIDTH, C.TRAIN_FRAC, C.LR, C.WEIGHT_DECAY, C.BATCH_SIZE, C.MAX_STEPS,
)  # fmt: skip

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


# Runs-table LLC columns: value column, validity column, and the pre-validity name of the value.
_RUN_LLC = {
    "final": (C.FINAL_LLC, C.FINAL_LLC_VALID, "llc_final"),
    "max": (C.MAX_LLC, C.MAX_LLC_VALID, "llc_max"),
}


def check_use(use: str) -> str:
    """``use`` if it is :data:`USE_VALID` or :data:`USE_ALL`; ValueError naming it otherwise."""
    if use not in USES:
        raise ValueError(f"use must be one of {USES}, got {use!r}")
    return use


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


def most_common(values: pd.Series) -> tuple[Any, list[Any]]:
    """Most common value (ties: the smallest) and the sorted distinct values."""
    counts = values.value_counts()
    top = counts[counts == counts.max()].index
    return sorted(top.tolist())[0], sorted(counts.index.tolist())
