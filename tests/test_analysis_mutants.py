"""grokking_llc.science.analysis at the edges the mutation run (docs/mutation.md, a fixed sample of
the
module's mutants) found unchecked: the exponential fit's status rules at their thresholds on
exact exponential data, the fit's search range, every returned key and note the figures and
claims read, the "too few" limits of the fits, grouping order, and tables with missing or
non-numeric columns. Expected values are hand-computed, closed forms (exact exponentials, the
Fisher z interval), or written out from the docstrings' definitions (SPEC sections 4-7)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from figure_tables import run_row

from grokking_llc.science import theory
from grokking_llc.science.fits import (
    bias_reduced_llc,
    fit_exponential_decay,
    fit_linear,
    fit_proportional,
)
from grokking_llc.science.generalisation import (
    fit_gsm_vs_llc,
    fit_lr_vs_gsm,
    gsm_rows,
    regime_boundary,
)
from grokking_llc.science.notes import invalid_note, varying_note
from grokking_llc.science.paper import PAPER_BASELINE_RATIO, TIAN_CRITICAL_RATIO
from grokking_llc.science.sampler_checks import (
    bias_reduced,
    calibration_points,
    sampler_sensitivity,
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
    average_ranks,
    bootstrap,
    first_step_reaching,
    group_stats,
    spearman,
    spearman_ci,
)
from grokking_llc.science.tables import (
    finite_rows,
    generalised,
    llc_validity,
    run_llc,
    scaled_data_size,
    select,
)
from grokking_llc.science.text import NOT_VALIDATED, describe_exponential, fmt
from grokking_llc.science.trajectory import track_statistics

THR = 0.99  # the GSM's indicator threshold (grokking_llc.science.gsm.GSM_THRESHOLD)
NAN = math.nan


def same(a, b) -> bool:
    """Equal, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def assert_dict(got: dict, expected: dict, rel=1e-9):
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))
    for k, v in expected.items():
        if isinstance(v, float) and not math.isnan(v):
            assert got[k] == pytest.approx(v, rel=rel), k
        else:
            assert same(got[k], v), (k, got[k], v)


# --------------------------------------------------------------------------- constants


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


# --------------------------------------------------------------------------- small helpers


def test_fmt():
    assert fmt(1 / 3) == "0.3333"
    assert fmt(1 / 3, 2) == "0.33"
    assert fmt(math.inf) == "inf" and fmt(-math.inf) == "-inf"
    assert fmt(NAN) == "nan" and fmt("abc") == "abc" and fmt(None) == "None"


def test_invalid_note_text():
    assert invalid_note(0, 5) is None
    assert invalid_note(2, 5, "runs") == (
        "2 of 5 runs not valid: drawn hollow, left out of means and fits"
    )
    assert invalid_note(1, 3, fitted=False) == "1 of 3 estimates not valid: drawn hollow"


def test_varying_note_lists_every_varying_hyperparameter():
    df = pd.DataFrame({"lr": [1e-3, 1e-2, 1e-3], "model": ["quadratic"] * 3, "p": [7, 7, 7]})
    assert varying_note(df, exclude=()) == "mixed: lr in {0.001, 0.01}"
    assert varying_note(df, exclude=("lr",)) is None
    df["loss"] = ["a", "b", "a"]
    assert varying_note(df, exclude=()) == "mixed: loss in {a, b}; lr in {0.001, 0.01}"
    many = pd.DataFrame({"seed": range(6), "lr": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3]})
    assert varying_note(many, exclude=()) == ("mixed: lr in {0.001, 0.002, 0.003, 0.004, ...}")
    assert varying_note(pd.DataFrame({"lr": [1e-3, np.nan]}), exclude=()) is None


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


def test_group_stats_of_an_empty_table_has_the_documented_columns():
    out = group_stats(pd.DataFrame({"x": [], "y": []}), "x", "y")
    assert list(out.columns) == ["x", "mean", "std", "n"]
    out = group_stats(pd.DataFrame({"x": [], "z": [], "y": []}), ["x", "z"], "y")
    assert list(out.columns) == ["x", "z", "mean", "std", "n"]


def test_first_step_reaching_with_unit_spacing():
    assert first_step_reaching([0, 1, 2], [0.0, 0.5, 1.0], 0.5) == 1.0
    assert first_step_reaching([7], [1.0], 0.5) == 7.0


def test_generalised_needs_both_columns_and_reads_text_as_not_generalised():
    only_train = pd.DataFrame({"final_train_acc": [1.0, 1.0]})
    assert generalised(only_train, THR).tolist() == [False, False]
    t = pd.DataFrame({"final_train_acc": [1.0, "n/a", 1.0], "final_val_acc": [1.0, 1.0, 0.99]})
    assert generalised(t, THR).tolist() == [True, False, False]  # strictly above


