"""grokking_llc.science.scaling: LLC against p, width and lr, theory beside data (SPEC sections
6-7), against values computed by hand or independently."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from figure_tables import (
    PRIMES,
    run_row,
    runs_vs_p,
    runs_vs_width,
)

from grokking_llc.science import theory
from grokking_llc.science.generalisation import (
    fit_gsm_vs_llc,
)
from grokking_llc.science.scaling import (
    bound_per_run,
    fit_llc_vs_p,
    fit_llc_vs_width,
    lr_vs_max_llc,
    theory_curve,
    theory_quadratic,
)
from grokking_llc.science.stats import (
    group_stats,
)

THR_EDGE = 0.99  # the GSM's indicator threshold (grokking_llc.science.gsm.GSM_THRESHOLD)


NAN = math.nan


FIG1_KEYS = {
    "width", "x", "use", "points", "means", "n_runs", "n_valid", "n_used", "n_p",
    "n_dropped_nan", "slope",
    "intercept", "r2", "fit_skipped", "theory_scale", "theory_r2", "theory_slope",
    "theory_slope_scaled", "bound_scale", "bound_r2", "bound_slope", "bound_slope_scaled",
    "notes",
}  # fmt: skip


def test_fit_llc_vs_p_uses_only_valid_estimates():
    # valid runs lie on 3p + 2; invalid ones carry wild values that would move any fit
    runs = runs_vs_p(invalid={(5, 1), (13, 0)})
    runs.loc[~runs["final_llc_valid"], "final_llc"] = [900.0, -400.0]
    fit = fit_llc_vs_p(runs)
    assert fit["slope"] == pytest.approx(3.0) and fit["intercept"] == pytest.approx(2.0)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["n_runs"] == 12 and fit["n_valid"] == 10 and fit["n_p"] == 4
    means = fit["means"].set_index("p")
    assert means["mean"].tolist() == pytest.approx([3.0 * p + 2.0 for p in PRIMES])
    assert means["n"].tolist() == [2, 3, 3, 2]
    assert any("2 of 12" in n and "not valid" in n for n in fit["notes"])


def test_fit_llc_vs_p_theory_scale_is_exact_for_theory_shaped_data():
    # data = 0.01 * llc_quadratic(p, 16): every p here is under-parametrised at K = 16, so the
    # theory is K (3p - 1) / 2 with slope 3K/2 = 24 in p
    fit = fit_llc_vs_p(runs_vs_p(fn=lambda p, s: 0.01 * theory.llc_quadratic(p, 16)))
    assert fit["theory_scale"] == pytest.approx(0.01) and fit["theory_r2"] == pytest.approx(1.0)
    assert fit["theory_slope"] == pytest.approx(24.0)
    assert fit["theory_slope_scaled"] == pytest.approx(0.24) and fit["slope"] == pytest.approx(0.24)
    assert fit["bound_scale"] > 0 and len(fit["bound_points"]) == 4
    grid = np.array([6, 9])
    assert theory_curve(fit, grid) == pytest.approx(0.01 * 16 * (3 * grid - 1) / 2)


def test_fit_llc_vs_p_most_common_width_nan_and_no_valid():
    runs = pd.concat([runs_vs_p(), pd.DataFrame([run_row(p=7, width=64, final_llc=1.0),
                                                 run_row(p=13, final_llc=math.nan)])])  # fmt: skip
    fit = fit_llc_vs_p(runs)
    assert fit["width"] == 16 and fit["n_runs"] == 12 and fit["n_dropped_nan"] == 1
    assert any("most common" in n for n in fit["notes"])
    none_valid = fit_llc_vs_p(runs_vs_p().assign(final_llc_valid=False))
    assert math.isnan(none_valid["slope"]) and none_valid["n_valid"] == 0
    assert none_valid["fit_skipped"] == "no valid final LLC estimate"


def test_fit_llc_vs_width_proportional_constant():
    runs = runs_vs_width(lambda k, s: 5.0 * k, invalid={(8, 2)})
    runs.loc[~runs["final_llc_valid"], "final_llc"] = 1e4
    fit = fit_llc_vs_width(runs)
    assert fit["prop_c"] == pytest.approx(5.0) and fit["prop_r2"] == pytest.approx(1.0)
    assert fit["slope"] == pytest.approx(5.0) and fit["intercept"] == pytest.approx(0, abs=1e-9)
    assert fit["p"] == 11 and fit["n_width"] == 4 and fit["n_valid"] == 11
    # p = 11 is under-parametrised at these widths: theory = 16 K
    assert fit["theory_scale"] == pytest.approx(5.0 / 16.0)


def test_lr_vs_max_llc_means_over_valid_runs():
    rows = [run_row(lr=lr, seed=s, max_llc=100.0 * s + 1e4 * lr, max_llc_valid=s != 2)
            for lr in (1e-4, 1e-3, 1e-2) for s in (0, 1, 2)]  # fmt: skip
    res = lr_vs_max_llc(pd.DataFrame(rows))
    d = res["per_wd"][1e-4]
    assert d["means"]["mean"].tolist() == pytest.approx(
        [50.0 + 1e4 * lr for lr in (1e-4, 1e-3, 1e-2)]
    )
    # valid y = 1, 101 | 10, 110 | 100, 200: ranks of lr 1.5 1.5 3.5 3.5 5.5 5.5 and of y
    # 1 4 2 5 3 6 -> sum dx dy = 8, sum dx^2 = 16, sum dy^2 = 17.5
    assert d["spearman"] == pytest.approx(8.0 / math.sqrt(16.0 * 17.5))
    assert d["n_valid"] == 6 and res["n_valid"] == 6


def test_theory_helpers():
    assert theory_quadratic([7, 7], [8, 16]).tolist() == [
        theory.llc_quadratic(7, 8),
        theory.llc_quadratic(7, 16),
    ]
    fit = {"x": "width", "p": 7, "theory_scale": 2.0}
    assert theory_curve(fit, [8, 16]).tolist() == [
        2.0 * theory.llc_quadratic(7, 8),
        2.0 * theory.llc_quadratic(7, 16),
    ]
    df = pd.DataFrame(
        {"p": [7, 11], "width": [16, 8], "train_frac": [0.6, 0.4], "data_seed": [0, 1]}
    )
    bound, note = bound_per_run(df)
    assert note is None
    assert bound.tolist() == [
        theory.data_restricted_bound(7, 16, train_frac=0.6, seed=0),
        theory.data_restricted_bound(11, 8, train_frac=0.4, seed=1),
    ]


def test_fit_llc_vs_p_with_two_primes():
    runs = pd.DataFrame(
        [run_row(p=p, seed=s, final_llc=3.0 * p + s) for p in (7, 11) for s in (0, 1)]
    )
    out = fit_llc_vs_p(runs)
    assert set(out) == FIG1_KEYS | {"bound_points"}
    assert out["slope"] == pytest.approx(3.0) and out["intercept"] == pytest.approx(0.5)
    assert out["fit_skipped"] is None and out["notes"] == []
    assert (out["n_runs"], out["n_valid"], out["n_p"]) == (4, 4, 2)


def test_fit_llc_vs_p_with_one_prime_says_why_no_line():
    runs = pd.DataFrame(
        [run_row(p=7, seed=s, final_llc=20.0 + s, final_llc_valid=s < 2) for s in range(3)]
    )
    out = fit_llc_vs_p(runs)
    why = "fits skipped: 1 distinct p value(s) with a valid estimate, need 2"
    assert out["fit_skipped"] == why
    assert out["notes"] == [
        "1 of 3 final LLC estimates not valid: drawn hollow, left out of means and fits",
        why,
    ]
    assert "n" not in out and math.isnan(out["slope"])


def test_fit_llc_vs_p_without_valid_estimates_or_bound_columns():
    runs = pd.DataFrame([run_row(p=p, final_llc_valid=False) for p in (7, 11)])
    out = fit_llc_vs_p(runs.drop(columns=["train_frac"]))
    assert set(out) == FIG1_KEYS
    assert out["fit_skipped"] == "no valid final LLC estimate"
    assert out["notes"] == [
        "2 of 2 final LLC estimates not valid: drawn hollow, left out of means and fits",
        "no valid final LLC estimate",
    ]
    assert all(math.isnan(out[f"bound_{k}"]) for k in ("scale", "r2", "slope", "slope_scaled"))
    empty = fit_llc_vs_p(runs.iloc[:0])
    assert empty["fit_skipped"] == "no runs with a finite final LLC"
    assert empty["notes"] == ["no runs with a finite final LLC"]
    assert set(empty) == FIG1_KEYS and empty["n_valid"] == 0


def test_the_most_common_width_is_named_with_the_others():
    runs = pd.DataFrame(
        [run_row(p=p, width=16, final_llc=float(p)) for p in (7, 11)]
        + [run_row(p=7, width=32, final_llc=1.0)]
    )
    out = fit_llc_vs_p(runs)
    assert out["width"] == 16
    assert "2 values of width present (16, 32); using the most common, width = 16" in out["notes"]


def test_lr_vs_max_llc_counts_and_notes():
    rows = [run_row(lr=lr, seed=s, max_llc=10.0 * lr) for lr in (1e-3, 2e-3) for s in (0, 1)]
    rows += [run_row(lr=0.0), run_row(lr=1e-3, max_llc=NAN), run_row(lr=1e-3, max_llc_valid=False)]
    out = lr_vs_max_llc(pd.DataFrame(rows))
    assert (out["n_runs"], out["n_valid"], out["n_dropped_nan"]) == (5, 4, 2)
    assert out["notes"] == [
        "dropped 2 run(s) with NaN lr / max LLC / weight decay (or lr <= 0)",
        "1 of 5 maximum-LLC estimates not valid: drawn hollow, left out of means and fits",
    ]
    assert set(out) == {
        "use", "points", "per_wd", "n_runs", "n_valid", "n_used", "n_dropped_nan", "notes",
    }  # fmt: skip


def test_bound_per_run_uses_each_runs_data_seed():
    """Sparse splits where the data seed changes the bound (graph components differ)."""
    df = pd.DataFrame({"p": [7, 7, 5], "width": [2, 2, 1], "train_frac": [0.3, 0.3, 0.3],
                       "data_seed": [3, 0, 1]})  # fmt: skip
    bound, _ = bound_per_run(df)
    expected = [theory.data_restricted_bound(7, 2, train_frac=0.3, seed=3),
                theory.data_restricted_bound(7, 2, train_frac=0.3, seed=0),
                theory.data_restricted_bound(5, 1, train_frac=0.3, seed=1)]  # fmt: skip
    assert bound.tolist() == expected
    assert expected[0] != expected[1]


def test_group_orders_and_columns():
    g = group_stats(pd.DataFrame({"x": [2, 1, 1], "y": [1.0, 2.0, 4.0]}), "x", "y")
    assert list(g.columns) == ["x", "mean", "std", "n"] and g["x"].tolist() == [1, 2]
    rows = [run_row(p=p, seed=s, final_llc=3.0 * p + s, lr=1e-3 * (1 + s))
            for p in (11, 7) for s in (0, 1)]  # fmt: skip
    out = fit_llc_vs_p(pd.DataFrame(rows))
    assert out["bound_points"]["p"].tolist() == [7, 11]
    assert "mixed: lr in {0.001, 0.002}" in out["notes"]
    wd_rows = [
        run_row(
            weight_decay=wd,
            seed=s,
            lr=1e-3 * (1 + s),
            final_llc=1.0 + s + wd,
            gsm=0.5 + s,
            max_llc=2.0 + s,
        )
        for wd in (1e-3, 1e-4)
        for s in (0, 1)
    ]
    wd_rows.append(run_row(weight_decay=1e-2, max_llc_valid=False))
    gv = fit_gsm_vs_llc(pd.DataFrame(wd_rows[:4]), THR_EDGE)
    assert list(gv["per_wd"]) == [1e-4, 1e-3]
    assert gv["notes"] == []
    h3 = lr_vs_max_llc(pd.DataFrame(wd_rows))
    assert list(h3["per_wd"]) == [1e-4, 1e-3, 1e-2]
    assert math.isnan(h3["per_wd"][1e-2]["spearman"]) and h3["per_wd"][1e-2]["n_valid"] == 0
    assert "index" not in h3["points"]
    assert not any("weight_decay in" in n for n in h3["notes"])


def test_fit_llc_vs_width_skipped_fit_keeps_its_keys():
    out = fit_llc_vs_width(pd.DataFrame([run_row(width=16, seed=s) for s in (0, 1)]))
    assert out["fit_skipped"] is not None
    assert math.isnan(out["prop_c"]) and math.isnan(out["prop_r2"])
