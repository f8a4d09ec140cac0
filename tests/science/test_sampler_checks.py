"""grokking_llc.science.sampler_checks: sampler grids and calibration points (SPEC sections 6-7),
against values computed by hand or independently."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from figure_tables import (
    bias_table,
    calibration_table,
)

from grokking_llc.science.fits import (
    bias_reduced_llc,
)
from grokking_llc.science.sampler_checks import (
    bias_reduced,
    calibration_points,
    sampler_sensitivity,
)
from grokking_llc.science.text import NOT_VALIDATED

NAN = math.nan


def test_bias_reduced_ignores_invalid_estimates():
    table = bias_table(intercept=4.0, slope=26.0, invalid_nbeta=(13.0,))
    table.loc[0, "llc_mean"] = 100.0  # invalid and far off the line
    res = bias_reduced(table)
    assert res["fit"]["intercept"] == pytest.approx(4.0) and res["fit"]["slope"] == pytest.approx(
        26
    )
    assert res["n"] == 5 and res["n_valid"] == 4
    none = bias_reduced(table.assign(valid=False))
    assert none["fit"] is None and "no fit" in none["skipped"]


def test_calibration_points_place_each_check_at_its_candidate():
    """The table of figure_tables.calibration_table: ladders at step 9000 (the search target);
    a check's run sits at its candidate's resolution, in its ladder's series and panel (the
    nbeta run at nbeta / 2 in the nbeta 1e4 series, the rescaled runs at kappa 256 although
    their own resolution is 1024 and 64, the MALA reference in the gn_diag panel); the step
    run at the candidate's own step is the candidate, not a check."""
    table = calibration_table()
    res = calibration_points(table)
    assert res["kinds"] == ["gn_diag", "sgld"] and res["nbetas"] == [1e4, 1e3]
    assert res["search_target"] == 1
    assert res["target_labels"] == {0: "step 1000", 1: "step 9000"}
    checks = res["checks"]
    cols = ["panel", "role", "series", "x"]
    got = sorted(map(tuple, checks[cols].to_numpy(dtype=object).tolist()))
    assert got == sorted([
        ("gn_diag", "step", 1e4, 256.0), ("gn_diag", "nbeta", 1e4, 256.0),
        ("gn_diag", "rescale x2", 1e4, 256.0), ("gn_diag", "rescale x0.5", 1e4, 256.0),
        ("gn_diag", "reference", 1e4, 256.0), ("sgld", "step", 1e4, 256.0),
        ("sgld", "nbeta", 1e4, 256.0),
    ])  # fmt: skip
    assert checks.loc[checks["role"] == "step", "lr_scaled"].tolist() == [0.2, 0.2]
    assert checks.loc[checks["role"] == "rescale x2", "resolution"].tolist() == [1024.0]
    assert len(res["ladder"]) == 10 and set(res["ladder"]["role"]) == {"ladder"}
    assert res["candidates"]["kind"].tolist() == ["gn_diag", "sgld"]
    assert res["targets"]["status"].tolist() == ["valid", "not_a_minimum"]
    assert sorted(res["chosen"]["role"]) == ["candidate", "step", "target"]
    assert res["chosen_valid"] is True and res["reason"] == table["reason"].iloc[0]
    assert (res["n"], res["n_valid"], res["n_not_a_minimum"]) == (23, 18, 1)
    assert res["notes"] == [
        "5 of 23 estimates not valid: 4 failed a check (hollow), 1 at a checkpoint that is not "
        "a minimum (grey x)"
    ]


def test_calibration_points_of_a_fallback_and_of_runs_with_labels():
    table = calibration_table().assign(chosen_valid=False)
    table.insert(0, "run_id", "quad-p5-K4-abc")
    res = calibration_points(table)
    assert res["chosen_valid"] is False
    assert res["notes"][-1] == "the chosen setting is NOT valid (the calibration's fallback)"
    assert res["target_labels"][0] == "run_id quad-p5-K4-abc, step 1000"
    # a check whose candidate is missing stays at its own resolution and series
    res = calibration_points(table[table["role"] != "candidate"])
    nbeta = res["checks"][res["checks"]["role"] == "nbeta"]
    assert nbeta["series"].tolist() == [5e3, 5e3] and nbeta["x"].tolist() == [256.0, 256.0]
    assert res["chosen_valid"] is False


def test_sampler_sensitivity():
    sens = sampler_sensitivity(
        pd.DataFrame({"localization": [1.0, 10.0, -1.0], "sampler_lr": [1e-4] * 3,
                      "llc_mean": [2.0, 1.0, 3.0], "valid": [True, False, True]})
    )  # fmt: skip
    assert sens["n"] == 2 and sens["n_valid"] == 1 and sens["all_positive"]


def test_sampler_sensitivity_counts():
    table = pd.DataFrame({
        "sampler_lr": [1e-4, 1e-4, 1e-4, 3e-4, 3e-4, NAN],
        "localization": [1.0, 1.0, 10.0, 10.0, 0.0, 1.0],
        "llc_mean": [5.0, 6.0, 7.0, -1.0, 2.0, 3.0],
        "valid": [True, False, True, True, True, True],
    })  # fmt: skip
    out = sampler_sensitivity(table)
    assert (out["n"], out["n_valid"], out["n_repeated"]) == (4, 3, 1)
    assert out["points"]["valid"].tolist() == [True, False, True, True]
    assert out["all_positive"] is False
    assert out["notes"] == [
        "dropped 2 row(s) with NaN setting / estimate (or γ <= 0)",
        "1 of 4 estimates not valid: drawn hollow",
    ]


