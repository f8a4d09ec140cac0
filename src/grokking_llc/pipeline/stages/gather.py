"""Stage entry point of ``gather_llc``: the chunks of one LLC track in one table. It needs only
pandas, so the rule runs inside Snakemake's own process (no interpreter start-up per track)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from grokking_llc.core.io import ProvenanceError, parquet_provenance, read_parquet, write_parquet


def run_gather_llc(
    paths: Sequence[str],
    out_path: str,
    *,
    expected_rows: int | None = None,
    provenance: Mapping[str, Any] | None = None,
):
    """Rule ``gather_llc``: the chunks of a track in one table, sorted by step, carrying the
    chunks' provenance. With ``provenance`` (the plan's: run id, sampler id, settings hash)
    every chunk must carry it; without, the chunks must at least agree with each other."""
    if provenance is None and paths:
        provenance = parquet_provenance(paths[0])
        for p in paths[1:]:
            if parquet_provenance(p) != provenance:
                raise ProvenanceError(
                    f"chunks of {out_path} disagree on whose they are: {paths[0]} and {p} "
                    "carry different provenance"
                )
    frames = [read_parquet(p, expect=provenance) for p in paths]
    # empty chunks carry no dtypes worth keeping (concatenating them would make columns object)
    df = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    if df["step"].duplicated().any():
        raise ValueError(f"chunks of {out_path} overlap: a step appears twice")
    if expected_rows is not None and len(df) != expected_rows:
        raise ValueError(f"{out_path}: {len(df)} rows from the chunks, expected {expected_rows}")
    df = df.sort_values("step", ignore_index=True)
    write_parquet(df, out_path, provenance=provenance)
    return df
