"""Stage entry point of ``score_claims``: the paper's claims as a table, one row per claim and
named sampler (:mod:`grokking_llc.science.claims` holds every claim and its verdict rule)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from grokking_llc.core.io import check_ids_in_path, write_parquet
from grokking_llc.science.claims import compute_claims


def _as_list(value: Any) -> list:
    return [value] if isinstance(value, str) else list(value)


def load_tracks(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"fig3": [run, ...], "fig13": [...]}``, each run ``{"train_log", "llc": {sampler:
    table}, "run"}``, from the params ``<key>_tracks`` (one entry per run drawn: its samplers
    and training settings) and the input roles ``<key>_<i>_train_log`` and ``<key>_<i>_llc``
    (one LLC table per sampler of entry i)."""
    tracks: dict[str, Any] = {}
    for key in ("fig3", "fig13"):
        runs = []
        for i, entry in enumerate(params.get(f"{key}_tracks") or []):
            log_path = inputs[f"{key}_{i}_train_log"]
            paths = _as_list(inputs[f"{key}_{i}_llc"])
            for path in [log_path, *paths]:
                check_ids_in_path(path)  # the run (and sampler) the plan named the file by
            runs.append(
                {
                    "train_log": pd.read_parquet(log_path),
                    "llc": {
                        n: pd.read_parquet(p) for n, p in zip(entry["samplers"], paths, strict=True)
                    },
                    "run": entry.get("run"),
                }
            )
        if runs:
            tracks[key] = runs
    return tracks


def run_score_claims(
    inputs: Mapping[str, Any],
    params: Mapping[str, Any],
    out_path: str,
    html_path: str | None = None,
) -> pd.DataFrame:
    """Write ``claims.parquet`` from the summary tables and Figure 3's and 13's tracks (and the
    scorecard as an HTML table for the Snakemake report)."""
    df = compute_claims(
        pd.read_parquet(inputs["runs"]),
        pd.read_parquet(inputs["training"]),
        load_tracks(inputs, params),
        params.get("theory_baseline"),
        samplers=params["samplers"],
        studies=params["studies"],
        published=params.get("published", ()),
        seed=params.get("seed", 0),
    )
    write_parquet(df, out_path)
    if html_path is not None:
        from grokking_llc.core.io import atomic_path
        from grokking_llc.report import claims_html

        with atomic_path(html_path) as tmp:
            tmp.write_text(claims_html(df))
    return df