def test_bias_reduced_points_carry_validity():
    table = pd.DataFrame({
        "nbeta": [10.0, 20.0, 40.0, 80.0], "llc_mean": [8.0, 9.0, 9.5, 1.0],
        "valid": [True, True, True, False],
    })  # fmt: skip
    out = bias_reduced(table)
    assert out["points"]["valid"].tolist() == [True, True, True, False]
    assert out["fit"]["intercept"] == pytest.approx(10.0)
    no_flag = bias_reduced(table.drop(columns=["valid"]))
    assert no_flag["points"]["valid"].tolist() == [False] * 4 and no_flag["fit"] is None


def test_calibration_points_defaults_and_notes():
    """A table without role, target or chosen_valid: every row a ladder rung at one target; a
    row without a resolution or an estimate is dropped and counted."""
    table = pd.DataFrame({
        "resolution": [64.0, 128.0, 256.0, NAN], "nbeta": [5.0] * 4,
        "localization": [1.0] * 4, "llc_mean": [1.0, 2.0, 3.0, 4.0],
        "valid": [True, False, False, True], "chosen": [None, None, None, None],
    })  # fmt: skip
    out = calibration_points(table)
    pts = out["points"]
    assert pts["chosen"].tolist() == [False] * 3 and pts["target"].tolist() == [0, 0, 0]
    assert pts["role"].tolist() == ["ladder"] * 3 and pts["panel"].tolist() == ["sgld"] * 3
    assert out["kinds"] == ["sgld"] and out["target_labels"] == {0: "target 0"}
    assert out["chosen_valid"] is None and out["reason"] == ""
    assert out["notes"] == [
        "dropped 1 row(s) without an estimate or a resolution",
        "2 of 3 estimates not valid: drawn hollow",
        "no setting chosen",
    ]
    table["chosen"] = [False, True, False, False]
    out = calibration_points(table)
    assert out["chosen_valid"] is False  # no chosen_valid column: not valid
    assert out["notes"][-1] == "the chosen setting is NOT valid (the calibration's fallback)"
    out = calibration_points(table.drop(columns=["valid"]))
    assert out["notes"][0] == NOT_VALIDATED and out["n_valid"] == 0


def test_sampler_sensitivity_without_a_validity_column():
    table = pd.DataFrame(
        {"sampler_lr": [1e-4, 3e-4], "localization": [1.0, 1.0], "llc_mean": [5.0, 6.0]}
    )
    out = sampler_sensitivity(table)
    assert out["points"]["valid"].tolist() == [False, False] and out["n_valid"] == 0
    assert out["notes"][0] == NOT_VALIDATED


def test_bias_reduced_llc_with_two_temperatures_and_notes():
    out = bias_reduced_llc([10.0, 20.0], [8.0, 9.0])  # llc = 10 - 20 / nbeta
    assert out["intercept"] == pytest.approx(10.0) and out["n"] == 2
    table = pd.DataFrame({"nbeta": [10.0, 20.0, NAN], "llc_mean": [8.0, 9.0, 1.0],
                          "valid": [True, False, True]})  # fmt: skip
    res = bias_reduced(table)
    assert res["notes"] == [
        "dropped 1 non-finite estimate(s)",
        "1 of 2 estimates not valid: drawn hollow, left out of means and fits",
        "no fit: the temperature sweep needs finite estimates at >= 2 values of nbeta",
    ]


def test_calibration_points_chosen_column_variants():
    base = {"resolution": [64.0, 128.0, 256.0], "nbeta": [5.0] * 3, "localization": [1.0] * 3,
            "llc_mean": [1.0, 2.0, 3.0], "valid": [True, True, True]}  # fmt: skip
    out = calibration_points(
        pd.DataFrame({**base, "chosen": [NAN, 1.0, 0.0], "chosen_valid": [NAN, 1.0, 0.0]})
    )
    assert out["points"]["chosen"].tolist() == [False, True, False]
    assert out["chosen"]["resolution"].tolist() == [128.0] and out["chosen_valid"] is True
    assert out["notes"] == []
    out = calibration_points(pd.DataFrame(base))
    assert out["points"]["chosen"].tolist() == [False] * 3
    assert out["notes"] == ["no setting chosen"]


def test_sampler_sensitivity_llc_std_column():
    table = pd.DataFrame({"sampler_lr": [1e-4, 3e-4], "localization": [1.0, 1.0],
                          "llc_mean": [5.0, 6.0], "llc_std": [0.5, "?"]})  # fmt: skip
    std = sampler_sensitivity(table)["points"]["llc_std"]
    assert std.dtype == np.float64 and std.iloc[0] == 0.5 and math.isnan(std.iloc[1])
    std = sampler_sensitivity(table.drop(columns=["llc_std"]))["points"]["llc_std"]
    assert std.dtype == np.float64 and std.isna().all()
