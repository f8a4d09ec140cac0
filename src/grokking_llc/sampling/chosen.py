"""The setting a calibration chose, read back from its table (SPEC section 10).

Apart from :mod:`grokking_llc.sampling.calibrate` (the search and its checks) so that the LLC
stage, which only reads a calibration's table, does not take the search into its code version.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd


def chosen_sampler(table: pd.DataFrame) -> tuple[dict[str, Any], bool, str]:
    """The settings a calibration table chose (its ``chosen`` rows' ``settings``), whether they
    are valid, and the calibration's reason. Raises ValueError when nothing was chosen."""
    rows = _chosen_rows(table)
    if rows.empty:
        reason = str(table["reason"].iloc[0]) if "reason" in table and len(table) else ""
        raise ValueError(f"the calibration chose no setting: {reason}")
    settings = {json.dumps(json.loads(s), sort_keys=True) for s in rows["settings"]}
    if len(settings) != 1:
        raise ValueError(f"the calibration table marks {len(settings)} different settings")
    return (
        json.loads(settings.pop()),
        bool(rows["chosen_valid"].fillna(False).astype(bool).all()),
        str(rows["reason"].iloc[0]),
    )


def chosen_edge_fraction(table: pd.DataFrame) -> float | None:
    """The fraction of the stability edge (``lr_scaled``, SPEC section 10) the chosen setting's
    step was set at, or None when the table does not say (a single value over the chosen rows
    at the search's own scale)."""
    if "lr_scaled" not in table:
        return None
    rows = _chosen_rows(table)
    if "rescale" in rows:
        rows = rows[rows["rescale"] == 1.0]
    values = {float(v) for v in rows["lr_scaled"].dropna()}
    return values.pop() if len(values) == 1 else None


def _chosen_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows a calibration table marks ``chosen`` (none without that column)."""
    if "chosen" not in table:
        return table.iloc[:0]
    return table[table["chosen"].fillna(False).astype(bool)]
