"""Tests of grokking_llc.science.claims: each claim's statistic against hand-computed values and its
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

from grokking_llc.science import claims

KW = {"seed": 0, "n_boot": 200}


def _noise(scale: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    table: dict = {}

    def f(*key):
        if key not in table:
            table[key] = rng.normal(0.0, scale)
        return table[key]

    return f


def _gsm_llc_runs(slope: float, wds=(1e-5, 1e-4)) -> pd.DataFrame:
    rows = []
    for wd in wds:
        for lr in (1e-4, 2e-4, 5e-4, 1e-3):
            for s in (0, 1, 2):
                llc = 10.0 + 1e4 * lr + 2 * s + (20 if wd == 1e-4 else 0)
                rows.append(run_row(lr=lr, weight_decay=wd, seed=s, final_llc=llc,
                                    gsm=slope * llc - 2.0 + 0.01 * ((s * 7) % 3)))  # fmt: skip
    return pd.DataFrame(rows)


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


EPS = 1e-9


NAN = math.nan


H, F, I = "holds", "fails", "inconclusive"


R, NR = "reproduced", "not_reproduced"


BAND = (0.8, 1.25)


TRACK_EDGES = [
    (0.5, EPS, 0.9, H), (0.5 - EPS, EPS, 0.9, I), (0.5 + EPS, EPS, 0.9, H),
    (0.7, 0.0, 0.9, I), (0.7, -EPS, 0.9, I),
    (0.2, -0.3, 0.5 - EPS, F), (0.2, -0.3, 0.5, I), (0.2, -0.3, 0.5 + EPS, I),
    (NAN, NAN, NAN, I),
]  # fmt: skip


def _boot(**named):
    """A stand-in for stats.bootstrap returning the given (value, ci_low, ci_high) per name."""

    def fake(table, statistic, *, by, n_boot=2000, seed=0, level=0.95):
        return {
            k: {"value": v[0], "ci_low": v[1], "ci_high": v[2], "z0": 0.0, "n_boot": n_boot,
                "n_failed": 0}
            for k, v in named.items()
        }  # fmt: skip

    return fake


TIAN_BAND = (2.75 / 1.5, 2.75 * 1.5)


BASELINE_RUN = {"model": "quadratic", "loss": "centred_mse", "p": 53, "width": 1024, "lr": 1e-4,
                "weight_decay": 1e-4, "batch_size": 128, "train_frac": 0.4, "seed": 0,
                "max_steps": 20000}  # fmt: skip


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
    assert "p 23: (3.66, never]" in never["reason"] and "nan" not in never["reason"]


def test_theory_count_at_the_paper_baseline():
    row = claims.claim_theory_count({"p": 53, "width": 1024, "train_frac": 0.4, "data_seed": 0})
    # closed form K (3p - 1) / 2 = 1024 * 158 / 2; data-restricted p (n - 1) / 2, n = 1124
    assert row["paper_value"].startswith("80896")
    assert row["value"] == 53 * 1123 / 2 == 29759.5
    assert row["verdict"] == "fails" and "-63.2%" in row["reason"]


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


@pytest.mark.parametrize(
    ("lo", "hi", "negative", "expected"),
    [
        (-0.5, -EPS, True, H), (-0.5, 0.0, True, I), (-0.5, EPS, True, I),
        (EPS, 0.5, True, F), (0.0, 0.5, True, I), (-EPS, 0.5, True, I),
        (EPS, 0.5, False, H), (0.0, 0.5, False, I), (-EPS, 0.5, False, I),
        (-0.5, -EPS, False, F), (-0.5, 0.0, False, I),
        (NAN, -0.5, True, I), (-0.5, NAN, True, I),
    ],
)  # fmt: skip
def test_sign_verdict_edges(lo, hi, negative, expected):
    assert claims._sign_verdict(lo, hi, negative=negative) == expected


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0.8, 1.25, H), (0.8 + EPS, 1.25 - EPS, H), (0.8 - EPS, 1.0, I), (1.0, 1.25 + EPS, I),
        (0.5, 0.8 - EPS, F), (0.5, 0.8, I), (1.25 + EPS, 2.0, F), (1.25, 2.0, I),
        (0.5, 2.0, I), (NAN, 1.0, I), (1.0, math.inf, I),
    ],
)  # fmt: skip
def test_band_verdict_edges(lo, hi, expected):
    assert claims._band_verdict(lo, hi, BAND) == expected


@pytest.mark.parametrize(("rho", "lo", "hi", "expected"), TRACK_EDGES)
def test_track_verdict_edges(rho, lo, hi, expected):
    assert claims._track_verdict(rho, lo, hi) == expected


@pytest.mark.parametrize("key", ["fig3", "fig13"])
@pytest.mark.parametrize(("rho", "lo", "hi", "expected"), TRACK_EDGES[:-1])
def test_track_claim_edges(monkeypatch, key, rho, lo, hi, expected):
    # _track_claim itself at the thresholds: the statistics it is handed, its verdict
    stats = {"t_mem": 600.0, "t_gen": 4000.0, "n_estimates": 30, "n_valid": 30, "n_window": 12,
             "spearman": rho, "ci_low": lo, "ci_high": hi, "llc_start": 1.0, "llc_end": 0.5,
             "peak_step": 700.0, "peak_position": "between memorisation and generalisation",
             "notes": []}  # fmt: skip
    monkeypatch.setattr(claims.trajectory, "track_statistics", lambda *a, **k: dict(stats))
    log = train_log()
    tracks = {key: {"train_log": log, "llc": {"paper": grokking_track(log)}}}
    fn = claims.CLAIM_FUNCTIONS[
        "fig3_llc_falls_with_generalisation"
        if key == "fig3"
        else "fig13_transformer_llc_tracks_test_loss"
    ]
    row = fn(tracks, "paper")
    assert row["verdict"] == expected and row["value"] == rho or math.isnan(rho)
    # 4 valid estimates are not enough, whatever the correlation
    monkeypatch.setattr(
        claims.trajectory, "track_statistics", lambda *a, **k: {**stats, "n_window": 4}
    )
    assert fn(tracks, "paper")["verdict"] == I


@pytest.mark.parametrize(
    ("ratio", "slope", "expected", "published"),
    [
        ((1.0, 2 / 3, 1.5), (3.0, EPS, 5.0), H, R),
        ((1.0, 2 / 3 - EPS, 1.5), (3.0, EPS, 5.0), I, R),
        ((1.0, 2 / 3, 1.5 + EPS), (3.0, EPS, 5.0), I, R),
        ((1.0, 2 / 3, 1.5), (3.0, 0.0, 5.0), I, R),
        ((1.0, 0.9, 1.1), (-1.0, -2.0, -EPS), F, NR),
        ((1.0, 0.9, 1.1), (-1.0, -2.0, 0.0), I, NR),
        ((0.5, 0.4, 2 / 3 - EPS), (3.0, 1.0, 5.0), F, NR),
        ((0.5, 0.4, 2 / 3), (3.0, 1.0, 5.0), I, NR),
        ((2 / 3, 0.4, 0.9), (3.0, 1.0, 5.0), I, R),
        ((2 / 3 - EPS, 0.4, 0.9), (3.0, 1.0, 5.0), I, NR),
        ((1.5, 1.2, 2.0), (EPS, -1.0, 1.0), I, R),
        ((1.5 + EPS, 1.2, 2.0), (EPS, -1.0, 1.0), I, NR),
        ((1.0, 0.9, 1.1), (0.0, -1.0, 1.0), I, NR),
        ((NAN, 0.9, 1.1), (1.0, 0.5, 1.5), H, NR),
    ],
)
def test_fig1_rule_edges(monkeypatch, ratio, slope, expected, published):
    monkeypatch.setattr(claims.stats, "bootstrap", _boot(ratio=ratio, slope=slope))
    row = claims.claim_fig1_linear_in_p(runs_vs_p(), "paper", as_published=True, **KW)
    assert (row["verdict"], row["verdict_as_published"]) == (expected, published)


@pytest.mark.parametrize(
    ("alpha", "expected", "published"),
    [
        ((1.0, 0.8, 1.25), H, R), ((1.0, 0.8 - EPS, 1.25), I, R), ((1.0, 0.8, 1.25 + EPS), I, R),
        ((0.8, 0.5, 0.8 - EPS), F, R), ((0.8 - EPS, 0.5, 0.8), I, NR),
        ((1.25, 1.25 + EPS, 2.0), F, R), ((1.25 + EPS, 1.25, 2.0), I, NR),
    ],
)  # fmt: skip
def test_fig2_rule_edges(monkeypatch, alpha, expected, published):
    monkeypatch.setattr(claims.stats, "bootstrap", _boot(value=alpha))
    runs = runs_vs_width(lambda k, s: 5.0 * k + s)
    row = claims.claim_fig2_proportional_to_width(runs, "paper", as_published=True, **KW)
    assert (row["verdict"], row["verdict_as_published"]) == (expected, published)


@pytest.mark.parametrize(
    ("rho", "expected", "published"),
    [
        ((-0.9, -1.0, -EPS), H, R), ((-0.9, -1.0, 0.0), I, R), ((-0.9, -1.0, EPS), I, R),
        ((0.9, EPS, 1.0), F, NR), ((0.9, 0.0, 1.0), I, NR), ((0.0, -0.5, 0.5), I, NR),
        ((-EPS, -0.5, 0.5), I, R),
    ],
)  # fmt: skip
def test_sign_rules_edges_fig4_and_h3(monkeypatch, rho, expected, published):
    monkeypatch.setattr(claims.stats, "bootstrap", _boot(value=rho))
    decaying = gsm_runs(lambda lr, wd, s: 0.8 * math.exp(-300.0 * lr) + 0.05 + 0.001 * s,
                        wds=(1e-4,))  # fmt: skip
    fig4 = claims.claim_fig4_gsm_decays_with_lr(decaying, **KW)[0]
    # as published, Figure 4 also needs the exponential decay fit (usable here, a > 0)
    assert (fig4["verdict"], fig4["verdict_as_published"]) == (expected, published)
    rows = [run_row(lr=lr, weight_decay=1e-4, seed=s, max_llc=100.0 - 1e3 * lr + s)
            for lr in (1e-4, 1e-3, 1e-2) for s in (0, 1)]  # fmt: skip
    h3 = claims.claim_h3_max_llc_decreases_with_lr(pd.DataFrame(rows), "p", as_published=True, **KW)
    assert (h3[0]["verdict"], h3[0]["verdict_as_published"]) == (expected, published)


def test_fig4_as_published_needs_a_usable_decay():
    rising = gsm_runs(lambda lr, wd, s: 10 * lr + 0.001 * s, wds=(1e-4,))
    row = claims.claim_fig4_gsm_decays_with_lr(rising, **KW)[0]
    assert row["verdict"] == F and row["verdict_as_published"] == NR
    assert row["value_as_published"] == row["value"] > 0
    flat = gsm_runs(lambda lr, wd, s: 0.5 - 1e-3 * lr + 0.001 * s, wds=(1e-4,))
    assert claims._published_fig4(-0.9, {"usable": True, "a": 1.0}) == R
    assert claims._published_fig4(-0.9, {"usable": True, "a": -1.0}) == NR
    assert claims._published_fig4(-0.9, {"usable": False, "a": 1.0}) == NR
    assert claims._published_fig4(0.0, {"usable": True, "a": 1.0}) == NR
    row = claims.claim_fig4_gsm_decays_with_lr(flat, **KW)[0]
    assert "exponential fit not usable" in row["reason_as_published"]


@pytest.mark.parametrize(
    ("slope", "r2", "expected", "published"),
    [
        ((0.1, EPS, 1.0), (0.9, 0.8 + EPS, 0.99), H, R),
        ((0.1, EPS, 1.0), (0.9, 0.8, 0.99), I, R),
        ((0.1, 0.0, 1.0), (0.9, 0.85, 0.99), I, R),
        ((-0.1, -1.0, -EPS), (0.9, 0.85, 0.99), F, NR),
        ((-0.1, -1.0, 0.0), (0.9, 0.85, 0.99), I, NR),
        ((0.1, 0.05, 1.0), (0.3, 0.1, 0.5 - EPS), F, NR),
        ((0.1, 0.05, 1.0), (0.3, 0.1, 0.5), I, NR),
        ((0.1, 0.05, 1.0), (0.8, 0.6, 0.9), I, R),
        ((0.1, 0.05, 1.0), (0.8 - EPS, 0.6, 0.9), I, NR),
        ((0.0, -1.0, 1.0), (0.9, 0.6, 0.99), I, NR),
    ],
)
def test_gsm_rule_edges(monkeypatch, slope, r2, expected, published):
    monkeypatch.setattr(claims.stats, "bootstrap", _boot(slope=slope, r2=r2))
    out = claims.claim_gsm_linear_in_llc(_gsm_llc_runs(0.13), "paper", as_published=True, **KW)
    assert {(r["verdict"], r["verdict_as_published"]) for r in out} == {(expected, published)}


@pytest.mark.parametrize(
    ("lower", "upper", "expected"),
    [
        ((2.0, TIAN_BAND[0], 2.5), (3.0, 3.5, TIAN_BAND[1]), H),
        ((2.0, TIAN_BAND[0] - EPS, 2.5), (3.0, 3.5, TIAN_BAND[1]), I),
        ((2.0, TIAN_BAND[0], 2.5), (3.0, 3.5, TIAN_BAND[1] + EPS), I),
        ((5.0, TIAN_BAND[1] + EPS, 5.5), (6.0, 6.5, 7.0), F),
        ((5.0, TIAN_BAND[1], 5.5), (6.0, 6.5, 7.0), I),
        ((0.5, 0.6, 0.7), (1.0, 1.2, TIAN_BAND[0] - EPS), F),
        ((0.5, 0.6, 0.7), (1.0, 1.2, TIAN_BAND[0]), I),
    ],
)
def test_fig14_rule_edges(monkeypatch, lower, upper, expected):
    monkeypatch.setattr(claims.stats, "bootstrap", _boot(lower=lower, upper=upper))
    row = claims.claim_fig14_regime_boundary(_regime_runs(2.75), **KW)
    assert row["verdict"] == expected


def test_fig14_says_what_the_band_can_and_cannot_reject():
    # the case: 3.48 [2.89, 4.06] lies inside the +-50% band and excludes 2.75
    text = claims._tian_text(2.89, 4.06, TIAN_BAND)
    assert "excludes 2.75: Tian's value itself is rejected" in text
    assert "within the ±50% band" in text
    assert "contains 2.75: Tian's value is not rejected" in claims._tian_text(2.5, 3.0, TIAN_BAND)
    assert "straddles" in claims._tian_text(1.5, 3.0, TIAN_BAND)
    assert "outside" in claims._tian_text(4.2, 5.0, TIAN_BAND)
    row = claims.claim_fig14_regime_boundary(_regime_runs(2.75), **KW)
    assert "Tian's value" in row["reason"] and row["verdict_as_published"] == R
    # as published: the boundary's value against the band, ends included
    assert claims._published_band(TIAN_BAND[1], TIAN_BAND) == R
    assert claims._published_band(TIAN_BAND[1] + EPS, TIAN_BAND) == NR
    far = claims.claim_fig14_regime_boundary(_regime_runs(5.0, ps=(41, 53)), **KW)
    assert far["verdict_as_published"] == NR
    never = claims.claim_fig14_regime_boundary(_regime_runs(6.0), **KW)
    assert never["verdict_as_published"] == NR and "open bracket" in never["reason_as_published"]


@pytest.mark.parametrize(
    ("rel", "expected"),
    [(0.01, H), (-0.01, H), (0.0, H), (0.01 + EPS, F), (-0.01 - EPS, F), (NAN, F)],
)
def test_theory_rule_edges(rel, expected):
    assert claims._theory_verdict(rel) == expected


@pytest.mark.parametrize(
    ("rel", "expected"), [(0.0099999, H), (-0.0099999, H), (0.0100001, F), (-0.0100001, F)]
)
def test_theory_claim_edges(monkeypatch, rel, expected):
    closed = claims.theory.llc_quadratic(11, 8)
    monkeypatch.setattr(claims.theory, "data_restricted_bound", lambda *a, **k: closed * (1 + rel))
    row = claims.claim_theory_count({"p": 11, "width": 8, "train_frac": 0.5, "data_seed": 0})
    assert row["verdict"] == expected and row["verdict_as_published"] == "n/a"


@pytest.mark.parametrize(
    ("rho", "expected"), [(0.5, R), (0.5 - EPS, NR), (0.5 + EPS, R), (-0.9, NR), (NAN, NR)]
)
def test_published_track_edges(rho, expected):
    assert claims._published_track(rho) == expected


@pytest.mark.parametrize(
    ("start", "peak", "end", "expected"),
    [
        (4304.0, 4885.0, 4757.0, R),
        (4304.0 * (1.05 - 1e-9), 4885.0 * (0.95 + 1e-9), 4757.0 * (1.05 - 1e-9), R),
        (4304.0 * (1.05 + 1e-6), 4885.0, 4757.0, NR),
        (4304.0, 4885.0 * (0.95 - 1e-6), 4757.0, NR),
        (4304.0, 4885.0, 4757.0 * (1.05 + 1e-6), NR),
        (5699.0, 6259.0, 6097.0, NR),  # the auto burn-in track of issue 20
        (NAN, 4885.0, 4757.0, NR),
    ],
)
def test_published_fig3_run_data_edges(start, peak, end, expected):
    assert claims._published_fig3(start, peak, end) == expected


def test_fig3_as_published_against_the_papers_run_data():
    log = train_log(n=60, t_mem=6, t_gen=40)
    steps = log["step"].to_numpy()[::2]
    vals = np.interp(steps, [100, 1300, 6000], [4320.0, 4870.0, 4710.0])
    track = llc_track(steps, vals, valid=np.zeros(steps.size, dtype=bool))
    run = {"train_log": log, "llc": {"paper": track}, "run": BASELINE_RUN}
    row = claims.claim_fig3_llc_falls_with_generalisation({"fig3": run}, "paper", as_published=True)
    # validated: nothing valid; as published: every estimate against 4304 -> ~4885 -> 4757
    assert row["verdict"] == I and row["verdict_as_published"] == R
    assert row["value_as_published"] == pytest.approx(4870.0)
    assert "start 4320 at step 100 (paper 4304, +0.4%)" in row["reason_as_published"]
    assert "end 4713 at step 5900 (paper 4757, -0.9%)" in row["reason_as_published"]
    assert "30 of them fail the validity checks" in row["reason_as_published"]
    high = {**run, "llc": {"paper": track.assign(llc_mean=1.3 * track["llc_mean"])}}
    row = claims.claim_fig3_llc_falls_with_generalisation(
        {"fig3": high}, "paper", as_published=True
    )
    assert row["verdict_as_published"] == NR and "not at all three" in row["reason_as_published"]
    other = {**run, "run": {**BASELINE_RUN, "width": 256}}
    row = claims.claim_fig3_llc_falls_with_generalisation(
        {"fig3": other}, "paper", as_published=True
    )
    assert (
        row["verdict_as_published"] == "n/a"
        and "not the paper's baseline" in row["reason_as_published"]
    )
    plain = claims.claim_fig3_llc_falls_with_generalisation({"fig3": run}, "paper")
    assert plain["verdict_as_published"] == "n/a" and math.isnan(plain["value_as_published"])


def test_fig13_as_published_on_every_estimate_without_grokking():
    # H.3.1: no grokking (validation accuracy never reaches 0.99); LLC and validation loss both
    # rise, so they correlate: reproduced as published, on estimates that all fail the checks
    log = train_log(n=30, t_mem=3, t_gen=50)
    log["val_loss"] = np.linspace(4.0, 10.0, 30)
    track = llc_track(log["step"], np.linspace(30.0, 150.0, 30), valid=np.zeros(30, dtype=bool))
    run = {"train_log": log, "llc": {"paper": track}}
    row = claims.claim_fig13_transformer_llc_tracks_test_loss(
        {"fig13": run}, "paper", as_published=True
    )
    assert row["verdict"] == I and row["verdict_as_published"] == R
    assert row["value_as_published"] == pytest.approx(1.0)
    assert "validation acc 0.99 at step never" in row["reason_as_published"]
    assert "nan" not in row["reason_as_published"] and "(no grokking" in row["paper_value"]
    falling = {**run, "llc": {"paper": track.assign(llc_mean=track["llc_mean"][::-1].to_numpy())}}
    row = claims.claim_fig13_transformer_llc_tracks_test_loss(
        {"fig13": falling}, "paper", as_published=True
    )
    assert row["verdict_as_published"] == NR and row["value_as_published"] == pytest.approx(-1.0)


def test_llc_claims_as_published_use_every_estimate():
    # invalid estimates that reverse a trend: left out of the validated verdict, used as
    # published (the paper's protocol has no validity checks)
    runs = runs_vs_p(fn=lambda p, s: 30.0 * p + s, invalid={(5, 0), (5, 1), (5, 2)})
    runs.loc[runs["p"] == 5, "final_llc"] = 2000.0
    row = claims.claim_fig1_linear_in_p(runs, "paper", as_published=True, **KW)
    assert row["verdict"] == H and row["n_valid"] == 9 and "3 values of p" in row["reason"]
    # the quadratic's slope at p = 5 is negative: the ratio is undefined, not reproduced
    assert row["verdict_as_published"] == NR and math.isnan(row["value_as_published"])
    assert "slope ratio undefined" in row["reason_as_published"]
    assert "3 of them fail the validity checks" in row["reason_as_published"]
    ok = claims.claim_fig1_linear_in_p(runs_vs_p(fn=lambda p, s: 30.0 * p + s), "p",
                                       as_published=True, **KW)  # fmt: skip
    assert ok["verdict"] == H and ok["verdict_as_published"] == R
    assert ok["value_as_published"] == pytest.approx(ok["value"])
    assert ok["ci_low_as_published"] <= ok["value_as_published"] <= ok["ci_high_as_published"]


def test_compute_claims_has_both_verdicts_for_every_claim():
    runs, training, tracks, baseline, studies = _all_inputs()
    kw = {"samplers": ["paper", "calibrated"], "studies": studies, "seed": 0, "n_boot": 100}
    df = claims.compute_claims(runs, training, tracks, baseline, published=["paper"], **kw)
    assert set(df["verdict"]) <= set(claims.VERDICTS)
    assert set(df["verdict_as_published"]) <= set(claims.PUBLISHED_VERDICTS)
    cal = df[df["sampler"] == "calibrated"]
    assert (cal["verdict_as_published"] == "n/a").all()
    assert cal["reason_as_published"].str.contains("protocol runs under paper").all()
    paper = df[df["sampler"] == "paper"].set_index("figure")
    assert paper.loc["Fig. 1", "verdict_as_published"] == R
    assert paper.loc["Fig. 3", "verdict_as_published"] == "n/a"  # not the paper's baseline
    none = df[df["sampler"] == "n/a"].set_index("claim")
    assert none.loc["theory_count", "verdict_as_published"] == "n/a"
    assert none.loc["fig14_regime_boundary", "verdict_as_published"] == R
    without = claims.compute_claims(runs, training, tracks, baseline, **kw)
    llc_rows = without[without["sampler"] != "n/a"]
    assert (llc_rows["verdict_as_published"] == "n/a").all()
    assert llc_rows["reason_as_published"].str.contains("no named sampler runs").all()
    pd.testing.assert_frame_equal(
        df.drop(columns=list(claims.PUBLISHED_COLUMNS)),
        without.drop(columns=list(claims.PUBLISHED_COLUMNS)),
    )


def test_published_rules_come_from_the_docstrings():
    rules = claims.published_rules()
    assert set(rules) == set(claims.CLAIM_FUNCTIONS)
    assert all(rule.startswith("As published") for rule in rules.values())
    assert "4,304 at step 0" in rules["fig3_llc_falls_with_generalisation"]
    assert "n/a" in rules["theory_count"]
