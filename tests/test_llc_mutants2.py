"""The LLC estimator's bookkeeping (grokking_llc.llc) on hand-made traces and diagnostics with
answers computed here: per-chain LLC, runaway and non-finite chains, standard error, burn-in from
the loss and the distance, the adaptive stop rule, the diagnostic means, the summary row and the
glue of estimate_llc_many (issue 15: tests a mutation run cannot slip past). No SGLD beyond a
few steps of a tiny model; devinterp replaced by a recorder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grokking_llc import devinterp_backend, llc
from grokking_llc.config import SamplerConfig
from grokking_llc.diagnostics import (
    drift_z,
    effective_sample_size,
    plateau_burn_in,
    r_hat,
    r_hat_tail,
    standard_error,
)
from grokking_llc.llc import (
    BACKENDS,
    RUNAWAY_FACTOR,
    SUMMARY_COLUMNS,
    LLCResult,
    _draws_are_enough,
    _split_draws,
    default_diag_every,
    default_nbeta,
    estimate_llc,
    estimate_llc_many,
    llc_from_traces,
)
from grokking_llc.model import QuadraticNet, centred_mse
from grokking_llc.sgld import SamplerOptions, sample_chains_many


def noise_trace(chains, steps, seed=0, level=1.0, scale=0.1):
    return level + scale * np.random.default_rng(seed).standard_normal((chains, steps))


# ----------------------------------------------------------------------------- small pieces


def test_constants_and_defaults():
    assert BACKENDS == ("devinterp", "fast")
    assert RUNAWAY_FACTOR == 1000.0
    assert default_nbeta(8) == pytest.approx(8 / math.log(8))
    assert default_nbeta(100) == pytest.approx(21.714724095162588)
    # ~30 diagnostic steps per run, between every 20th and every 100th step
    for n, want in [
        (0, 20),
        (600, 20),
        (629, 20),
        (630, 21),
        (660, 22),
        (900, 30),
        (2999, 99),
        (3000, 100),
        (3030, 100),
        (100000, 100),
    ]:
        assert default_diag_every(n) == want
        assert isinstance(default_diag_every(n), int)


def test_llc_per_chain_mean_std_and_se_fixed_burn_in():
    trace = noise_trace(4, 60, seed=1)
    trace[:, :5] = 50.0  # burn-in, dropped
    init, nbeta = 0.8, 7.0
    res = llc_from_traces(trace, init, nbeta, 5, burn_in="fixed")
    draws = trace[:, 5:]
    per = nbeta * (draws.mean(axis=1) - init)
    np.testing.assert_allclose(res.llc_per_chain, per, rtol=1e-12)
    assert res.llc_mean == pytest.approx(per.mean(), rel=1e-12)
    assert res.llc_std == pytest.approx(per.std(ddof=1), rel=1e-12)
    se = max(nbeta * standard_error(draws), per.std(ddof=1) / 2.0)
    assert res.llc_se == pytest.approx(se, rel=1e-12)
    assert res.r_hat == pytest.approx(r_hat(draws))
    assert res.r_hat_tail == pytest.approx(r_hat_tail(draws))
    assert res.drift_z == pytest.approx(drift_z(draws))
    assert res.ess == pytest.approx(effective_sample_size(draws))
    assert (res.burn_in, res.num_steps, res.num_burnin_steps) == (5, 60, 5)
    assert res.nbeta == 7.0 and res.init_loss == 0.8 and res.reason == ""
    assert res.num_chains == 4
    assert not res.diverged.any() and res.diverged.shape == (4,)
    assert res.loss_trace.dtype == np.float64
    assert res.sampler_kind == "sgld"
    # no diagnostics: the diagnostic means are unknown, so the estimate is not valid
    assert math.isnan(res.mala_acceptance) and math.isnan(res.mean_distance)
    assert math.isnan(res.grad_loc_ratio) and math.isnan(res.r_hat_distance)
    assert math.isnan(res.prior_radius)
    assert not res.valid and not res.step_ok and res.localisation_dominated
    assert res.diagnostics == {}


def test_chain_spread_raises_the_standard_error():
    # chains at different levels, tiny noise: the spread across chains dominates
    trace = noise_trace(4, 80, seed=2, scale=1e-3) + np.array([[0.0], [1.0], [2.0], [3.0]])
    res = llc_from_traces(trace, 0.0, 2.0, 0, burn_in="fixed")
    per = 2.0 * trace.mean(axis=1)
    assert res.llc_se == pytest.approx(per.std(ddof=1) / 2.0, rel=1e-9)
    assert res.llc_se > 2.0 * standard_error(trace)


def test_one_chain_std_zero_and_no_r_hat():
    trace = noise_trace(1, 40, seed=3)
    res = llc_from_traces(trace, 0.5, 3.0, 4, burn_in="fixed")
    assert res.llc_std == 0.0
    assert math.isnan(res.r_hat) and math.isnan(res.r_hat_tail)
    assert res.drift_z == pytest.approx(drift_z(trace[:, 4:]))
    assert res.ess == pytest.approx(effective_sample_size(trace[:, 4:]))
    assert res.llc_se == pytest.approx(3.0 * standard_error(trace[:, 4:]))
    assert res.llc_mean == pytest.approx(3.0 * (trace[0, 4:].mean() - 0.5))


def test_runaway_threshold_is_relative_to_the_init_loss():
    init = 2.0
    trace = np.full((3, 10), init)
    trace[1] += 1000.0 * 2.0 * 0.999  # just below the runaway threshold 2000
    trace[2] += 1000.0 * 2.0 * 1.001  # just above
    res = llc_from_traces(trace, init, 1.0, 2, burn_in="fixed")
    assert res.diverged.tolist() == [False, False, True]
    assert res.llc_mean == pytest.approx((0.0 + 1998.0) / 2)
    # |init| < 1: the threshold is RUNAWAY_FACTOR itself
    trace = np.full((2, 10), 0.1)
    trace[0] += 999.0
    trace[1] += 1001.0
    res = llc_from_traces(trace, 0.1, 1.0, 2, burn_in="fixed")
    assert res.diverged.tolist() == [False, True]
    # a negative init loss: |init| counts
    trace = np.full((2, 10), -3.0)
    trace[0] += 2999.0
    trace[1] += 3001.0
    assert llc_from_traces(trace, -3.0, 1.0, 2, burn_in="fixed").diverged.tolist() == [
        False,
        True,
    ]


def test_non_finite_chains_left_out_and_reasons():
    trace = noise_trace(3, 20, seed=4)
    trace[0, 7] = np.nan
    trace[2, 3] = np.inf  # in the burn-in, still diverged
    res = llc_from_traces(trace, 0.9, 2.0, 5, burn_in="fixed")
    assert res.diverged.tolist() == [True, False, True]
    assert res.llc_mean == pytest.approx(2.0 * (trace[1, 5:].mean() - 0.9))
    assert res.llc_std == 0.0 and res.reason == ""
    assert res.summary()["num_diverged"] == 2
    # every chain diverged
    bad = np.full((2, 10), np.nan)
    res = llc_from_traces(bad, 0.9, 2.0, 5)
    assert math.isnan(res.llc_mean) and math.isnan(res.llc_std) and math.isnan(res.llc_se)
    assert res.reason == "all chains diverged (NaN/inf or runaway loss)"
    assert math.isnan(res.drift_z) and math.isnan(res.ess)
    assert res.burn_in == 5
    # non-finite loss at the checkpoint itself: nothing kept although the chains are finite
    res = llc_from_traces(noise_trace(2, 10), math.nan, 2.0, 5)
    assert res.reason == "non-finite loss at the checkpoint itself"
    assert math.isnan(res.llc_mean) and math.isnan(res.llc_std)
    assert "no finite estimate" in res.invalid_reason


def test_trace_must_have_draws_after_the_burn_in():
    with pytest.raises(ValueError, match=r"^loss_trace of shape \(2, 5\) has no draws after 5 "):
        llc_from_traces(np.zeros((2, 5)), 0.0, 1.0, 5)
    with pytest.raises(ValueError, match="has no draws after"):
        llc_from_traces(np.zeros(8), 0.0, 1.0, 2)
    assert llc_from_traces(np.zeros((2, 6)), 0.0, 1.0, 5, burn_in="fixed").burn_in == 5


def test_prior_radius():
    tr = noise_trace(2, 10)
    kw = dict(burn_in="fixed")
    assert llc_from_traces(tr, 0, 1, 2, localization=4.0, num_params=9, **kw).prior_radius == 1.5
    assert llc_from_traces(tr, 0, 1, 2, localization=0.0, num_params=9, **kw).prior_radius == (
        math.inf
    )
    assert math.isnan(
        llc_from_traces(tr, 0, 1, 2, localization=-1.0, num_params=9, **kw).prior_radius
    )
    assert math.isnan(llc_from_traces(tr, 0, 1, 2, localization=4.0, **kw).prior_radius)


# ----------------------------------------------------------------------------- burn-in


def test_auto_burn_in_is_the_loss_plateau_at_least_the_minimum():
    rng = np.random.default_rng(5)
    steps = 200
    relax = np.where(np.arange(steps) < 60, 5.0 - np.arange(steps) / 15.0, 1.0)
    trace = relax + 0.05 * rng.standard_normal((4, steps))
    trace[3, 100] = np.nan  # left out of the plateau
    want = plateau_burn_in(trace[:3], minimum=10)
    assert want >= 50
    res = llc_from_traces(trace, 0.0, 1.0, 10)
    assert res.burn_in == want
    burn, bad = _split_draws(trace, 10, "auto")
    assert (burn, bad.tolist()) == (want, [False, False, False, True])
    assert _split_draws(trace, 10, "fixed")[0] == 10
    assert _split_draws(trace, 150, "auto")[0] == plateau_burn_in(trace[:3], minimum=150)
    with pytest.raises(ValueError, match=r"^burn_in 'x': choose 'auto' or 'fixed'$"):
        _split_draws(trace, 10, "x")
    # no finite chain: the configured burn-in, whatever the mode
    assert _split_draws(np.full((2, 30), np.inf), 7, "x")[0] == 7


def _relaxing_distance(chains, points, cut, seed=0):
    rng = np.random.default_rng(seed)
    base = np.where(np.arange(points) < cut, np.arange(points) / cut, 1.0)
    return base + 0.01 * rng.standard_normal((chains, points))


def test_auto_burn_in_extends_to_the_distance_plateau_per_step_trace():
    trace = noise_trace(4, 200, seed=6)  # flat loss: its plateau is the minimum
    dist = _relaxing_distance(4, 200, 60)
    cut = plateau_burn_in(dist)
    assert 40 <= cut <= 100
    burn, _ = _split_draws(trace, 10, "auto", {"distance_trace": dist})
    assert burn == max(plateau_burn_in(trace, minimum=10), cut)
    # capped at half the run (or the configured burn-in when that is larger)
    dist2 = _relaxing_distance(4, 200, 150)
    cut2 = plateau_burn_in(dist2)
    burn2, _ = _split_draws(trace, 10, "auto", {"distance_trace": dist2})
    assert burn2 == max(plateau_burn_in(trace, minimum=10), min(cut2, 100))
    burn3, _ = _split_draws(trace, 120, "auto", {"distance_trace": dist2})
    assert burn3 == max(plateau_burn_in(trace, minimum=120), min(cut2, 120))


def test_auto_burn_in_from_the_diagnostic_steps_distance():
    trace = noise_trace(4, 400, seed=7)
    steps = np.arange(19, 400, 20)  # 20 diagnostic points... too few columns below 20? 20 here
    assert len(steps) == 20
    dist = _relaxing_distance(4, 20, 8, seed=1)
    cut = plateau_burn_in(dist)
    assert cut > 0
    diag = {"distance": dist, "steps": steps, "grad_norm": dist, "loc_norm": dist}
    burn, _ = _split_draws(trace, 10, "auto", diag)
    assert burn == max(plateau_burn_in(trace, minimum=10), min(int(steps[cut - 1]) + 1, 200))
    # fewer than 20 points: not used
    short = {"distance": dist[:, :19], "steps": steps[:19]}
    assert _split_draws(trace, 10, "auto", short)[0] == plateau_burn_in(trace, minimum=10)
    # without "steps" the columns are steps 0, 1, ...
    nosteps = {"distance": dist}
    assert _split_draws(trace, 10, "auto", nosteps)[0] == max(
        plateau_burn_in(trace, minimum=10), cut
    )
    # a non-finite distance series is ignored
    nan_dist = dist.copy()
    nan_dist[0, 3] = np.nan
    assert _split_draws(trace, 10, "auto", {"distance": nan_dist})[0] == plateau_burn_in(
        trace, minimum=10
    )


def test_distance_rows_of_the_finite_chains_only():
    trace = noise_trace(4, 200, seed=8)
    trace[0, 50] = np.nan
    dist = _relaxing_distance(4, 200, 70)
    dist[0] = np.nan  # the diverged chain's distance: must be left out with it
    burn, bad = _split_draws(trace, 10, "auto", {"distance_trace": dist})
    assert bad.tolist() == [True, False, False, False]
    assert burn == max(plateau_burn_in(trace[1:], minimum=10), min(plateau_burn_in(dist[1:]), 100))
    # a distance series with another number of rows is used whole
    dist3 = _relaxing_distance(3, 200, 70)
    burn3, _ = _split_draws(trace, 10, "auto", {"distance_trace": dist3})
    assert burn3 == max(plateau_burn_in(trace[1:], minimum=10), min(plateau_burn_in(dist3), 100))


# ----------------------------------------------------------------------------- diagnostics


def test_diagnostic_means_over_kept_chains_after_the_burn_in():
    C, D = 4, 10
    steps = np.arange(0, 100, 10)
    rng = np.random.default_rng(9)
    la = rng.normal(-0.1, 0.3, (C, D))
    dist = 1.0 + 0.1 * rng.random((C, D))
    grad = 2.0 + rng.random((C, D))
    loc = 0.5 + rng.random((C, D))
    trace = noise_trace(C, 100, seed=10)
    trace[2, 5] = np.nan
    diag = {"steps": steps, "log_accept": la, "distance": dist, "grad_norm": grad, "loc_norm": loc}
    res = llc_from_traces(
        trace, 0.0, 1.0, 35, burn_in="fixed", diagnostics=diag, localization=2.0, num_params=8
    )
    keep, cols = np.array([True, True, False, True]), steps >= 35
    assert res.mala_acceptance == pytest.approx(np.minimum(1, np.exp(la[keep][:, cols])).mean())
    assert res.mean_distance == pytest.approx(dist[keep][:, cols].mean())
    assert res.grad_loc_ratio == pytest.approx(
        grad[keep][:, cols].mean() / loc[keep][:, cols].mean()
    )
    assert res.r_hat_distance == pytest.approx(r_hat(dist[keep][:, cols]))
    assert res.prior_radius == 2.0
    assert set(res.diagnostics) == set(diag)
    # with a per-step distance trace, its R-hat is the one used
    dtrace = 1.0 + 0.1 * rng.random((C, 100))
    res2 = llc_from_traces(
        trace, 0.0, 1.0, 35, burn_in="fixed", diagnostics={**diag, "distance_trace": dtrace}
    )
    assert res2.r_hat_distance == pytest.approx(r_hat(dtrace[keep][:, 35:]))
    assert res2.mean_distance == pytest.approx(dist[keep][:, cols].mean())


def test_diagnostic_means_edge_cases():
    C, D = 2, 4
    steps = np.array([0, 5, 10, 15])
    base = {
        "steps": steps,
        "distance": np.ones((C, D)),
        "grad_norm": np.ones((C, D)),
        "loc_norm": np.zeros((C, D)),
    }
    tr = noise_trace(C, 20)
    res = llc_from_traces(tr, 0.0, 1.0, 2, burn_in="fixed", diagnostics=base)
    assert res.grad_loc_ratio == math.inf  # no localisation force, some gradient
    assert math.isnan(res.mala_acceptance)  # no log_accept
    assert res.mean_distance == 1.0
    zero = {**base, "grad_norm": np.zeros((C, D)), "log_accept": np.zeros((C, 0))}
    res = llc_from_traces(tr, 0.0, 1.0, 2, burn_in="fixed", diagnostics=zero)
    assert math.isnan(res.grad_loc_ratio) and math.isnan(res.mala_acceptance)
    # MALA: exp(log_accept) capped at 1
    big = {**base, "log_accept": np.array([[5.0, 5.0, 0.0, np.log(0.5)], [-np.inf] * 4])}
    res = llc_from_traces(tr, 0.0, 1.0, 2, burn_in="fixed", diagnostics=big)
    assert res.mala_acceptance == pytest.approx((1 + 1 + 0.5 + 0 + 0 + 0) / 6)
    # every diagnostic step inside the burn-in: unknown
    late = llc_from_traces(tr, 0.0, 1.0, 16, burn_in="fixed", diagnostics=base)
    assert math.isnan(late.mean_distance) and math.isnan(late.grad_loc_ratio)
    # one kept chain: no distance R-hat, the means still known
    one = {k: (v[:1] if k != "steps" else v) for k, v in big.items()}
    res = llc_from_traces(tr[:1], 0.0, 1.0, 2, burn_in="fixed", diagnostics=one)
    assert math.isnan(res.r_hat_distance) and res.mean_distance == 1.0
    assert res.mala_acceptance == pytest.approx(2.5 / 3)
    # no "steps": the columns are steps 0, 1, 2, ...
    nosteps = {k: v for k, v in big.items() if k != "steps"}
    res = llc_from_traces(tr, 0.0, 1.0, 2, burn_in="fixed", diagnostics=nosteps)
    assert res.mala_acceptance == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    # all chains diverged: unknown
    res = llc_from_traces(np.full((C, 20), np.nan), 0.0, 1.0, 2, diagnostics=big)
    assert math.isnan(res.mean_distance)
    # only a per-step distance trace, no "distance": unknown
    res = llc_from_traces(
        tr, 0.0, 1.0, 2, burn_in="fixed", diagnostics={"distance_trace": np.ones((C, 20))}
    )
    assert math.isnan(res.mean_distance) and math.isnan(res.r_hat_distance)
    # an empty distance array: unknown
    res = llc_from_traces(
        tr, 0.0, 1.0, 2, burn_in="fixed", diagnostics={**base, "distance": np.zeros((C, 0))}
    )
    assert math.isnan(res.mean_distance)


def test_a_good_run_is_valid_and_the_verdict_is_passed_through():
    rng = np.random.default_rng(11)
    C, T = 4, 2000
    trace = 1.0 + 0.1 * rng.standard_normal((C, T))
    steps = np.arange(0, T, 20)
    D = len(steps)
    diag = {
        "steps": steps,
        "log_accept": np.zeros((C, D)),
        "distance": 1.0 + 0.01 * rng.standard_normal((C, D)),
        "grad_norm": np.full((C, D), 3.0),
        "loc_norm": np.ones((C, D)),
    }
    res = llc_from_traces(trace, 0.5, 2.0, 10, diagnostics=diag, sampler_kind="rmsprop")
    assert res.valid and res.stationary and res.step_ok and not res.localisation_dominated
    assert res.invalid_reason == "" and res.sampler_kind == "rmsprop"
    assert res.grad_loc_ratio == 3.0 and res.mala_acceptance == 1.0
    bad = llc_from_traces(
        trace,
        0.5,
        2.0,
        10,
        diagnostics={**diag, "log_accept": -np.ones((C, D))},
        mala_note="why no MALA",
    )
    assert not bad.valid and not bad.step_ok and bad.invalid_reason == "why no MALA"
    s = res.summary()
    assert tuple(s) == SUMMARY_COLUMNS
    assert s["valid"] is True and s["sampler_kind"] == "rmsprop" and s["num_diverged"] == 0
    assert s["num_steps"] == T and s["nbeta"] == 2.0 and s["init_loss"] == 0.5
    for k in SUMMARY_COLUMNS:
        v = getattr(res, k, None)
        if k == "num_diverged":
            continue
        assert s[k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(s[k]))
        assert type(s[k]) is type(v) or isinstance(v, (np.floating, np.integer, np.bool_))


def test_llcresult_defaults():
    r = LLCResult(1.0, 0.0, np.zeros(2), np.zeros((2, 3)), 0.0, 1.0, 0)
    assert r.num_chains == 2 and r.diverged.shape == (0,)
    assert (r.reason, r.burn_in, r.num_steps, r.sampler_kind) == ("", 0, 0, "sgld")
    assert (r.stationary, r.localisation_dominated, r.step_ok, r.valid) == (
        False,
        True,
        False,
        False,
    )
    assert math.isnan(r.r_hat) and math.isnan(r.llc_se) and r.invalid_reason == ""
    assert r.diagnostics == {}


# ----------------------------------------------------------------------------- stop rule


def test_stop_rule_cases():
    rng = np.random.default_rng(12)
    good = 1.0 + 0.1 * rng.standard_normal((4, 3000))
    assert _draws_are_enough(good, None, 10, "fixed", 100.0)
    assert not _draws_are_enough(good, None, 10, "fixed", 1e9)  # ESS below the target
    assert _draws_are_enough(good, None, 10, "fixed", effective_sample_size(good[:, 10:]))
    assert not _draws_are_enough(good[:3], None, 10, "fixed", 100.0)  # fewer than 4 chains
    drifting = good + np.linspace(0, 5, 3000)
    assert not _draws_are_enough(drifting, None, 10, "fixed", 100.0)
    split = good.copy()
    split[0] += 3.0  # one chain elsewhere: R-hat
    assert not _draws_are_enough(split, None, 10, "fixed", 100.0)
    tail = good.copy()
    tail[0, 2000:] += 1.0  # only the tail disagrees
    assert not _draws_are_enough(tail, None, 10, "fixed", 10.0)
    one_bad = good.copy()
    one_bad[1, 5] = np.nan
    assert not _draws_are_enough(one_bad, None, 10, "fixed", 1.0)
    assert _draws_are_enough(np.full((4, 50), np.nan), None, 10, "fixed", 1e9)  # nothing to gain
    # at least 16 draws
    assert not _draws_are_enough(good[:, :25], None, 10, "fixed", 1.0)
    assert _draws_are_enough(good[:, :26], None, 10, "fixed", 1.0) == bool(
        r_hat(good[:, 10:26]) < 1.1
        and r_hat_tail(good[:, 10:26]) < 1.1
        and abs(drift_z(good[:, 10:26])) <= 3.0
    )
    # the distance R-hat over the diagnostic steps after the burn-in
    steps = np.arange(0, 3000, 20)
    dist = 1.0 + 0.01 * rng.standard_normal((4, len(steps)))
    diag = {"steps": steps, "distance": dist, "grad_norm": dist, "loc_norm": dist}
    assert _draws_are_enough(good, diag, 10, "fixed", 100.0)
    off = dist.copy()
    off[0, 10:] += 1.0  # disagrees after the burn-in
    assert not _draws_are_enough(good, {**diag, "distance": off}, 10, "fixed", 100.0)
    early = dist.copy()
    early[0, :75] += 1.0  # disagrees only before step 1500: cut by a fixed burn-in of 1500
    assert _draws_are_enough(good, {**diag, "distance": early}, 1500, "fixed", 100.0)
    assert not _draws_are_enough(good, {**diag, "distance": early}, 30, "fixed", 100.0)


# ----------------------------------------------------------------------------- estimate_llc_many


def _quad():
    gen = torch.Generator().manual_seed(0)
    model = QuadraticNet(3, 2, generator=gen)
    a, b = torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij")
    x = torch.stack([a.reshape(-1), b.reshape(-1)], 1)
    return model, x, (x[:, 0] + x[:, 1]) % 3


SAMPLER = dict(
    lr=0.01,
    nbeta=3.0,
    localization=2.0,
    num_chains=2,
    num_burnin_steps=2,
    num_draws=38,
    batch_size=3,
    weight_decay=0.0,
    num_init_loss_batches=2,
)


def test_fast_backend_is_llc_of_the_sampler_traces():
    model, x, y = _quad()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    states = [before, {k: v + 0.1 for k, v in before.items()}]
    out = estimate_llc_many(model, states, x, y, centred_mse, SAMPLER, seeds=[3, 4], backend="fast")
    cfg = SamplerConfig(**SAMPLER)
    ref = sample_chains_many(
        model, states, x, y, centred_mse, cfg, seeds=[3, 4], device="cpu", diag_every=20
    )
    for res, r in zip(out, ref, strict=True):
        np.testing.assert_array_equal(res.loss_trace, r.trace)
        assert res.burn_in >= 2
        want = 3.0 * (r.trace[:, res.burn_in :].mean(axis=1) - r.init_loss)
        np.testing.assert_allclose(res.llc_per_chain, want, rtol=1e-12)
        np.testing.assert_array_equal(res.diagnostics["steps"], [19, 39])
        np.testing.assert_array_equal(res.diagnostics["distance_trace"], r.distance_trace)
        assert res.prior_radius == pytest.approx(math.sqrt(r.num_params / 2.0))
        assert res.num_steps == 40 and res.nbeta == 3.0 and res.num_burnin_steps == 2
    for k, v in model.named_parameters():
        assert torch.equal(v.detach(), before[k])
    # estimate_llc: the model's own parameters with that seed; diag_every given and 0
    one = estimate_llc(model, x, y, centred_mse, SAMPLER, seed=3, backend="fast")
    np.testing.assert_array_equal(one.loss_trace, out[0].loss_trace)
    five = estimate_llc(model, x, y, centred_mse, SAMPLER, seed=3, backend="fast", diag_every=5)
    assert five.diagnostics["steps"].tolist() == list(range(4, 40, 5))
    none = estimate_llc(model, x, y, centred_mse, SAMPLER, seed=3, backend="fast", diag_every=0)
    assert none.diagnostics["steps"].size == 0 and math.isnan(none.mean_distance)
    # the options of the mapping reach the sampler (kind, fixed burn-in)
    rms = estimate_llc(
        model,
        x,
        y,
        centred_mse,
        {**SAMPLER, "kind": "rmsprop", "burn_in": "fixed"},
        seed=3,
        backend="fast",
    )
    ref_rms = sample_chains_many(
        model,
        states[:1],
        x,
        y,
        centred_mse,
        cfg,
        seeds=[3],
        device="cpu",
        diag_every=20,
        options=SamplerOptions(kind="rmsprop"),
    )
    np.testing.assert_array_equal(rms.loss_trace, ref_rms[0].trace)
    assert rms.burn_in == 2 and rms.sampler_kind == "rmsprop"


def test_fast_backend_adaptive_length():
    model, x, y = _quad()
    sampler = {**SAMPLER, "num_draws": 18, "max_steps": 45, "target_ess": 1e9}
    res = estimate_llc(model, x, y, centred_mse, sampler, seed=1, backend="fast")
    assert res.num_steps == 45  # never enough: runs to the cap
    full = estimate_llc(
        model,
        x,
        y,
        centred_mse,
        {**SAMPLER, "num_draws": 43},
        seed=1,
        backend="fast",
        diag_every=20,
    )
    np.testing.assert_array_equal(res.loss_trace, full.loss_trace)
    # the default diagnostic spacing is from the initial run length (20 steps -> every 20th)
    assert res.diagnostics["steps"].tolist() == [19, 39]
    # max_steps equal to the run: fixed length
    fixed = estimate_llc(
        model,
        x,
        y,
        centred_mse,
        {**SAMPLER, "num_draws": 18, "max_steps": 20},
        seed=1,
        backend="fast",
    )
    assert fixed.num_steps == 20
    # the stop rule is llc's own: with all chains diverged it stops at the first check
    stopped = estimate_llc(model, x, y, centred_mse, {**sampler, "lr": 1e6}, seed=1, backend="fast")
    assert stopped.num_steps == 20


def test_argument_checks():
    model, x, y = _quad()
    st = [dict(model.named_parameters())]
    with pytest.raises(ValueError, match=r"^1 states but 2 seeds$"):
        estimate_llc_many(model, st, x, y, centred_mse, SAMPLER, seeds=[0, 1], backend="fast")
    with pytest.raises(ValueError, match=r"^x and y differ in length: 9 != 8$"):
        estimate_llc_many(model, st, x, y[:8], centred_mse, SAMPLER, seeds=[0], backend="fast")
    with pytest.raises(ValueError, match=r"^sampler batch_size 10 exceeds the 9 samples$"):
        estimate_llc_many(
            model, st, x, y, centred_mse, {**SAMPLER, "batch_size": 10}, seeds=[0], backend="fast"
        )
    with pytest.raises(ValueError, match=r"^unknown LLC backend 'x'; choose one of \('devinterp'"):
        estimate_llc_many(model, st, x, y, centred_mse, SAMPLER, seeds=[0], backend="x")
    full = {**SAMPLER, "batch_size": 9, "num_draws": 18}
    assert estimate_llc(model, x, y, centred_mse, full, backend="fast").num_steps == 20


def test_devinterp_branch_sets_each_state_and_restores_the_model(monkeypatch, caplog):
    model, x, y = _quad()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    states = [{k: v + 1.0 for k, v in before.items()}, {k: v - 2.0 for k, v in before.items()}]
    seen = []
    T = 30

    def fake(m, xx, yy, loss_fn, cfg, *, seed, device, options):
        seen.append(
            (seed, device, options.kind, {k: v.detach().clone() for k, v in m.named_parameters()})
        )
        rng = np.random.default_rng(seed)
        return {
            "trace": 1.0 + 0.1 * rng.standard_normal((2, T)),
            "init_loss": 0.5,
            "num_params": 18,
            "distance": np.ones((2, T)),
            "grad_norm": np.full((2, T), 2.0),
            "loc_norm": np.ones((2, T)),
        }

    monkeypatch.setattr(devinterp_backend, "sample_chains", fake)
    sampler = {**SAMPLER, "num_draws": 28, "max_steps": 60}
    with caplog.at_level("WARNING", logger=llc.__name__):
        out = estimate_llc_many(
            model, states, x, y, centred_mse, sampler, seeds=[7, 8], backend="devinterp"
        )
    assert "devinterp backend: fixed length 30 steps (no adaptive length)" in caplog.text
    assert [s[:3] for s in seen] == [(7, "cpu", "sgld"), (8, "cpu", "sgld")]
    for (_, _, _, params), st in zip(seen, states, strict=True):
        for k in params:
            assert torch.equal(params[k], st[k])
    for k, v in model.named_parameters():
        assert torch.equal(v.detach(), before[k])
    for res, seed in zip(out, [7, 8], strict=True):
        tr = 1.0 + 0.1 * np.random.default_rng(seed).standard_normal((2, T))
        np.testing.assert_allclose(
            res.llc_per_chain, 3.0 * (tr[:, res.burn_in :].mean(axis=1) - 0.5)
        )
        assert res.grad_loc_ratio == 2.0 and res.prior_radius == 3.0
        assert not res.step_ok and "no MALA acceptance from devinterp 2.0.1" in res.invalid_reason
        assert set(res.diagnostics) == {"distance", "grad_norm", "loc_norm"}
    # no warning without an adaptive cap above the run length
    caplog.clear()
    with caplog.at_level("WARNING", logger=llc.__name__):
        estimate_llc_many(
            model,
            states[:1],
            x,
            y,
            centred_mse,
            {**SAMPLER, "num_draws": 28, "max_steps": 30},
            seeds=[1],
            backend="devinterp",
        )
    assert "fixed length" not in caplog.text

    # the model is restored even when the sampler fails
    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(devinterp_backend, "sample_chains", boom)
    with pytest.raises(RuntimeError, match="boom"):
        estimate_llc_many(
            model, states, x, y, centred_mse, SAMPLER, seeds=[1, 2], backend="devinterp"
        )
    for k, v in model.named_parameters():
        assert torch.equal(v.detach(), before[k])
    # estimate_llc's default backend is devinterp, its default seed 0
    seen.clear()
    monkeypatch.setattr(devinterp_backend, "sample_chains", fake)
    estimate_llc(model, x, y, centred_mse, {**SAMPLER, "num_draws": 28})
    assert seen[0][0] == 0


# ----------------------------------------------------------------------------- more edges


def test_two_chains_get_r_hat_std_and_distance_r_hat():
    tr = noise_trace(2, 40, seed=13)
    steps = np.arange(0, 40, 4)
    dist = 1.0 + 0.1 * np.random.default_rng(14).random((2, 10))
    diag = {"steps": steps, "distance": dist, "grad_norm": dist, "loc_norm": dist}
    res = llc_from_traces(tr, 0.0, 1.0, 4, burn_in="fixed", diagnostics=diag)
    assert res.r_hat == pytest.approx(r_hat(tr[:, 4:]))
    assert res.r_hat_tail == pytest.approx(r_hat_tail(tr[:, 4:]))
    assert res.llc_std == pytest.approx(tr[:, 4:].mean(axis=1).std(ddof=1))
    assert res.r_hat_distance == pytest.approx(r_hat(dist[:, 1:]))


def test_no_numpy_warnings_on_diverged_chains_one_chain_or_huge_log_accept():
    import warnings

    tr = noise_trace(3, 30, seed=15)
    tr[0, 10] = np.inf
    tr[0, 11] = -np.inf  # inf - inf in the mean: an invalid value
    tr[1, 12] = np.nan
    tr[2, 3] = 1e308
    tr[2, 4] = 1e308  # the mean overflows
    la = np.full((3, 5), 1e4)  # exp overflows
    d = np.ones((3, 5))
    diag = {
        "steps": np.arange(0, 30, 6),
        "log_accept": la,
        "distance": d,
        "grad_norm": d,
        "loc_norm": d,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = llc_from_traces(tr, 0.0, 1.0, 2, burn_in="fixed", diagnostics=diag)
        assert res.diverged.all()
        assert math.isnan(res.llc_se)
        one = llc_from_traces(
            noise_trace(1, 30),
            0.0,
            1.0,
            2,
            diagnostics={
                **diag,
                "log_accept": la[:1],
                "distance": d[:1],
                "grad_norm": d[:1],
                "loc_norm": d[:1],
            },
        )
        assert one.mala_acceptance == 1.0 and one.llc_std == 0.0
        assert one.llc_se == pytest.approx(standard_error(noise_trace(1, 30)[:, one.burn_in :]))


def test_float32_trace_is_taken_in_float64():
    tr32 = noise_trace(3, 50, seed=16).astype(np.float32)
    res = llc_from_traces(tr32, 0.3, 5.0, 5, burn_in="fixed")
    assert res.loss_trace.dtype == np.float64
    want = 5.0 * (tr32.astype(np.float64)[:, 5:].mean(axis=1) - 0.3)
    np.testing.assert_allclose(res.llc_per_chain, want, rtol=1e-14)


def test_the_distance_burn_in_reaches_the_estimate_and_the_stop_rule():
    rng = np.random.default_rng(17)
    good = 1.0 + 0.1 * rng.standard_normal((4, 400))
    dist = 1.0 + 0.01 * rng.standard_normal((4, 400))
    dist[0, :80] = 5.0  # one chain far out for 80 steps, then with the others
    cut = plateau_burn_in(dist)
    assert cut >= 80
    res = llc_from_traces(good, 0.0, 1.0, 10, diagnostics={"distance_trace": dist})
    assert res.burn_in == max(plateau_burn_in(good, minimum=10), min(cut, 200))
    # stationary once the excursion is cut; its R-hat fails it without the cut
    assert r_hat(dist[:, 10:]) >= 1.1
    assert _draws_are_enough(good, {"distance_trace": dist}, 10, "auto", 10.0)


def test_a_flat_distance_does_not_extend_the_burn_in():
    trace = noise_trace(4, 200, seed=18)
    flat = np.ones((4, 200))
    assert plateau_burn_in(flat) == 0
    assert _split_draws(trace, 10, "auto", {"distance_trace": flat})[0] == plateau_burn_in(
        trace, minimum=10
    )


def test_diverged_count_and_dominance_reach_the_verdict_and_summary():
    tr = noise_trace(4, 60, seed=19)
    tr[3, 7] = np.nan
    d = np.ones((4, 6))
    diag = {
        "steps": np.arange(0, 60, 10),
        "log_accept": np.zeros((4, 6)),
        "distance": d,
        "grad_norm": 0.5 * d,
        "loc_norm": d,
    }
    res = llc_from_traces(tr, 0.0, 1.0, 5, burn_in="fixed", diagnostics=diag)
    assert "1 chain(s) diverged" in res.invalid_reason
    assert res.localisation_dominated and "localisation-dominated (grad/loc 0.5)" in (
        res.invalid_reason
    )
    s = res.summary()
    assert s["localisation_dominated"] is True and s["num_diverged"] == 1
    assert s["step_ok"] is True and s["stationary"] is False


def test_fast_backend_passes_every_diagnostic_through():
    model, x, y = _quad()
    res = estimate_llc(model, x, y, centred_mse, SAMPLER, seed=2, backend="fast", diag_every=4)
    cfg = SamplerConfig(**SAMPLER)
    st = [{k: v.detach() for k, v in model.named_parameters()}]
    [r] = sample_chains_many(
        model, st, x, y, centred_mse, cfg, seeds=[2], device="cpu", diag_every=4
    )
    cols = r.diag_steps >= res.burn_in
    assert res.mala_acceptance == pytest.approx(np.minimum(1, np.exp(r.log_accept[:, cols])).mean())
    assert res.mean_distance == pytest.approx(r.distance[:, cols].mean())
    assert res.grad_loc_ratio == pytest.approx(
        r.grad_norm[:, cols].mean() / r.loc_norm[:, cols].mean()
    )
    assert set(res.diagnostics) == {
        "steps",
        "log_accept",
        "distance",
        "grad_norm",
        "loc_norm",
        "distance_trace",
    }


def test_devinterp_gets_the_data_and_is_estimate_llc_manys_default(monkeypatch, caplog):
    model, x, y = _quad()
    got = []

    def fake(m, xx, yy, loss_fn, cfg, *, seed, device, options):
        got.append((xx, yy, loss_fn, cfg))
        t = 1.0 + 0.1 * np.random.default_rng(seed).standard_normal((2, 30))
        o = np.ones((2, 30))
        return {
            "trace": t,
            "init_loss": 0.5,
            "num_params": 18,
            "distance": o,
            "grad_norm": o,
            "loc_norm": o,
        }

    monkeypatch.setattr(devinterp_backend, "sample_chains", fake)
    st = [{k: v.detach() for k, v in model.named_parameters()}]
    with caplog.at_level("WARNING", logger=llc.__name__):
        estimate_llc_many(
            model, st, x, y, centred_mse, {**SAMPLER, "num_draws": 28, "max_steps": 40}, seeds=[1]
        )
    assert len(got) == 1
    assert torch.equal(got[0][0], x) and torch.equal(got[0][1], y) and got[0][2] is centred_mse
    assert got[0][3].num_steps == 30
    assert [r.getMessage() for r in caplog.records] == [
        "devinterp backend: fixed length 30 steps (no adaptive length)"
    ]
