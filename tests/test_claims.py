"""Tests of grokking_llc.claims: each claim's statistic against hand-computed values and its
verdict on data built to hold, to fail and to be undecidable (issue 11)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from figure_tables import (
    PRIMES,
    grokking_track,
    gsm_runs,
    llc_track,
    run_row,
    runs_vs_p,
    runs_vs_width,
    train_log,
)

from grokking_llc import claims

KW = {"seed": 0, "n_boot": 200}


def _noise(scale: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    table: dict = {}

    def f(*key):
        if key not in table:
            table[key] = rng.normal(0.0, scale)
        return table[key]

    return f


# --------------------------------------------------------------------------- Figure 1


def test_fig1_straight_line_holds_with_ratio_one():
    eps = _noise(0.5)
    row = claims.claim_fig1_linear_in_p(
        runs_vs_p(fn=lambda p, s: 30.0 * p + 5.0 + eps(p, s)), "paper", **KW
    )
    assert row["verdict"] == "holds"
    assert row["value"] == pytest.approx(1.0, abs=0.05)
    assert row["ci_low"] < 1.0 < row["ci_high"] or row["value"] == pytest.approx(1.0, abs=0.05)
    assert row["n_runs"] == 12 and row["n_valid"] == 12


def test_fig1_quadratic_fails_with_ratio_pmax_over_pmin():
    # LLC = p^2: the quadratic fit is exact, slope 2p, ratio 13 / 5
    row = claims.claim_fig1_linear_in_p(runs_vs_p(fn=lambda p, s: float(p * p)), "paper", **KW)
    assert row["value"] == pytest.approx(13.0 / 5.0)
    assert row["ci_low"] == pytest.approx(2.6) and row["verdict"] == "fails"


def test_fig1_noisy_or_invalid_is_inconclusive():
    eps = _noise(60.0, seed=1)
    noisy = claims.claim_fig1_linear_in_p(
        runs_vs_p(fn=lambda p, s: 30.0 * p + eps(p, s)), "paper", **KW
    )
    assert noisy["verdict"] == "inconclusive" and noisy["ci_high"] - noisy["ci_low"] > 0.3
    none = claims.claim_fig1_linear_in_p(runs_vs_p().assign(final_llc_valid=False), "paper", **KW)
    assert none["verdict"] == "inconclusive" and "no valid" in none["reason"]
    assert none["n_valid"] == 0
    single = runs_vs_p(invalid={(7, 0), (7, 1)})
    lone = claims.claim_fig1_linear_in_p(single, "paper", **KW)
    assert lone["verdict"] == "inconclusive" and "p = 7 with a single valid run" in lone["reason"]


# --------------------------------------------------------------------------- Figure 2


def test_fig2_exponent_of_width():
    prop = claims.claim_fig2_proportional_to_width(
        runs_vs_width(lambda k, s: 5.0 * k * (1.0 + 0.01 * s)), "paper", **KW
    )
    assert prop["value"] == pytest.approx(1.0) and prop["verdict"] == "holds"
    root = claims.claim_fig2_proportional_to_width(
        runs_vs_width(lambda k, s: 5.0 * math.sqrt(k)), "paper", **KW
    )
    assert root["value"] == pytest.approx(0.5) and root["verdict"] == "fails"
    lone = claims.claim_fig2_proportional_to_width(
        runs_vs_width(lambda k, s: 5.0 * k, invalid={(8, 0), (8, 1)}), "paper", **KW
    )
    assert lone["verdict"] == "inconclusive" and "width 8 with a single valid run" in lone["reason"]
    negative = claims.claim_fig2_proportional_to_width(
        runs_vs_width(lambda k, s: -1.0), "paper", **KW
    )
    assert negative["verdict"] == "inconclusive" and "<= 0" in negative["reason"]


# --------------------------------------------------------------------------- Figures 3 and 13


def test_fig3_llc_falling_with_validation_loss_holds():
    log = train_log(n=60, t_mem=6, t_gen=40)
    tracks = {"fig3": {"train_log": log, "llc": {"paper": grokking_track(log)}}}
    row = claims.claim_fig3_llc_falls_with_generalisation(tracks, "paper")
    assert row["verdict"] == "holds" and row["value"] > 0.9
    # estimates at steps 100, 300, ...: 700..3900 lie in the window [600, 4000]
    assert row["n_valid"] == 17 and row["n_runs"] == 1
    assert (
        "memorisation (step 600)" in row["reason"] and "generalisation (step 4000)" in row["reason"]
    )


def test_fig3_llc_rising_fails_and_invalid_is_inconclusive():
    log = train_log(n=60, t_mem=6, t_gen=40)
    steps = log["step"].to_numpy()[::2]
    vl = log.set_index("step").loc[steps, "val_loss"].to_numpy()
    rising = llc_track(steps, 500.0 - 100.0 * vl)
    row = claims.claim_fig3_llc_falls_with_generalisation(
        {"fig3": {"train_log": log, "llc": {"paper": rising}}}, "paper"
    )
    assert row["value"] == pytest.approx(-1.0) and row["verdict"] == "fails"
    bad = rising.assign(valid=False)
    row = claims.claim_fig3_llc_falls_with_generalisation(
        {"fig3": {"train_log": log, "llc": {"paper": bad}}}, "paper"
    )
    assert row["verdict"] == "inconclusive" and "0 of 30 valid" in row["reason"]
    missing = claims.claim_fig3_llc_falls_with_generalisation({}, "paper")
    assert missing["verdict"] == "inconclusive" and missing["n_runs"] == 0


def test_fig3_runs_that_disagree_are_inconclusive():
    log = train_log(n=60, t_mem=6, t_gen=40)
    steps = log["step"].to_numpy()[::2]
    vl = log.set_index("step").loc[steps, "val_loss"].to_numpy()
    good = {"train_log": log, "llc": {"paper": llc_track(steps, 100.0 * vl)}}
    bad = {"train_log": log, "llc": {"paper": llc_track(steps, -100.0 * vl)}}
    row = claims.claim_fig3_llc_falls_with_generalisation({"fig3": [good, bad]}, "paper")
    assert row["verdict"] == "inconclusive" and row["n_runs"] == 2
    assert row["value"] == pytest.approx(0.0) and "run 2:" in row["reason"]


def test_fig13_tracks_the_test_loss_over_the_whole_run():
    log = train_log(n=30, t_mem=3, t_gen=20)
    vl = log["val_loss"].to_numpy()
    track = llc_track(log["step"], 3.0 + vl)
    row = claims.claim_fig13_transformer_llc_tracks_test_loss(
        {"fig13": {"train_log": log, "llc": {"paper": track}}}, "paper"
    )
    assert row["verdict"] == "holds" and row["n_valid"] == 30
    flat = llc_track(log["step"], np.sin(np.arange(30) * 2.1))
    row = claims.claim_fig13_transformer_llc_tracks_test_loss(
        {"fig13": {"train_log": log, "llc": {"paper": flat}}}, "paper"
    )
    assert row["verdict"] in ("fails", "inconclusive") and row["value"] < 0.5


# --------------------------------------------------------------------------- Figure 4 and H.3


def test_fig4_one_row_per_weight_decay_never_generalised_apart():
    never = {(1e-4, 1e-4, 0)}
    runs = gsm_runs(lambda lr, wd, s: 0.8 * math.exp(-300.0 * lr) + 0.05 + 0.001 * s, never=never)
    rows = claims.claim_fig4_gsm_decays_with_lr(runs, **KW)
    assert [r["figure"] for r in rows] == ["Fig. 4 (wd 0.0001)", "Fig. 4 (wd 0.001)"]
    assert all(r["verdict"] == "holds" and r["sampler"] == "n/a" for r in rows)
    assert rows[0]["value"] < -0.9 and rows[0]["ci_high"] < 0
    assert "never generalised: 1/3 at lr 0.0001" in rows[0]["reason"]
    assert "every run generalised" in rows[1]["reason"] and rows[0]["n_runs"] == 15
    rising = claims.claim_fig4_gsm_decays_with_lr(
        gsm_runs(lambda lr, wd, s: 10 * lr + 0.001 * s, wds=(1e-4,)), **KW
    )
    assert rising[0]["verdict"] == "fails" and rising[0]["ci_low"] > 0
    lone = claims.claim_fig4_gsm_decays_with_lr(
        gsm_runs(lambda lr, wd, s: lr, wds=(1e-4,), never={(1e-4, 1e-4, 0), (1e-4, 1e-4, 1)}),
        **KW,
    )
    assert lone[0]["verdict"] == "inconclusive" and "single generalised run" in lone[0]["reason"]


def test_fig4_noise_against_the_trend_is_inconclusive():
    eps = _noise(0.3, seed=2)
    rows = claims.claim_fig4_gsm_decays_with_lr(
        gsm_runs(lambda lr, wd, s: 0.5 - 10 * lr + eps(lr, wd, s), wds=(1e-4,)), **KW
    )
    assert rows[0]["verdict"] == "inconclusive"
    assert rows[0]["ci_low"] < 0 < rows[0]["ci_high"]


def test_h3_max_llc_per_weight_decay_uses_valid_maxima():
    rows = [run_row(lr=lr, weight_decay=wd, seed=s, max_llc=100.0 - 1e3 * lr + s,
                    max_llc_valid=s < 2)
            for wd in (1e-5, 1e-4) for lr in (1e-4, 1e-3, 1e-2) for s in (0, 1, 2)]  # fmt: skip
    df = pd.DataFrame(rows)
    df.loc[~df["max_llc_valid"], "max_llc"] = 1e6  # would reverse the trend if used
    out = claims.claim_h3_max_llc_decreases_with_lr(df, "paper", **KW)
    assert len(out) == 2 and all(r["verdict"] == "holds" for r in out)
    assert out[0]["n_runs"] == 9 and out[0]["n_valid"] == 6
    # valid y: 99.9, 100.9 | 99, 100 | 90, 91 -> ranks of y 4 6 3 5 1 2 against lr 1.5 .. 5.5
    # sum dx dy = -2(0.5 + 2.5) + 2(-2.5 - 1.5) = -14; sums of squares 16 and 17.5
    assert out[0]["value"] == pytest.approx(-14.0 / math.sqrt(16.0 * 17.5))
    none = claims.claim_h3_max_llc_decreases_with_lr(df.assign(max_llc_valid=False), "x", **KW)
    assert all(r["verdict"] == "inconclusive" and r["n_valid"] == 0 for r in none)


# --------------------------------------------------------------------------- GSM against LLC


def _gsm_llc_runs(slope: float, wds=(1e-5, 1e-4)) -> pd.DataFrame:
    rows = []
    for wd in wds:
        for lr in (1e-4, 2e-4, 5e-4, 1e-3):
            for s in (0, 1, 2):
                llc = 10.0 + 1e4 * lr + 2 * s + (20 if wd == 1e-4 else 0)
                rows.append(run_row(lr=lr, weight_decay=wd, seed=s, final_llc=llc,
                                    gsm=slope * llc - 2.0 + 0.01 * ((s * 7) % 3)))  # fmt: skip
    return pd.DataFrame(rows)


def test_gsm_linear_in_llc_rows_per_weight_decay_and_pooled():
    df = _gsm_llc_runs(0.13)
    df.loc[0, "final_llc_valid"] = False
    df.loc[1, ["final_val_acc", "gsm"]] = [0.1, 0.0]
    out = claims.claim_gsm_linear_in_llc(df, "paper", **KW)
    assert [r["figure"] for r in out] == ["Sec. 6 (wd 1e-05)", "Sec. 6 (wd 0.0001)",
                                          "Sec. 6 (pooled)"]  # fmt: skip
    assert all(r["verdict"] == "holds" for r in out)
    assert out[0]["n_runs"] == 12 and out[0]["n_valid"] == 10 and out[2]["n_valid"] == 22
    assert "1 run(s) never generalised" in out[0]["reason"]
    ok = df[(df["weight_decay"] == 1e-5) & df["final_llc_valid"] & (df["final_val_acc"] > 0.9)]
    ref = np.corrcoef(ok["final_llc"], ok["gsm"])[0, 1] ** 2
    assert out[0]["value"] == pytest.approx(ref)
    neg = claims.claim_gsm_linear_in_llc(_gsm_llc_runs(-0.13), "paper", **KW)
    assert all(r["verdict"] == "fails" for r in neg)
    assert "0.1288" in out[0]["paper_value"]


def test_gsm_linear_in_llc_moderate_r2_is_inconclusive():
    # a positive slope, but R^2 ~ 0.65 with its interval between the thresholds 0.5 and 0.8
    rng = np.random.default_rng(4)
    rows = []
    for i, lr in enumerate(np.geomspace(1e-4, 1e-2, 8)):
        for s in range(4):
            llc = 10.0 + 10.0 * i + rng.normal(0.0, 1.0)
            rows.append(run_row(lr=lr, weight_decay=1e-4, seed=s, final_llc=llc,
                                gsm=0.1 * llc + rng.normal(0.0, 1.8)))  # fmt: skip
    row = claims.claim_gsm_linear_in_llc(pd.DataFrame(rows), "paper", **KW)[0]
    assert 0.5 < row["ci_low"] < row["value"] < row["ci_high"] < 0.8
    assert row["verdict"] == "inconclusive"


def test_gsm_linear_in_llc_without_valid_estimates():
    out = claims.claim_gsm_linear_in_llc(_gsm_llc_runs(0.1).assign(final_llc_valid=False), "c",
                                         **KW)  # fmt: skip
    assert all(r["verdict"] == "inconclusive" and r["n_valid"] == 0 for r in out)
    assert "no generalised run with a valid final LLC" in out[-1]["reason"]


# --------------------------------------------------------------------------- Figure 14


def _regime_runs(threshold_x: float, ps=(23, 41, 53)) -> pd.DataFrame:
    rows = []
    for p in ps:
        for frac in (0.15, 0.25, 0.35, 0.5):
            n = round(frac * p * p)
            gen = n / (p * math.log(p)) > threshold_x
            for s in (0, 1, 2):
                rows.append(run_row(p=p, train_frac=frac, n_train=n, seed=s,
                                    final_val_acc=1.0 if gen else 0.1))  # fmt: skip
    return pd.DataFrame(rows)


def test_fig14_boundary_near_tian_holds():
    row = claims.claim_fig14_regime_boundary(_regime_runs(2.75), **KW)
    # brackets (2.565, 3.661], (1.655, 2.758], (2.001, 3.336] (x = n / (p ln p))
    lower = (185 / (23 * math.log(23)) + 252 / (41 * math.log(41)) + 421 / (53 * math.log(53))) / 3
    upper = (264 / (23 * math.log(23)) + 420 / (41 * math.log(41)) + 702 / (53 * math.log(53))) / 3
    assert row["ci_low"] == pytest.approx(lower) and row["ci_high"] == pytest.approx(upper)
    assert row["value"] == pytest.approx((lower + upper) / 2)
    assert row["verdict"] == "holds" and row["n_runs"] == 36


def test_fig14_far_boundary_fails_and_open_is_inconclusive():
    far = claims.claim_fig14_regime_boundary(_regime_runs(5.0, ps=(41, 53)), **KW)
    assert far["ci_low"] > 4.13 and far["verdict"] == "fails"
    never = claims.claim_fig14_regime_boundary(_regime_runs(6.0), **KW)
    assert never["verdict"] == "inconclusive" and "open bracket for p = 23" in never["reason"]


# --------------------------------------------------------------------------- theory


def test_theory_count_at_the_paper_baseline():
    row = claims.claim_theory_count({"p": 53, "width": 1024, "train_frac": 0.4, "data_seed": 0})
    # closed form K (3p - 1) / 2 = 1024 * 158 / 2; data-restricted p (n - 1) / 2, n = 1124
    assert row["paper_value"].startswith("80896")
    assert row["value"] == 53 * 1123 / 2 == 29759.5
    assert row["verdict"] == "fails" and "-63.2%" in row["reason"]


# --------------------------------------------------------------------------- the table


def _all_inputs():
    runs = pd.concat(
        [
            runs_vs_p(fn=lambda p, s: 30.0 * p + s, studies=["over_p"]),
            runs_vs_width(lambda k, s: 5.0 * k + s).assign(studies=[["over_width"]] * 12),
            _gsm_llc_runs(0.1).assign(studies=[["lr_wd"]] * 24),
        ],
        ignore_index=True,
    )
    runs = pd.concat([runs, runs.assign(sampler="calibrated", final_llc_valid=False)])
    training = pd.concat(
        [
            runs[runs["sampler"] == "paper"],
            _regime_runs(2.75).assign(studies=[["scaling"]] * 36),
        ],
        ignore_index=True,
    )
    log = train_log()
    tracks = {k: {"train_log": log, "llc": {"paper": grokking_track(log),
                                             "calibrated": grokking_track(log)}}
              for k in ("fig3", "fig13")}  # fmt: skip
    studies = {"fig1": "over_p", "fig2": "over_width", "fig4": "lr_wd", "lr_vs_max_llc": "lr_wd",
               "gsm_vs_llc": "lr_wd", "fig14": "scaling"}  # fmt: skip
    baseline = {"p": 11, "width": 8, "train_frac": 0.5, "data_seed": 0}
    return runs, training, tracks, baseline, studies


def test_compute_claims_table_shape_and_determinism():
    runs, training, tracks, baseline, studies = _all_inputs()
    kw = {"samplers": ["paper", "calibrated"], "studies": studies, "seed": 0, "n_boot": 100}
    df = claims.compute_claims(runs, training, tracks, baseline, **kw)
    assert list(df.columns) == list(claims.COLUMNS)
    per = df.groupby("claim")["sampler"].agg(list)
    assert per["fig1_linear_in_p"] == ["paper", "calibrated"]
    assert per["gsm_linear_in_llc"] == ["paper"] * 3 + ["calibrated"] * 3
    assert per["fig4_gsm_decays_with_lr"] == ["n/a", "n/a"]
    assert per["theory_count"] == ["n/a"] and per["fig14_regime_boundary"] == ["n/a"]
    assert set(df["verdict"]) <= set(claims.VERDICTS)
    cal = df[
        (df["sampler"] == "calibrated")
        & df["claim"].isin(["fig1_linear_in_p", "fig2_proportional_to_width"])
    ]
    assert (cal["verdict"] == "inconclusive").all() and (cal["n_valid"] == 0).all()
    assert df.loc[df["claim"] == "fig1_linear_in_p", "n_runs"].tolist() == [12, 12]
    assert df["n_valid"].dtype == "Int64" and df["n_valid"].isna().sum() == 4
    assert df["value"].dtype == float
    again = claims.compute_claims(runs, training, tracks, baseline, **kw)
    pd.testing.assert_frame_equal(df, again)
    other = claims.compute_claims(runs, training, tracks, baseline, **{**kw, "seed": 1})
    assert not df["ci_low"].equals(other["ci_low"])


def test_verdict_rules_come_from_the_docstrings():
    rules = claims.verdict_rules()
    assert set(rules) == set(claims.CLAIM_FUNCTIONS)
    assert all(rule.startswith("Verdict") for rule in rules.values())
    assert "[0.8, 1.25]" in rules["fig2_proportional_to_width"]
    assert len(PRIMES) == 4
