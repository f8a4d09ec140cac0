"""The README quotes the pipeline, not prose: its results region is the scorecard table
(docs/claims.parquet, the default run's copy) rendered by grokking_llc.report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from grokking_llc.report import readme_is_current, readme_region

REPO = Path(__file__).resolve().parents[2]


def test_readme_results_region_matches_the_scorecard():
    claims = pd.read_parquet(REPO / "docs" / "claims.parquet")
    text = (REPO / "README.md").read_text()
    assert readme_region(text).strip(), "the README's claims region is empty: run `make results`"
    assert readme_is_current(text, claims), "README differs from docs/claims.parquet (make results)"


def test_every_claim_of_the_issue_is_in_the_scorecard():
    claims = pd.read_parquet(REPO / "docs" / "claims.parquet")
    expected = {
        "fig1_linear_in_p", "fig2_proportional_to_width", "fig3_llc_falls_with_generalisation",
        "fig4_gsm_decays_with_lr", "h3_max_llc_decreases_with_lr", "gsm_linear_in_llc",
        "fig14_regime_boundary", "fig13_transformer_llc_tracks_test_loss", "theory_count",
    }  # fmt: skip
    assert expected <= set(claims["claim"])
    assert set(claims["verdict"]) <= {"holds", "fails", "inconclusive"}
