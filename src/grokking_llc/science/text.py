"""How numbers read in a sentence, and the few sentences that claims' reasons and figure notes
share (the figures' own note sentences are in :mod:`grokking_llc.figures.notes`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from grokking_llc.science.fits import (
    FIT_ABSURD,
    FIT_NO_CURVATURE,
    FIT_OK,
    FIT_SKIPPED,
    FIT_TOO_FAST,
)

# A table without a validity flag: no estimate counts as valid (issue 10).
NOT_VALIDATED = "no validity column: every estimate treated as not validated"


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


def fmt_step(step: Any) -> str:
    """A training step for a note or a reason: the number, or "never" for an event that did
    not happen (NaN)."""
    try:
        v = float(step)
    except (TypeError, ValueError):
        return str(step)
    return "never" if math.isnan(v) else fmt(v, 8)


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
