"""grokking_llc.science.tables: selecting runs and estimates, validity and status of each estimate
(SPEC sections 6-7), against values computed by hand or independently."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from figure_tables import (
    run_row,
)

from grokking_llc.science import gsm
from grokking_llc.science.paper import PAPER_BASELINE_RATIO, TIAN_CRITICAL_RATIO
from grokking_llc.science.tables import (
    finite_rows,
    generalised,
    llc_validity,
    run_llc,
    scaled_data_size,
    select,
)
from grokking_llc.science.text import NOT_VALIDATED

THR = gsm.GSM_THRESHOLD


THR_EDGE = 0.99  # the GSM's indicator threshold (grokking_llc.science.gsm.GSM_THRESHOLD)


def test_select_by_study_and_sampler():
    df = pd.DataFrame(
        [run_row(p=5, studies=["a"]), run_row(p=7, studies=["a", "b"], sampler="calibrated"),
         run_row(p=11, studies=["b"])]
    )  # fmt: skip
    assert select(df, study="a")["p"].tolist() == [5, 7]
    assert select(df, study="b", sampler="paper")["p"].tolist() == [11]
    assert len(select(df)) == 3


def test_run_llc_reads_validity_and_old_tables():
    df, note = run_llc(pd.DataFrame([run_row(final_llc=3.0, final_llc_valid=False)]))
    assert df["llc"].tolist() == [3.0] and df["llc_valid"].tolist() == [False] and note is None
    old = pd.DataFrame({"llc_final": [2.0, 4.0], "llc_max": [5.0, 6.0]})
    df, note = run_llc(old, "max")
    assert df["llc"].tolist() == [5.0, 6.0] and not df["llc_valid"].any()
    assert note == NOT_VALIDATED
    valid, note = llc_validity(pd.DataFrame({"llc_mean": [1.0]}))
    assert valid.tolist() == [False] and note == NOT_VALIDATED


def test_generalised_is_the_gsm_indicator():
    df = pd.DataFrame(
        {"final_train_acc": [1.0, 0.95, 0.9, 1.0], "final_val_acc": [1.0, 0.91, 1.0, 0.5]}
    )
    assert generalised(df, THR).tolist() == [True, True, False, False]
    # the same split as gsm.classify_regime's first rule on one-checkpoint curves
    for tr, va in df.itertuples(index=False):
        never = gsm.classify_regime([tr], [va]) == gsm.NO_GENERALISATION
        assert (
            generalised(pd.DataFrame({"final_train_acc": [tr], "final_val_acc": [va]}), THR)[0]
            != never
        )


def test_scaled_data_size_is_n_over_p_ln_p():
    # p = 11, n = 48: 48 / (11 * 2.397895) = 1.81978; p = 53, n = 1124: 5.3415
    x = scaled_data_size([48, 1124], [11, 53])
    assert x == pytest.approx([1.819776, 5.341530], rel=1e-5)


def test_figure_14_reference_ratios():
    """SPEC section 7 item 9: Tian (2025)'s n ~ 2.75 p ln p, and the paper's baseline
    (p = 53, train_frac 0.4, so n = 0.4 * 53^2 pairs) near n / (p ln p) = 5.3."""
    assert TIAN_CRITICAL_RATIO == 2.75
    baseline = 0.4 * 53**2 / (53 * math.log(53))
    assert PAPER_BASELINE_RATIO == pytest.approx(baseline, abs=0.05)
    assert float(scaled_data_size([0.4 * 53**2], [53])[0]) == pytest.approx(baseline)


def test_not_validated_note_reads_as_documented():
    df, note = run_llc(pd.DataFrame({"final_llc": [1.0, 2.0]}))
    assert note == "no validity column: every estimate treated as not validated"
    assert df["llc_valid"].dtype == bool and not df["llc_valid"].any()
    valid, note = llc_validity(pd.DataFrame({"llc_mean": [1.0, 2.0]}))
    assert valid.dtype == bool and valid.tolist() == [False, False]
    assert note == NOT_VALIDATED


def test_select_keeps_the_columns_and_renumbers_rows():
    table = pd.DataFrame(
        {"studies": [["a"], ["b"], ["a", "b"]], "sampler": ["x", "x", "y"], "v": [1, 2, 3]}
    )
    out = select(table, study="b", sampler="x")
    assert list(out.columns) == ["studies", "sampler", "v"]
    assert out["v"].tolist() == [2] and out.index.tolist() == [0]
    assert select(table, study="a")["v"].tolist() == [1, 3]
    assert select(table, study="a").index.tolist() == [0, 1]


def test_finite_rows_coerces_text_and_keeps_the_columns():
    df = pd.DataFrame({"a": [1.0, "x", 3.0, 4.0], "b": [1.0, 2.0, np.inf, 4.0]}, index=[5, 6, 7, 8])
    out, dropped = finite_rows(df, ["a", "b"])
    assert dropped == 2 and list(out.columns) == ["a", "b"]
    assert out.index.tolist() == [0, 1] and out["a"].tolist() == [1.0, 4.0]
    out, dropped = finite_rows(df, ["a", "missing"])
    assert dropped == 4 and out.empty and list(out.columns) == ["a", "b"]


def test_generalised_needs_both_columns_and_reads_text_as_not_generalised():
    only_train = pd.DataFrame({"final_train_acc": [1.0, 1.0]})
    assert generalised(only_train, THR_EDGE).tolist() == [False, False]
    t = pd.DataFrame({"final_train_acc": [1.0, "n/a", 1.0], "final_val_acc": [1.0, 1.0, 0.99]})
    assert generalised(t, THR_EDGE).tolist() == [True, False, False]  # strictly above


def test_run_llc_without_any_llc_column():
    df, note = run_llc(pd.DataFrame({"p": [7, 11]}), "max")
    assert df["llc"].isna().all() and df["llc_valid"].tolist() == [False, False]
    assert df["llc_valid"].dtype == bool and note == NOT_VALIDATED


def test_generalised_reads_text_in_the_validation_accuracy_as_not_generalised():
    t = pd.DataFrame({"final_train_acc": [1.0, 1.0], "final_val_acc": ["n/a", 1.0]})
    assert generalised(t, THR_EDGE).tolist() == [False, True]