def test_run_llc_without_any_llc_column():
    df, note = run_llc(pd.DataFrame({"p": [7, 11]}), "max")
    assert df["llc"].isna().all() and df["llc_valid"].tolist() == [False, False]
    assert df["llc_valid"].dtype == bool and note == NOT_VALIDATED


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


# --------------------------------------------------------------------------- basic fits


def test_fits_at_the_fewest_distinct_x_values():
    assert fit_linear([0.0, 1.0], [1.0, 3.0]) == {
        "slope": 2.0, "intercept": 1.0, "r2": 1.0, "n": 2,
    }  # fmt: skip
    assert fit_proportional([1.0, 2.0], [2.0, 3.0]) == {
        "c": 8.0 / 5.0,  # (1*2 + 2*3) / (1 + 4)
        "r2": 1.0 - ((2 - 1.6) ** 2 + (3 - 3.2) ** 2) / 0.5,
        "n": 2,
    }


@pytest.mark.parametrize(
    "x, y, words",
    [
        ([0.0, NAN], [1.0, 2.0], "x contains NaN"),
        ([0.0, 1.0], [1.0, np.inf], "y contains NaN"),
        ([[0.0, 1.0]], [1.0, 2.0], "x must be 1-D"),
        ([0.0, 1.0], [[1.0, 2.0]], "y must be 1-D"),
    ],
)
def test_fit_input_errors_name_the_argument(x, y, words):
    with pytest.raises(ValueError, match=words):
        fit_linear(x, y)


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


def test_bias_reduced_llc_keys_and_refusal():
    # llc = 10 - 20 / nbeta exactly: intercept 10, slope -20
    out = bias_reduced_llc([10.0, 20.0, 40.0], [8.0, 9.0, 9.5])
    assert_dict(out, {"intercept": 10.0, "slope": -20.0, "r2": 1.0, "n": 3})
    with pytest.raises(ValueError) as err:
        bias_reduced_llc([10.0, 10.0, 20.0], [1.0, 2.0, NAN])
    assert str(err.value) == "the temperature sweep needs finite estimates at >= 2 values of nbeta"


# --------------------------------------------------------------------------- exponential fit


def exact_decay(x, a=1.0, b=1.0, c=0.0):
    x = np.asarray(x, dtype=float)
    return x, a * np.exp(-b * x) + c


def test_exponential_fit_resolves_a_gentle_curvature():
    """k = b * span = 0.5: above the no-curvature limit (0.1), fitted exactly."""
    x, y = exact_decay(np.linspace(0.0, 1.0, 9), a=2.0, b=0.5, c=1.0)
    fit = fit_exponential_decay(x, y)
    assert fit["status"] == "ok" and fit["usable"]
    assert fit["b"] == pytest.approx(0.5, rel=1e-5)
    assert fit["a"] == pytest.approx(2.0, rel=1e-4) and fit["c"] == pytest.approx(1.0, rel=1e-4)


def test_exponential_fit_rate_resolved_by_the_first_spacing():
    """x = 0..20 (first spacing 1/20 of the span), b = 3: by the second x the curve is at
    e^-3 = 5% of its amplitude, above the 1% limit: usable. Spacing x = 0, 2, 4, ... (e^-6 =
    0.25%) is not."""
    x, y = exact_decay(np.arange(0.0, 21.0), b=3.0)
    fit = fit_exponential_decay(x, y)
    assert fit["status"] == "ok"
    assert fit["b"] == pytest.approx(3.0, rel=1e-5)
    x, y = exact_decay(np.arange(0.0, 21.0, 2.0), b=3.0)
    assert fit_exponential_decay(x, y)["status"] == "too_fast"
    # the first spacing, not the second, decides: x = 0, 1, then every 2
    x, y = exact_decay(np.r_[0.0, np.arange(1.0, 21.0, 2.0)], b=3.0)
    assert fit_exponential_decay(x, y)["status"] == "ok"


@pytest.mark.parametrize("amp", [1.0, 2.0])
def test_exponential_fit_absurd_above_a_thousand_times_the_data_scale(amp):
    """y = amp exp(-(x - x0)) on x in [x0, x0 + 4]: the scale is amp and a = amp e^x0. With
    e^x0 = 1000.5 the parameter is just above 1000 times the scale (absurd), with 999.5 just
    below (ok)."""
    for factor, status in ((1000.5, "absurd"), (999.5, "ok")):
        x0 = math.log(factor)
        x = x0 + np.linspace(0.0, 4.0, 9)
        y = amp * np.exp(-(x - x0))
        fit = fit_exponential_decay(x, y, offset=False)
        assert fit["a"] == pytest.approx(amp * factor, rel=1e-6)
        assert fit["status"] == status


