"""Stage entry point of ``gather_llc``: the chunks of one LLC track in one table. It needs only
pandas, so the rule runs inside Snakemake's own process (no interpreter start-up per track)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from grokking_llc.io import write_parquet


def run_gather_llc(paths: Sequence[str], out_path: str, *, expected_rows: int | None = None):
    """Rule ``gather_llc``: the chunks of a track in one table, sorted by step."""
    frames = [pd.read_parquet(p) for p in paths]
    # empty chunks carry no dtypes worth keeping (concatenating them would make columns object)
    df = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    if df["step"].duplicated().any():
        raise ValueError(f"chunks of {out_path} overlap: a step appears twice")
    if expected_rows is not None and len(df) != expected_rows:
        raise ValueError(f"{out_path}: {len(df)} rows from the chunks, expected {expected_rows}")
    df = df.sort_values("step", ignore_index=True)
    write_parquet(df, out_path)
    return df
