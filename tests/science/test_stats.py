"""grokking_llc.science.stats: R², first step reaching a threshold, seed means, Spearman with its
interval, the bias-corrected bootstrap (SPEC sections 6-7), against values computed by hand or
independently."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

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
from grokking_llc.science.trajectory import track_statistics

from .helpers import assert_dict, small_log, track


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


def test_group_stats_of_an_empty_table_has_the_documented_columns():
    out = group_stats(pd.DataFrame({"x": [], "y": []}), "x", "y")
    assert list(out.columns) == ["x", "mean", "std", "n"]
    out = group_stats(pd.DataFrame({"x": [], "z": [], "y": []}), ["x", "z"], "y")
    assert list(out.columns) == ["x", "z", "mean", "std", "n"]


def test_first_step_reaching_with_unit_spacing():
    assert first_step_reaching([0, 1, 2], [0.0, 0.5, 1.0], 0.5) == 1.0
    assert first_step_reaching([7], [1.0], 0.5) == 7.0


def test_spearman_of_three_points_and_its_interval_at_four():
    # ranks (1,2,3) and (1,3,2): centred (-1,0,1) and (-1,1,0): 1 / sqrt(2 * 2)
    assert spearman([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx(0.5)
    z, zq = math.atanh(0.5), NormalDist().inv_cdf(0.975)
    half = zq * math.sqrt(1.06 / (4 - 3))
    lo, hi = spearman_ci(0.5, 4)
    assert (lo, hi) == pytest.approx((math.tanh(z - half), math.tanh(z + half)))
    assert all(math.isnan(v) for v in spearman_ci(0.5, 3))


def test_average_ranks_with_ties_at_the_end():
    assert average_ranks([3.0, 1.0, 3.0, 2.0, 3.0]).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
    assert average_ranks([2.0, 2.0, 1.0]).tolist() == [2.5, 2.5, 1.0]


def test_bootstrap_percentiles_against_a_reference_loop():
    table = pd.DataFrame({"g": [0, 0, 0, 1, 1, 1], "y": [1.0, 2.0, 4.0, 3.0, 7.0, 8.0]})
    out = bootstrap(table, lambda d: float(d["y"].mean()), by="g", n_boot=300, seed=5,
                             level=0.8)  # fmt: skip
    rng = np.random.default_rng(5)
    reps = []
    for _ in range(300):
        idx = np.r_[rng.choice([0, 1, 2], size=3, replace=True),
                    rng.choice([3, 4, 5], size=3, replace=True)]  # fmt: skip
        reps.append(table["y"].to_numpy()[idx].mean())
    # bias-corrected percentile interval by the textbook recipe (Efron and Tibshirani 14.3)
    theta, phi = 25.0 / 6.0, NormalDist()
    reps = np.asarray(reps)
    z0 = phi.inv_cdf((np.sum(reps < theta) + 0.5 * np.sum(reps == theta)) / 300)
    q = [phi.cdf(2 * z0 + phi.inv_cdf(0.1)), phi.cdf(2 * z0 + phi.inv_cdf(0.9))]
    bc_lo, bc_hi = np.quantile(reps, q)
    p_lo, p_hi = np.quantile(reps, [0.1, 0.9])
    lo, hi = min(bc_lo, p_lo, theta), max(bc_hi, p_hi, theta)
    assert out["value"] == {"value": theta, "ci_low": lo, "ci_high": hi, "z0": z0, "n_boot": 300,
                            "n_failed": 0}  # fmt: skip


def test_bootstrap_of_a_statistic_that_fails_on_the_full_table():
    def stat(d):
        if len(d) == 2 and d["y"].nunique() == 2:
            raise ValueError("no")
        return float(d["y"].max())

    out = bootstrap(pd.DataFrame({"g": [0, 1], "y": [1.0, 2.0]}), stat, by="g", n_boot=5)
    assert math.isnan(out["value"]["value"])
    assert out["value"]["n_boot"] == 0 and out["value"]["n_failed"] == 5


def test_track_statistics_in_the_grokking_window():
    llc = track([100, 200, 300, 400, 500, 600, 700], [5.0, 9.0, 12.0, 10.0, 8.0, 7.0, 6.0])
    out = track_statistics(small_log(), llc)
    # window 200..600: llc 9, 12, 10, 8, 7 against val loss 1, .8, .6, .4, .2
    rho = spearman([9.0, 12.0, 10.0, 8.0, 7.0], [1.0, 0.8, 0.6, 0.4, 0.2])
    lo, hi = spearman_ci(rho, 5)
    assert_dict(out, {
        "t_mem": 200.0, "t_gen": 600.0, "n_estimates": 7, "n_valid": 7, "n_window": 5,
        "spearman": rho, "ci_low": lo, "ci_high": hi, "llc_start": 9.0, "llc_end": 7.0,
        "rel_change": 7.0 / 9.0 - 1.0, "peak_step": 300.0, "peak_llc": 12.0,
        "first_step": 100.0, "first_llc": 5.0, "last_step": 700.0, "last_llc": 6.0,
        "peak_position": "between memorisation and generalisation", "notes": [],
        "use": "valid", "status_counts": {"valid": 7, "invalid": 0, "not_a_minimum": 0},
    })  # fmt: skip
    assert rho == pytest.approx(0.7)  # ranks (2,5,4,3,1) and (5,4,3,2,1): 1 - 6*6/120