def test_exponential_fit_rate_search_range():
    """The scaled rate k = b * span is searched in [1e-4, 1e3]: a straight line sits at the
    lower end; a drop to 0 within the first 1/2000 of the span (which the model can only
    approach as k grows) at the upper end."""
    x = np.linspace(0.0, 2.0, 9)
    line = fit_exponential_decay(x, 5.0 - x)
    assert line["status"] == "no_curvature"
    assert line["b"] * 2.0 == pytest.approx(1e-4, rel=1e-6)
    x = np.array([0.0, 0.001, 0.5, 1.0, 2.0])
    cliff = fit_exponential_decay(x, np.array([1.0, 0.0, 0.0, 0.0, 0.0]))
    assert cliff["b"] * 2.0 == pytest.approx(1e3, rel=1e-6)


def test_describe_exponential_lines():
    fit = {"a": 2.0, "b": 0.5, "c": 1.0, "r2": 0.98765, "status": "ok"}
    assert describe_exponential(fit) == "a = 2, b = 0.5, c = 1, R² = 0.988"
    odd = {**fit, "status": "weird"}
    assert describe_exponential(odd) == (
        "exponential fit not usable: weird (a = 2, b = 0.5, c = 1); curve not drawn"
    )
    skipped = {"status": "skipped", "skipped": "2 distinct lr value(s)"}
    assert describe_exponential(skipped) == ("exponential fit skipped: 2 distinct lr value(s)")


# --------------------------------------------------------------------------- bootstrap


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


# --------------------------------------------------------------------------- Figures 1 and 2

FIG1_KEYS = {
    "width", "x", "use", "points", "means", "n_runs", "n_valid", "n_used", "n_p",
    "n_dropped_nan", "slope",
    "intercept", "r2", "fit_skipped", "theory_scale", "theory_r2", "theory_slope",
    "theory_slope_scaled", "bound_scale", "bound_r2", "bound_slope", "bound_slope_scaled",
    "notes",
}  # fmt: skip


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


# --------------------------------------------------------------------------- Figure 4


def test_fit_lr_vs_gsm_skipped_fit_and_lr_order():
    rows = [run_row(lr=lr, seed=s, gsm=1.0 - 10 * lr) for lr in (3e-3, 1e-3) for s in (0, 1)]
    rows.append(run_row(lr=2e-3, final_val_acc=0.1, gsm=0.0))  # never generalised
    out = fit_lr_vs_gsm(pd.DataFrame(rows), THR)
    fit = out[1e-4]
    for k in ("a", "b", "c", "r2"):
        assert math.isnan(fit[k])
    assert fit["status"] == "skipped" and fit["usable"] is False
    assert fit["skipped"] == "2 distinct lr value(s) with a generalised run, need 3"
    assert (fit["n"], fit["n_lr"], fit["n_runs"], fit["n_never"]) == (4, 2, 5, 1)
    assert fit["never"]["lr"].tolist() == [1e-3, 2e-3, 3e-3]
    assert fit["never"]["n_never"].tolist() == [0, 1, 0]


# --------------------------------------------------------------------------- H.3, GSM vs LLC


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


def test_fit_gsm_vs_llc_keys_notes_and_a_skipped_line():
    rows = [run_row(seed=s, final_llc=10.0, gsm=0.5) for s in range(2)]
    rows += [run_row(seed=2, final_val_acc=0.1), run_row(seed=3, final_llc_valid=False),
             run_row(seed=4, gsm=NAN)]  # fmt: skip
    out = fit_gsm_vs_llc(pd.DataFrame(rows), THR)
    assert set(out) == {"use", "points", "pooled", "per_wd", "n_runs", "n_valid", "n_used",
                        "n_never", "n_invalid", "n_dropped_nan", "notes"}  # fmt: skip
    assert (out["n_runs"], out["n_valid"], out["n_never"], out["n_invalid"]) == (4, 2, 1, 1)
    assert out["notes"] == [
        "dropped 1 run(s) with NaN GSM / final LLC",
        "1 run(s) never generalised: no GSM, shown apart, not fitted",
        "1 of 3 final LLC estimates not valid: drawn hollow, left out of means and fits",
    ]
    assert_dict(out["pooled"], {
        "slope": NAN, "intercept": NAN, "r2": NAN, "n": 2,
        "skipped": "fit skipped: 1 distinct LLC value(s), need 2",
    })  # fmt: skip


