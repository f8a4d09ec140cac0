"""grokking_llc.science.generalisation: the GSM fits and the regime boundary (SPEC sections 6-7),
against values computed by hand or independently."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from figure_tables import (
    gsm_runs,
    run_row,
)

from grokking_llc.science import gsm
from grokking_llc.science.generalisation import (
    fit_gsm_vs_llc,
    fit_lr_vs_gsm,
    gsm_rows,
    regime_boundary,
)

from .helpers import assert_dict

THR = gsm.GSM_THRESHOLD


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


THR_EDGE = 0.99  # the GSM's indicator threshold (grokking_llc.science.gsm.GSM_THRESHOLD)


NAN = math.nan


def boundary_rows(p, fracs_gen):
    """Runs of prime p: for each (n_train, fraction generalised) two runs."""
    rows = []
    for n, gen in fracs_gen:
        for s in (0, 1):
            ok = s < round(2 * gen)
            rows.append(run_row(p=p, n_train=n, seed=s, final_val_acc=1.0 if ok else 0.1))
    return rows


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


def test_fit_lr_vs_gsm_skipped_fit_and_lr_order():
    rows = [run_row(lr=lr, seed=s, gsm=1.0 - 10 * lr) for lr in (3e-3, 1e-3) for s in (0, 1)]
    rows.append(run_row(lr=2e-3, final_val_acc=0.1, gsm=0.0))  # never generalised
    out = fit_lr_vs_gsm(pd.DataFrame(rows), THR_EDGE)
    fit = out[1e-4]
    for k in ("a", "b", "c", "r2"):
        assert math.isnan(fit[k])
    assert fit["status"] == "skipped" and fit["usable"] is False
    assert fit["skipped"] == "2 distinct lr value(s) with a generalised run, need 3"
    assert (fit["n"], fit["n_lr"], fit["n_runs"], fit["n_never"]) == (4, 2, 5, 1)
    assert fit["never"]["lr"].tolist() == [1e-3, 2e-3, 3e-3]
    assert fit["never"]["n_never"].tolist() == [0, 1, 0]


def test_fit_gsm_vs_llc_keys_notes_and_a_skipped_line():
    rows = [run_row(seed=s, final_llc=10.0, gsm=0.5) for s in range(2)]
    rows += [run_row(seed=2, final_val_acc=0.1), run_row(seed=3, final_llc_valid=False),
             run_row(seed=4, gsm=NAN)]  # fmt: skip
    out = fit_gsm_vs_llc(pd.DataFrame(rows), THR_EDGE)
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


def test_regime_boundary_order_open_brackets_and_mid():
    x = lambda n, p: n / (p * math.log(p))  # noqa: E731
    rows = boundary_rows(11, [(20, 0.0), (40, 0.5), (60, 1.0)])
    rows = boundary_rows(13, [(30, 0.0), (50, 1.0)]) + rows  # p out of order in the table
    out = regime_boundary(pd.DataFrame(rows), THR_EDGE)
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
    out = regime_boundary(pd.DataFrame(boundary_rows(7, [(10, 1.0), (20, 1.0)])), THR_EDGE)
    assert out["per_p"]["x_gen"].tolist() == pytest.approx([x(10, 7)])
    assert math.isnan(out["per_p"]["x_fail"].iloc[0]) and out["open_p"] == [7.0]
    assert math.isnan(out["mid"])


def test_regime_boundary_with_a_text_entry_in_p():
    """A summary whose p column holds text for one run (object dtype): that run is dropped and
    x = n / (p ln p) is computed in floats for the others."""
    table = pd.DataFrame({
        "p": [7, 11, "n/a"], "n_train": [20, 48, 30],
        "final_train_acc": [1.0, 1.0, 1.0], "final_val_acc": [1.0, 1.0, 1.0],
    })  # fmt: skip
    out = regime_boundary(table, THR_EDGE)
    assert out["points"]["x"].tolist() == pytest.approx(
        [20 / (7 * math.log(7)), 48 / (11 * math.log(11))]
    )
    assert out["open_p"] == [7.0, 11.0]


def test_gsm_rows_count_what_they_drop():
    rows = [run_row(lr=1e-3), run_row(lr=0.0), run_row(lr=-1e-3), run_row(lr=1e-3, gsm=NAN)]
    df, dropped = gsm_rows(pd.DataFrame(rows), THR_EDGE)
    assert len(df) == 1 and dropped == 3
