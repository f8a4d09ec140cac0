"""Stage entry point of ``make_split``: the seeded modular-addition split (SPEC section 1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grokking_llc.core.data import make_split
from grokking_llc.core.io import write_parquet


def run_make_split(params: Mapping[str, Any], out_path: str) -> None:
    """Write the split of ``params`` (p, train_frac, seed) as Parquet, atomically."""
    write_parquet(make_split(**params), out_path)
