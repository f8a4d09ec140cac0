"""The sentences the statistics return beside their numbers and the figures print under their
axes: which estimates are not valid and how they are drawn (SPEC section 10), and which
hyperparameters vary within a selection. Numbers are formatted by
:func:`grokking_llc.science.text.fmt`; the statuses come from :mod:`grokking_llc.science.tables`.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from numpy.typing import ArrayLike

from grokking_llc.science.tables import (
    HYPERPARAMETERS,
    STATUS_INVALID,
    STATUS_NOT_A_MINIMUM,
    STATUS_VALID,
    USE_ALL,
    USE_VALID,
    status_counts,
)
from grokking_llc.science.text import fmt


def invalid_note(
    n_invalid: int, n_total: int, what: str = "estimates", *, fitted: bool = True
) -> str | None:
    """The sentence every LLC figure prints about estimates that failed the validity checks
    (``fitted``: the figure also has means or fits they are left out of)."""
    if not n_invalid:
        return None
    tail = ", left out of means and fits" if fitted else ""
    return f"{n_invalid} of {n_total} {what} not valid: drawn hollow{tail}"


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