# --------------------------------------------------------------------------- Figure 14


def boundary_rows(p, fracs_gen):
    """Runs of prime p: for each (n_train, fraction generalised) two runs."""
    rows = []
    for n, gen in fracs_gen:
        for s in (0, 1):
            ok = s < round(2 * gen)
            rows.append(run_row(p=p, n_train=n, seed=s, final_val_acc=1.0 if ok else 0.1))
    return rows


def test_regime_boundary_order_open_brackets_and_mid():
    x = lambda n, p: n / (p * math.log(p))  # noqa: E731
    rows = boundary_rows(11, [(20, 0.0), (40, 0.5), (60, 1.0)])
    rows = boundary_rows(13, [(30, 0.0), (50, 1.0)]) + rows  # p out of order in the table
    out = regime_boundary(pd.DataFrame(rows), THR)
    per_p = out["per_p"]
    assert list(per_p.columns) == ["p", "x_fail", "x_gen", "n_x"]
    assert per_p["p"].tolist() == [11.0, 13.0] and per_p["n_x"].tolist() == [3, 2]
    assert per_p["x_gen"].tolist() == pytest.approx([x(40, 11), x(50, 13)])
    assert per_p["x_fail"].tolist() == pytest.approx([x(20, 11), x(30, 13)])
    assert out["lower"] == pytest.approx((x(20, 11) + x(30, 13)) / 2)
    assert out["upper"] == pytest.approx((x(40, 11) + x(50, 13)) / 2)
    assert out["mid"] == pytest.approx((out["lower"] + out["upper"]) / 2)
    assert out["open_p"] == []
    # every setting of p = 7 generalises: x_gen is its smallest x, the bracket is open
    out = regime_boundary(pd.DataFrame(boundary_rows(7, [(10, 1.0), (20, 1.0)])), THR)
    assert out["per_p"]["x_gen"].tolist() == pytest.approx([x(10, 7)])
    assert math.isnan(out["per_p"]["x_fail"].iloc[0]) and out["open_p"] == [7.0]
    assert math.isnan(out["mid"])


# --------------------------------------------------------------------------- one run's track


