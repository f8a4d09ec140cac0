"""Tests of grokking_llc.science.analysis against hand-computed values (SPEC sections 4-7)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from figure_tables import (
    PRIMES,
    bias_table,
    calibration_table,
    gsm_runs,
    llc_track,
    run_row,
    runs_vs_p,
    runs_vs_width,
    train_log,
)

from grokking_llc.science import gsm, theory
from grokking_llc.science.fits import (
    exponential_curve,
    fit_exponential_decay,
    fit_linear,
    fit_proportional,
)
from grokking_llc.science.generalisation import fit_gsm_vs_llc, fit_lr_vs_gsm, regime_boundary
from grokking_llc.science.sampler_checks import (
    bias_reduced,
    calibration_points,
    sampler_sensitivity,
)
from grokking_llc.science.scaling import fit_llc_vs_p, fit_llc_vs_width, lr_vs_max_llc, theory_curve
from grokking_llc.science.stats import (
    average_ranks,
    bias_corrected_interval,
    bootstrap,
    first_step_reaching,
    group_stats,
    r_squared,
    spearman,
    spearman_ci,
)
from grokking_llc.science.tables import generalised, llc_validity, run_llc, scaled_data_size, select
from grokking_llc.science.text import NOT_VALIDATED, describe_exponential
from grokking_llc.science.trajectory import track_statistics

THR = gsm.GSM_THRESHOLD

# --------------------------------------------------------------------------- basics


def test_r_squared_by_hand():
    # y = 0, 0, 3 (mean 1, SST 6); fitted -0.5, 1, 2.5: SSE 0.25 + 1 + 0.25 = 1.5 -> 0.75
    assert r_squared([0.0, 0.0, 3.0], [-0.5, 1.0, 2.5]) == pytest.approx(0.75)
    # fitted values that miss the mean give a negative R^2: SSE 2 + 2 + 8 = 12 -> 1 - 12/6
    assert r_squared([0.0, 0.0, 3.0], [2.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert math.isnan(r_squared([2.0, 2.0], [1.0, 3.0]))


def test_first_step_reaching():
    acc = [0.1, 0.5, 0.99, 0.98, 1.0]
    steps = [100, 200, 300, 400, 500]
    assert first_step_reaching(steps, acc, 0.99) == 300.0  # equality counts (>=)
    assert first_step_reaching(steps, acc, 0.995) == 500.0
    assert math.isnan(first_step_reaching(steps, [0.1] * 5, 0.99))
    with pytest.raises(ValueError, match="increasing"):
        first_step_reaching([100, 100, 200], [1.0] * 3, 0.5)
    with pytest.raises(ValueError, match="equal lengths"):
        first_step_reaching([100, 200], [1.0] * 3, 0.5)


def test_group_stats_mean_std_count():
    df = pd.DataFrame({"x": [1, 1, 1, 2, 3, 3], "y": [1.0, 2.0, 6.0, 5.0, 4.0, 8.0]})
    g = group_stats(df, "x", "y").set_index("x")
    assert g.loc[1, "mean"] == pytest.approx(3.0)
    # ddof=1: deviations -2, -1, 3 -> (4 + 1 + 9) / 2 = 7
    assert g.loc[1, "std"] == pytest.approx(math.sqrt(7.0))
    assert g.loc[3, "mean"] == pytest.approx(6.0) and g.loc[3, "std"] == pytest.approx(math.sqrt(8))
    assert math.isnan(g.loc[2, "std"]) and g.loc[2, "n"] == 1
    assert g["n"].tolist() == [3, 1, 2]


def test_spearman_by_hand_and_ties():
    # no ties: d = -1, 1, -1, 1, 0 -> 1 - 6 * 4 / (5 * 24) = 0.8
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # ties: ranks x = 1, 2.5, 2.5, 4 and y = 1, 3, 2, 4 -> 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert average_ranks([10, 30, 20, 20]).tolist() == [1.0, 4.0, 2.5, 2.5]
    # rank based: any increasing transform gives 1, a decreasing one -1
    x = np.array([0.1, 0.5, 2.0, 3.0, 7.0])
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [2, 1]))
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))


def test_spearman_ci_fisher_z():
    # rho 0.5, n 28: z = 0.549306, se = sqrt(1.06 / 25) = 0.205913, half = 1.959964 * se
    lo, hi = spearman_ci(0.5, 28)
    assert lo == pytest.approx(math.tanh(0.549306 - 0.403582), abs=1e-5)
    assert hi == pytest.approx(math.tanh(0.549306 + 0.403582), abs=1e-5)
    assert lo == pytest.approx(0.1447, abs=1e-4) and hi == pytest.approx(0.7411, abs=1e-4)
    lo90, hi90 = spearman_ci(0.5, 28, level=0.9)
    assert lo < lo90 < 0.5 < hi90 < hi
    assert all(math.isnan(v) for v in spearman_ci(0.5, 3))
    assert spearman_ci(1.0, 10) == (1.0, 1.0)


# --------------------------------------------------------------------------- fits


def test_fit_linear_by_hand_and_degenerate_inputs():
    fit = fit_linear([0.0, 1.0, 2.0], [0.0, 0.0, 3.0])
    assert fit["slope"] == pytest.approx(1.5) and fit["intercept"] == pytest.approx(-0.5)
    assert fit["r2"] == pytest.approx(0.75) and fit["n"] == 3
    llc = np.array([20.0, 25.0, 30.0, 41.0])
    paper = fit_linear(llc, 0.1288 * llc - 2.098)  # SPEC section 6's line
    assert paper["slope"] == pytest.approx(0.1288) and paper["intercept"] == pytest.approx(-2.098)
    flat = fit_linear([0.0, 1.0, 2.0], [2.0, 2.0, 2.0])
    assert flat["slope"] == pytest.approx(0.0, abs=1e-12) and math.isnan(flat["r2"])
    with pytest.raises(ValueError, match="at least 2 distinct"):
        fit_linear([1.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        fit_linear([0.0, 1.0, float("nan")], [0.0, 1.0, 2.0])


def test_fit_proportional_by_hand():
    # c = (1*2 + 2*4 + 3*7) / (1 + 4 + 9) = 31/14; fitted 31/14 * x; y mean 13/3
    fit = fit_proportional([1.0, 2.0, 3.0], [2.0, 4.0, 7.0])
    c = 31.0 / 14.0
    sse = (2 - c) ** 2 + (4 - 2 * c) ** 2 + (7 - 3 * c) ** 2
    sst = (2 - 13 / 3) ** 2 + (4 - 13 / 3) ** 2 + (7 - 13 / 3) ** 2
    assert fit["c"] == pytest.approx(c) and fit["r2"] == pytest.approx(1 - sse / sst)
    with pytest.raises(ValueError, match="every x is 0"):
        fit_proportional([0.0, 0.0], [1.0, 2.0])


def test_exponential_fit_recovers_parameters():
    lr = np.geomspace(1e-4, 1e-2, 9)
    fit = fit_exponential_decay(lr, 0.4 * np.exp(-300.0 * lr) + 0.02)
    assert fit["a"] == pytest.approx(0.4, rel=1e-5) and fit["b"] == pytest.approx(300.0, rel=1e-5)
    assert fit["c"] == pytest.approx(0.02, abs=1e-6) and fit["r2"] == pytest.approx(1.0, abs=1e-9)
    assert fit["status"] == "ok" and fit["usable"] is True
    grid = np.array([2e-4, 3e-3])
    expected = 0.4 * np.exp(-300.0 * grid) + 0.02
    assert exponential_curve(fit, grid) == pytest.approx(expected, rel=1e-5)
    x = np.linspace(2.0, 7.0, 6)
    nooff = fit_exponential_decay(x, 1.5 * np.exp(-0.7 * x), offset=False)
    assert nooff["a"] == pytest.approx(1.5, rel=1e-5) and nooff["b"] == pytest.approx(0.7, rel=1e-5)
    assert nooff["c"] == 0.0


def test_exponential_fit_with_noise_is_close():
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 4.0, 40)
    fit = fit_exponential_decay(x, 2.0 * np.exp(-1.3 * x) + 0.5 + rng.normal(0, 0.01, 40))
    assert fit["b"] == pytest.approx(1.3, rel=0.05) and 0.99 < fit["r2"] < 1.0
    assert fit["usable"]


def test_exponential_fit_reports_unusable_fits():
    # a straight line: no curvature, a and c trade off without bound
    line = fit_exponential_decay([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0])
    assert line["status"] == "no_curvature" and not line["usable"]
    assert line["r2"] == pytest.approx(1.0, abs=1e-6)
    # a drop within the first spacing: the rate is not resolved
    step = fit_exponential_decay([0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 0, 0, 0, 0])
    assert step["status"] == "too_fast" and not step["usable"]
    # issue 11's weight-decay-1e-5 panel: never-generalised runs (GSM 0) averaged in at the
    # smallest lr make a jump the fit can only match with a = -1e14-ish
    lr = np.repeat([1e-4, 2e-4, 5e-4, 1e-3], 3)
    y = np.array([0, 0, 0.5, 0.45, 0.44, 0.46, 0.3, 0.31, 0.29, 0.25, 0.24, 0.26])
    bad = fit_exponential_decay(lr, y)
    assert abs(bad["a"]) > 1e12 and not bad["usable"]
    assert bad["status"] in ("too_fast", "absurd")
    assert "not usable" in describe_exponential(bad)
    # far from the origin a = A exp(b x0) overflows: the curve is fine, "a" is absurd
    x = 1000.0 + np.arange(6.0)
    far = fit_exponential_decay(x, 3.0 * np.exp(-0.9 * (x - 1000.0)) + 1.0)
    assert far["a"] == math.inf and far["status"] == "absurd"
    assert far["a_at_x_min"] == pytest.approx(3.0, rel=1e-5)


def test_exponential_fit_degenerate_inputs_raise():
    with pytest.raises(ValueError, match="at least 3 distinct"):
        fit_exponential_decay([1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="at least 2 distinct"):
        fit_exponential_decay([1.0], [1.0], offset=False)
    with pytest.raises(ValueError, match="equal lengths"):
        fit_exponential_decay([1.0, 2.0, 3.0], [1.0, 0.5])


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_resamples_within_each_setting():
    # group a: all 1.0; group b: 0 and 2. A replicate keeps 1 row of a... no: 3 rows of a and
    # 2 rows of b; the mean of b's rows is 0, 1 or 2 with probabilities 1/4, 1/2, 1/4.
    df = pd.DataFrame({"g": ["a", "a", "a", "b", "b"], "y": [1.0, 1.0, 1.0, 0.0, 2.0]})
    seen: list[tuple[int, int, float, float]] = []

    def stat(d: pd.DataFrame) -> dict[str, float]:
        a, b = d[d["g"] == "a"], d[d["g"] == "b"]
        seen.append((len(a), len(b), a["y"].mean(), b["y"].mean()))
        return {"a": a["y"].mean(), "b": b["y"].mean()}

    out = bootstrap(df, stat, by="g", n_boot=1500, seed=3)
    reps = np.array(seen[1:])
    assert np.all(reps[:, 0] == 3) and np.all(reps[:, 1] == 2)  # sizes per setting kept
    assert np.all(reps[:, 2] == 1.0)  # never draws b's rows into a
    frac0 = np.mean(reps[:, 3] == 0.0)
    assert frac0 == pytest.approx(0.25, abs=0.04)
    assert out["b"]["value"] == 1.0 and out["b"]["ci_low"] == 0.0 and out["b"]["ci_high"] == 2.0
    assert out["a"]["ci_low"] == out["a"]["ci_high"] == 1.0
    assert out["a"]["n_boot"] == 1500 and out["a"]["n_failed"] == 0


def test_bootstrap_is_seeded_and_counts_failures():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"g": np.repeat([0, 1, 2], 4), "y": rng.normal(size=12)})

    def mean_y(d):
        return d["y"].mean()

    one = bootstrap(df, mean_y, by="g", n_boot=300, seed=5)["value"]
    two = bootstrap(df, mean_y, by="g", n_boot=300, seed=5)["value"]
    other = bootstrap(df, mean_y, by="g", n_boot=300, seed=6)["value"]
    assert one == two and one["ci_low"] != other["ci_low"]
    assert one["value"] == pytest.approx(df["y"].mean())
    assert one["ci_low"] < one["value"] < one["ci_high"]

    def picky(d):
        if d["y"].iloc[0] == df["y"].iloc[0]:
            raise ValueError("degenerate")
        return d["y"].mean()

    res = bootstrap(df, picky, by="g", n_boot=400, seed=1)["value"]
    # the first row of group 0 is drawn first with probability 1/4
    assert res["n_failed"] == pytest.approx(100, abs=40)
    assert res["n_boot"] + res["n_failed"] == 400


def test_bias_corrected_interval_on_a_known_skewed_distribution():
    # replicates on a fine quantile grid of a lognormal: q(u) = exp(Phi^-1(u))
    phi = NormalDist()
    u = (np.arange(100_000) + 0.5) / 100_000
    reps = np.exp([phi.inv_cdf(v) for v in u])
    # the median: no bias, the percentile interval exp(-+1.96)
    lo, hi, z0 = bias_corrected_interval(reps, 1.0)
    assert z0 == pytest.approx(0.0, abs=1e-4)
    assert (lo, hi) == (
        pytest.approx(math.exp(-1.96), rel=2e-3),
        pytest.approx(math.exp(1.96), rel=2e-3),
    )
    # an estimate at the 84.13% quantile (e^1): z0 = 1, ends at Phi(2 -+ 1.96)
    lo, hi, z0 = bias_corrected_interval(reps, math.e)
    assert z0 == pytest.approx(1.0, abs=1e-3)
    assert lo == pytest.approx(math.exp(2.0 - 1.959964), rel=5e-3)
    assert hi == pytest.approx(math.exp(2.0 + 1.959964), rel=5e-2)
    assert lo > np.quantile(reps, 0.025) and hi > np.quantile(reps, 0.975)  # shifted up
    # degenerate inputs
    assert all(math.isnan(v) for v in bias_corrected_interval([], 1.0))
    lo, hi, z0 = bias_corrected_interval([1.0, 2.0, 3.0], math.nan)
    assert (lo, hi) == (pytest.approx(1.05), pytest.approx(2.95)) and math.isnan(z0)


def test_bootstrap_of_a_plug_in_variance_corrects_its_downward_bias():
    # the plug-in variance (ddof=0) of a resample is biased low by a factor (n-1)/n and skewed
    # right: most replicates fall below the estimate, z0 > 0, the interval reaches higher
    y = np.random.default_rng(4).exponential(size=12)
    df = pd.DataFrame({"g": 0, "y": y})
    out = bootstrap(df, lambda d: float(np.var(d["y"])), by="g", n_boot=2000, seed=0)
    v = out["value"]
    assert v["value"] == pytest.approx(float(np.var(y))) and v["z0"] > 0.1
    reps_rng = np.random.default_rng(0)
    reps = np.asarray(
        [np.var(y[reps_rng.choice(np.arange(12), size=12, replace=True)]) for _ in range(2000)]
    )
    frac = np.mean(reps < v["value"]) + 0.5 * np.mean(reps == v["value"])
    assert frac > 0.5 and v["z0"] == pytest.approx(NormalDist().inv_cdf(frac))
    assert v["ci_high"] > np.quantile(reps, 0.975)  # the bias-corrected upper end
    assert v["ci_low"] == pytest.approx(np.quantile(reps, 0.025))  # never narrower
    assert v["ci_low"] <= v["value"] <= v["ci_high"]


def test_bootstrap_interval_contains_its_estimate_at_figure_4s_edge():
    # issue 20: rho -0.972 over 4 learning rates x 3 seeds had the percentile interval
    # [-0.989, -0.973], which excludes it (resamples that drop one of a swapped pair order
    # perfectly); the reported interval contains it
    rng = np.random.default_rng(0)
    rows = [(lr, 10.0 - 2.0 * i + rng.normal(0.0, 0.8))
            for i, lr in enumerate([1e-4, 2e-4, 5e-4, 1e-3]) for _ in range(3)]  # fmt: skip
    df = pd.DataFrame(rows, columns=["lr", "gsm"])

    def rho(d):
        return spearman(d["lr"], d["gsm"])

    v = bootstrap(df, rho, by="lr", n_boot=2000, seed=0)["value"]
    assert v["value"] == pytest.approx(-0.972, abs=5e-4)
    assert v["z0"] > 2.5  # 99.8% of the replicates below the estimate
    assert v["ci_low"] == pytest.approx(-0.989, abs=5e-4)
    assert v["ci_high"] == v["value"]


# --------------------------------------------------------------------------- tables


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


# --------------------------------------------------------------------------- Figures 1, 2


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


# --------------------------------------------------------------------------- Figure 4, H.3, Sec. 6


def test_fit_lr_vs_gsm_leaves_never_generalised_runs_out():
    never = {(1e-4, 1e-4, 0), (3e-4, 1e-4, 2)}
    runs = gsm_runs(lambda lr, wd, s: 0.8 * math.exp(-300.0 * lr) + 0.05, never=never)
    fits = fit_lr_vs_gsm(runs, THR)
    assert sorted(fits) == [1e-4, 1e-3]
    f = fits[1e-4]
    assert f["b"] == pytest.approx(300.0, rel=1e-4) and f["a"] == pytest.approx(0.8, rel=1e-4)
    assert f["usable"] and f["n_runs"] == 15 and f["n_generalised"] == 13 and f["n_never"] == 2
    never_tab = f["never"].set_index("lr")
    assert never_tab.loc[1e-4, "n_never"] == 1 and never_tab.loc[1e-2, "n_never"] == 0
    assert never_tab["n_runs"].tolist() == [3] * 5
    # the means are over generalised runs only (GSM 0 would pull lr 1e-4 down)
    m = f["means"].set_index("lr")
    assert m.loc[1e-4, "mean"] == pytest.approx(0.8 * math.exp(-0.03) + 0.05)
    assert m.loc[1e-4, "n"] == 2


def test_fit_lr_vs_gsm_skips_with_too_few_learning_rates():
    runs = gsm_runs(lambda lr, wd, s: 0.1, lrs=(1e-4, 1e-3), wds=(1e-4,))
    f = fit_lr_vs_gsm(runs, THR)[1e-4]
    assert f["status"] == "skipped" and not f["usable"] and "need 3" in f["skipped"]


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


def test_fit_gsm_vs_llc_pooled_and_per_weight_decay():
    rows = []
    for wd, (slope, icpt) in {1e-5: (0.5, -1.0), 1e-4: (0.1, 2.0)}.items():
        for i, llc in enumerate([2.0, 4.0, 6.0, 8.0]):
            rows.append(run_row(weight_decay=wd, lr=1e-4 * (i + 1), final_llc=llc,
                                gsm=slope * llc + icpt))  # fmt: skip
    rows.append(run_row(weight_decay=1e-5, final_llc=3.0, gsm=50.0, final_llc_valid=False))
    rows.append(run_row(weight_decay=1e-5, final_llc=5.0, gsm=0.0, final_val_acc=0.2))
    res = fit_gsm_vs_llc(pd.DataFrame(rows), THR)
    assert res["per_wd"][1e-5]["slope"] == pytest.approx(0.5)
    assert res["per_wd"][1e-5]["intercept"] == pytest.approx(-1.0)
    assert res["per_wd"][1e-4]["slope"] == pytest.approx(0.1)
    ok = pd.DataFrame(rows[:8])
    ref = np.polyfit(ok["final_llc"], ok["gsm"], 1)
    assert res["pooled"]["slope"] == pytest.approx(ref[0])
    assert res["pooled"]["intercept"] == pytest.approx(ref[1])
    assert res["n_valid"] == 8 and res["n_never"] == 1 and res["n_invalid"] == 1


# --------------------------------------------------------------------------- Figure 14


def _regime_table(threshold_by_p: dict[int, float], seeds=(0, 1, 2)) -> pd.DataFrame:
    rows = []
    for p, thr_x in threshold_by_p.items():
        for frac in (0.15, 0.25, 0.35, 0.5):
            n = round(frac * p * p)
            x = n / (p * math.log(p))
            for s in seeds:
                gen = x > thr_x + (0.5 if s == 2 else 0.0)  # one seed of three lags
                rows.append(run_row(p=p, train_frac=frac, n_train=n, seed=s,
                                    final_val_acc=1.0 if gen else 0.1))  # fmt: skip
    return pd.DataFrame(rows)


def test_regime_boundary_brackets():
    # p = 23: x = 1.10, 1.83, 2.57, 3.66; p = 53: x = 2.00, 3.34, 4.67, 6.67. Seeds 0 and 1
    # generalise above the threshold, seed 2 only 0.5 above it: 2 of 3 suffice
    res = regime_boundary(_regime_table({23: 2.0, 53: 3.0}), THR)
    per_p = res["per_p"].set_index("p")
    # (n = 132, 185 at p = 23; 421, 702 at p = 53; x = n / (p ln p))
    assert per_p.loc[23, "x_fail"] == pytest.approx(1.830375, abs=1e-5)
    assert per_p.loc[23, "x_gen"] == pytest.approx(2.565298, abs=1e-5)
    assert per_p.loc[53, "x_fail"] == pytest.approx(2.000708, abs=1e-5)
    assert per_p.loc[53, "x_gen"] == pytest.approx(3.336098, abs=1e-5)
    assert res["lower"] == pytest.approx((1.830375 + 2.000708) / 2, abs=1e-5)
    assert res["upper"] == pytest.approx((2.565298 + 3.336098) / 2, abs=1e-5)
    assert res["open_p"] == []
    # two seeds, one lagging: at x = 2.57 exactly half generalise, which counts
    half = regime_boundary(_regime_table({23: 2.0}, seeds=(0, 2)), THR)
    assert half["per_p"].iloc[0]["x_gen"] == pytest.approx(2.565298, abs=1e-5)
    never = regime_boundary(_regime_table({23: 10.0}), THR)
    assert never["open_p"] == [23.0] and math.isnan(never["lower"])


# --------------------------------------------------------------------------- tracks


def test_track_statistics_window_and_peak():
    log = train_log(n=60, t_mem=6, t_gen=40)  # train acc 1 at step 600, val acc at 4000
    steps = log["step"].to_numpy()[::2]
    vl = log.set_index("step").loc[steps, "val_loss"].to_numpy()
    values = 10.0 + 100.0 * vl  # falls with the validation loss
    values[1] = 500.0  # the highest estimate, at step 300, before memorisation
    valid = np.ones(steps.size, dtype=bool)
    valid[5] = False
    st = track_statistics(log, llc_track(steps, values, valid))
    assert st["t_mem"] == 600.0 and st["t_gen"] == 4000.0
    in_window = (steps >= 600) & (steps <= 4000) & valid
    assert st["n_window"] == int(in_window.sum()) and st["n_valid"] == steps.size - 1
    assert st["spearman"] == pytest.approx(1.0)
    assert st["peak_step"] == 300.0 and st["peak_position"] == "before memorisation"
    first, last = np.flatnonzero(in_window)[[0, -1]]
    assert st["llc_start"] == pytest.approx(values[first])
    assert st["rel_change"] == pytest.approx(values[last] / values[first] - 1)
    # an invalid estimate never becomes the peak, however high
    values2 = values.copy()
    values2[5] = 1e6
    st2 = track_statistics(log, llc_track(steps, values2, valid))
    assert st2["peak_step"] == 300.0
    rising = track_statistics(log, llc_track(steps, 1000.0 - values, valid))
    assert rising["spearman"] == pytest.approx(-1.0)
    whole = track_statistics(log, llc_track(steps, values, valid), window="all")
    assert whole["n_window"] == steps.size - 1


def test_track_statistics_without_grokking_window():
    log = train_log(n=30, t_mem=6, t_gen=40)  # never reaches validation accuracy 0.99
    st = track_statistics(log, llc_track(log["step"], np.arange(30.0)))
    assert math.isnan(st["t_gen"]) and st["n_window"] == 0 and math.isnan(st["spearman"])
    assert any("no grokking window" in n for n in st["notes"])


# --------------------------------------------------------------------------- sampler grids


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


def test_bias_reduced_llc_recovers_the_intercept():
    from grokking_llc.science.fits import bias_reduced_llc

    nbeta = np.array([10.0, 20.0, 40.0, 80.0])
    llc = 3.0 + 50.0 / nbeta  # exact line in 1/nbeta: intercept 3, slope 50
    fit = bias_reduced_llc(nbeta, llc)
    assert fit["intercept"] == pytest.approx(3.0) and fit["slope"] == pytest.approx(50.0)
    assert fit["r2"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=">= 2"):
        bias_reduced_llc([10.0, 10.0], [1.0, np.nan])