def small_log():
    # memorised at step 200, generalised at step 600; validation loss falls from step 200
    return pd.DataFrame({
        "step": [100, 200, 300, 400, 500, 600, 700],
        "train_acc": [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        "val_acc": [0.1, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0],
        "val_loss": [1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.2],
    })  # fmt: skip


def track(steps, values):
    return pd.DataFrame({"step": steps, "llc_mean": values, "valid": True})


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


def test_track_statistics_with_three_estimates_in_the_window():
    llc = track([200, 400, 600], [9.0, 8.0, 7.0])
    out = track_statistics(small_log(), llc)
    assert out["n_window"] == 3 and out["spearman"] == pytest.approx(1.0)
    assert math.isnan(out["ci_low"]) and math.isnan(out["ci_high"])  # no interval at n = 3


def test_track_statistics_without_a_training_log():
    log = small_log().iloc[:0]
    out = track_statistics(log, track([100], [1.0]))
    assert math.isnan(out["t_mem"]) and math.isnan(out["t_gen"])
    assert out["notes"] == ["no grokking window: the run never memorised or generalised"]
    assert out["peak_position"] == "unknown"


# --------------------------------------------------------------------------- sampler grids


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


def test_regime_boundary_with_a_text_entry_in_p():
    """A summary whose p column holds text for one run (object dtype): that run is dropped and
    x = n / (p ln p) is computed in floats for the others."""
    table = pd.DataFrame({
        "p": [7, 11, "n/a"], "n_train": [20, 48, 30],
        "final_train_acc": [1.0, 1.0, 1.0], "final_val_acc": [1.0, 1.0, 1.0],
    })  # fmt: skip
    out = regime_boundary(table, THR)
    assert out["points"]["x"].tolist() == pytest.approx(
        [20 / (7 * math.log(7)), 48 / (11 * math.log(11))]
    )
    assert out["open_p"] == [7.0, 11.0]


def test_sampler_sensitivity_without_a_validity_column():
    table = pd.DataFrame(
        {"sampler_lr": [1e-4, 3e-4], "localization": [1.0, 1.0], "llc_mean": [5.0, 6.0]}
    )
    out = sampler_sensitivity(table)
    assert out["points"]["valid"].tolist() == [False, False] and out["n_valid"] == 0
    assert out["notes"][0] == NOT_VALIDATED


# --------------------------------------------------------------------------- second sample


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


def test_input_messages_name_the_argument():
    with pytest.raises(ValueError) as err:
        fit_linear([], [])
    assert str(err.value) == "x is empty: need at least one value"
    with pytest.raises(ValueError, match=r"^steps contains NaN"):
        first_step_reaching([0, NAN], [1.0, 1.0], 0.5)
    with pytest.raises(ValueError, match=r"^values contains NaN"):
        first_step_reaching([0, 1], [1.0, NAN], 0.5)
    with pytest.raises(ValueError) as err:
        first_step_reaching([2, 1], [1.0, 1.0], 0.5)
    assert str(err.value) == "steps must be strictly increasing"
    with pytest.raises(ValueError) as err:
        fit_proportional([0.0, 0.0], [1.0, 2.0])
    assert str(err.value) == "every x is 0: no line through the origin"
    with pytest.raises(ValueError, match=r"^x contains NaN"):
        spearman([NAN, 1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"^y contains NaN"):
        spearman([0.0, 1.0, 2.0], [1.0, 2.0, NAN])
    with pytest.raises(ValueError) as err:
        spearman([0.0, 1.0, 2.0], [1.0, 2.0])
    assert str(err.value) == "inputs must have equal lengths, got x: 3, y: 2"
    with pytest.raises(ValueError):
        theory_quadratic([7, 11], [8])


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


def test_describe_unusable_fits():
    fit = {"a": 1.0, "b": 2.0, "c": 3.0}
    for status, why in [
        ("no_curvature", "no exponential curvature resolved (within 1.25% of a straight line)"),
        ("too_fast", "the fall happens within the first x spacing (rate not resolved)"),
        ("absurd", "absurd parameters"),
    ]:
        assert describe_exponential({**fit, "status": status}) == (
            f"exponential fit not usable: {why} (a = 1, b = 2, c = 3); curve not drawn"
        )


def test_exponential_fit_rate_inside_the_last_grid_cell():
    """b = 980 over a span of 1 (k = 980, between the grid's last two points 967 and 1000):
    the golden-section search between them finds it."""
    x = np.r_[0.0, 0.0005 * np.arange(1, 8), 0.5, 1.0]
    fit = fit_exponential_decay(x, np.exp(-980.0 * x))
    assert fit["b"] == pytest.approx(980.0, rel=1e-4)


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
    gv = fit_gsm_vs_llc(pd.DataFrame(wd_rows[:4]), THR)
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


def test_gsm_rows_count_what_they_drop():
    rows = [run_row(lr=1e-3), run_row(lr=0.0), run_row(lr=-1e-3), run_row(lr=1e-3, gsm=NAN)]
    df, dropped = gsm_rows(pd.DataFrame(rows), THR)
    assert len(df) == 1 and dropped == 3


def test_generalised_reads_text_in_the_validation_accuracy_as_not_generalised():
    t = pd.DataFrame({"final_train_acc": [1.0, 1.0], "final_val_acc": ["n/a", 1.0]})
    assert generalised(t, THR).tolist() == [False, True]


def test_sampler_sensitivity_llc_std_column():
    table = pd.DataFrame({"sampler_lr": [1e-4, 3e-4], "localization": [1.0, 1.0],
                          "llc_mean": [5.0, 6.0], "llc_std": [0.5, "?"]})  # fmt: skip
    std = sampler_sensitivity(table)["points"]["llc_std"]
    assert std.dtype == np.float64 and std.iloc[0] == 0.5 and math.isnan(std.iloc[1])
    std = sampler_sensitivity(table.drop(columns=["llc_std"]))["points"]["llc_std"]
    assert std.dtype == np.float64 and std.isna().all()


def test_track_statistics_text_estimates_levels_and_unknown_peaks():
    llc = track([100, 200, 300, 400, 500, 600, 700], [5.0, 9.0, 12.0, 10.0, 8.0, 7.0, 6.0])
    out = track_statistics(small_log(), llc, level=0.8)
    rho = out["spearman"]
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(spearman_ci(rho, 5, 0.8))
    llc["llc_mean"] = llc["llc_mean"].astype(object)
    llc.loc[2, "llc_mean"] = "n/a"
    out = track_statistics(small_log(), llc)
    assert out["n_valid"] == 7 and out["peak_step"] == 400.0
    never = small_log().assign(val_acc=0.1)  # memorised at 200, never generalised
    out = track_statistics(never, track([100, 300], [1.0, 2.0]), window="all")
    assert out["peak_step"] == 300.0 and out["peak_position"] == "unknown"


def test_varying_note_shows_three_significant_digits():
    df = pd.DataFrame({"lr": [0.0012345, 0.0023456]})
    assert varying_note(df, exclude=()) == "mixed: lr in {0.00123, 0.00235}"
