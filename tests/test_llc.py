"""The LLC estimator (SPEC section 4) through the devinterp reference backend."""

import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn

from grokking_llc.config import SamplerConfig
from grokking_llc.data import make_split, split_tensors
from grokking_llc.llc import estimate_llc, llc_from_traces
from grokking_llc.model import QuadraticNet, centred_mse


def half_mse(pred, target):
    """Gaussian negative log-likelihood up to a constant: 0.5 * mean squared error."""
    return 0.5 * (pred - target).pow(2).sum(dim=1).mean()


def regular_problem(q=6, n=400, seed=0):
    """Linear regression with q parameters and a full-rank design; w* = least squares."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, q, generator=g)
    y = x @ torch.randn(q, 1, generator=g) + 0.3 * torch.randn(n, 1, generator=g)
    model = nn.Linear(q, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    return model, x, y


def test_regular_model_has_llc_d_over_2():
    """A regular model with q parameters has LLC q/2 (SPEC section 4, known answer).

    Full batch, small localisation (gamma/nbeta = 1e-3 of the Hessian's scale ~1), step
    eps*nbeta*h/2 ~ 0.05 so the discretisation bias ~1%; 4 chains x 1500 draws give a
    standard error of ~3% of q/2, so 10% is a >3-sigma tolerance.
    """
    q = 6
    model, x, y = regular_problem(q)
    sampler = dict(
        lr=2e-3, nbeta=50.0, localization=0.05, num_chains=4, num_burnin_steps=200,
        num_draws=1000, batch_size=len(x), num_init_loss_batches=1,
    )  # fmt: skip
    res = estimate_llc(model, x, y, half_mse, sampler, seed=1, backend="devinterp")
    assert res.llc_mean == pytest.approx(q / 2, rel=0.10)
    assert res.loss_trace.shape == (4, 1200) and not res.diverged.any()
    # devinterp has no MALA acceptance: the estimate is stationary but never called valid
    assert res.stationary and math.isnan(res.mala_acceptance) and not res.step_ok
    assert not res.valid and "no MALA acceptance" in res.invalid_reason


def test_burn_in_is_excluded_unlike_devinterps_own_llc():
    """devinterp 2.0.1's llc() averages over burn-in steps too; ours uses draws only."""
    from devinterp.slt.llc import llc as devinterp_llc

    from grokking_llc.devinterp_backend import as_devinterp_problem

    model, x, y = regular_problem(q=4, n=200)
    with torch.no_grad():
        model.weight.add_(0.5)  # start away from w*: the burn-in then visibly differs
    cfg = SamplerConfig(
        lr=1e-3, nbeta=20.0, localization=1.0, num_chains=2, num_burnin_steps=50,
        num_draws=100, batch_size=50, num_init_loss_batches=4,
    )  # fmt: skip
    ours = estimate_llc(
        model, x, y, half_mse, {**asdict(cfg), "burn_in": "fixed"}, seed=3, backend="devinterp"
    )
    dataset, loss = as_devinterp_problem(x, y, half_mse)
    theirs = devinterp_llc(
        model, dataset, {}, lr=cfg.lr, n_beta=cfg.nbeta, num_chains=2, num_draws=100,
        num_burnin_steps=50, batch_size=50, num_init_loss_batches=4, init_seed=3,
        localization=1.0, loss_fn=loss, device="cpu",
    )  # fmt: skip
    # same chains: the full traces agree, so devinterp's number is ours with burn-in kept
    np.testing.assert_allclose(ours.loss_trace, theirs.loss_trace.values, rtol=1e-6)
    with_burnin = cfg.nbeta * (ours.loss_trace.mean(axis=1) - ours.init_loss)
    np.testing.assert_allclose(theirs.llc_per_chain.values, with_burnin, rtol=1e-5)
    draws_only = cfg.nbeta * (ours.loss_trace[:, 50:].mean(axis=1) - ours.init_loss)
    np.testing.assert_allclose(ours.llc_per_chain, draws_only, rtol=1e-12)
    assert not np.allclose(ours.llc_per_chain, with_burnin, rtol=1e-3)
    assert ours.burn_in == 50
    # the default burn-in is measured: at least the configured 50 steps, here more
    auto = estimate_llc(model, x, y, half_mse, cfg, seed=3, backend="devinterp")
    assert auto.burn_in >= 50
    draws = auto.loss_trace[:, auto.burn_in :]
    np.testing.assert_allclose(auto.llc_per_chain, cfg.nbeta * (draws.mean(1) - auto.init_loss))


def test_quadratic_net_checkpoint_is_reproducible_and_leaves_model_alone():
    df = make_split(7, 0.6, 0)
    x, y = split_tensors(df, "train")
    net = QuadraticNet(7, 8, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    s = dict(lr=1e-4, num_chains=2, num_burnin_steps=5, num_draws=20, batch_size=8)
    a = estimate_llc(net, x, y, centred_mse, s, seed=5)
    b = estimate_llc(net, x, y, centred_mse, s, seed=5)
    c = estimate_llc(net, x, y, centred_mse, s, seed=6)
    assert a.llc_mean == b.llc_mean and a.llc_mean != c.llc_mean
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_llc_from_traces_marks_diverged_chains():
    trace = np.array([[1.0, 1.1, 1.2], [1.0, np.nan, 1.0], [1.0, 1.3, 1.1], [1.0, 5e4, 5e4]])
    res = llc_from_traces(trace, init_loss=1.0, nbeta=10.0, num_burnin_steps=1)
    assert res.diverged.tolist() == [False, True, False, True]
    # chains 0 and 2: 10 * (1.15 - 1) = 1.5 and 10 * (1.2 - 1) = 2.0
    assert res.llc_mean == pytest.approx(1.75) and res.llc_std == pytest.approx(0.3535534)
    bad = llc_from_traces(np.full((2, 3), np.inf), init_loss=1.0, nbeta=10.0, num_burnin_steps=1)
    assert math.isnan(bad.llc_mean) and "diverged" in bad.reason


def test_bad_arguments():
    model, x, y = regular_problem(q=2, n=10)
    with pytest.raises(ValueError, match="batch_size"):
        estimate_llc(model, x, y, half_mse, dict(batch_size=11))
    with pytest.raises(ValueError, match="unknown LLC backend"):
        estimate_llc(model, x, y, half_mse, dict(batch_size=5), backend="nope")
    with pytest.raises(ValueError, match="no draws"):
        llc_from_traces(np.zeros((1, 3)), 0.0, 1.0, num_burnin_steps=3)


# ------------------------------------------------------------------------------------------
# Validity fields (SPEC section 10)
# ------------------------------------------------------------------------------------------


def test_r_hat_ess_and_drift_use_the_draws_after_the_measured_burn_in():
    """A trace that relaxes for ~300 steps, then is stationary: the burn-in covers the
    relaxation, and every statistic equals its value on the draws after it (not on the whole
    trace, which still holds the relaxation)."""
    from grokking_llc.diagnostics import drift_z, effective_sample_size, r_hat, r_hat_tail

    rng = np.random.default_rng(0)
    t = np.arange(2000)
    trace = 1.0 + 0.05 * rng.standard_normal((4, 2000)) + 2.0 * np.exp(-t / 60.0)
    res = llc_from_traces(trace, init_loss=1.0, nbeta=10.0, num_burnin_steps=20)
    assert 200 <= res.burn_in <= 700
    draws = trace[:, res.burn_in :]
    assert res.r_hat == r_hat(draws) and res.r_hat_tail == r_hat_tail(draws)
    assert res.ess == effective_sample_size(draws) and res.drift_z == drift_z(draws)
    assert res.r_hat != pytest.approx(r_hat(trace[:, 20:]), abs=1e-3)
    np.testing.assert_allclose(res.llc_per_chain, 10.0 * (draws.mean(axis=1) - 1.0))
    ess_se = 10.0 * math.sqrt(draws.var(ddof=1) / res.ess)
    chain_se = res.llc_std / 2.0  # 4 chains
    assert res.llc_se == pytest.approx(max(ess_se, chain_se))
    # a chain stuck elsewhere: the spread across chains, not the ESS, sets the SE
    stuck = trace.copy()
    stuck[0] += 0.05
    spread = llc_from_traces(stuck, 1.0, 10.0, 800, burn_in="fixed")
    assert spread.llc_se == pytest.approx(spread.llc_std / 2.0)
    assert spread.llc_se > 2 * 10.0 * math.sqrt(stuck[:, 800:].var(ddof=1) / spread.ess)
    fixed = llc_from_traces(trace, 1.0, 10.0, 20, burn_in="fixed")
    assert fixed.burn_in == 20 and fixed.llc_mean > res.llc_mean  # relaxation left in


def test_diagnostic_means_count_only_draws_of_chains_that_did_not_diverge():
    """Hand-made diagnostics: MALA = mean of min(1, exp(log a)), ratio = mean grad / mean loc
    over the steps after the burn-in; the diverged chain and the burn-in steps are ignored."""
    rng = np.random.default_rng(1)
    trace = 1.0 + 0.01 * rng.standard_normal((5, 400))
    trace[4, 300] = np.nan  # chain 4 diverges
    steps = np.array([50, 150, 250, 350])  # burn-in is fixed at 100: the first one is dropped
    log_accept = np.array([[-9.0, 0.0, -0.1, 0.3]] * 5)
    grad = np.array([[100.0, 2.0, 4.0, 6.0]] * 4 + [[1e6] * 4])
    loc = np.array([[100.0, 1.0, 1.0, 1.0]] * 4 + [[1.0] * 4])
    dist = np.array([[9.0, 1.0, 2.0, 3.0]] * 5)
    diag = dict(steps=steps, log_accept=log_accept, grad_norm=grad, loc_norm=loc, distance=dist)
    res = llc_from_traces(trace, 1.0, 10.0, 100, burn_in="fixed", localization=4.0,
                          num_params=36, diagnostics=diag)  # fmt: skip
    assert res.diverged.tolist() == [False] * 4 + [True]
    assert res.mala_acceptance == pytest.approx((1.0 + math.exp(-0.1) + 1.0) / 3)
    assert res.grad_loc_ratio == pytest.approx(4.0)
    assert res.mean_distance == pytest.approx(2.0)
    assert res.prior_radius == pytest.approx(3.0)  # sqrt(36 / 4)
    assert math.isnan(res.r_hat_distance)  # too few distance points for R-hat
    assert res.step_ok and not res.localisation_dominated  # 0.97 >= 0.9, ratio 4 >= 1
    assert not res.valid and "diverged" in res.invalid_reason


def test_summary_is_every_scalar_column():
    from grokking_llc.llc import SUMMARY_COLUMNS

    trace = 1.0 + 0.01 * np.random.default_rng(2).standard_normal((4, 300))
    res = llc_from_traces(trace, 1.0, 10.0, 50)
    summary = res.summary()
    assert tuple(summary) == SUMMARY_COLUMNS
    for key in ("r_hat", "r_hat_tail", "r_hat_distance", "drift_z", "ess", "llc_se",
                "mala_acceptance", "mean_distance", "prior_radius", "grad_loc_ratio",
                "burn_in", "num_steps", "stationary", "localisation_dominated", "step_ok",
                "valid", "invalid_reason"):  # fmt: skip
        assert key in summary
        assert np.isscalar(summary[key]) or isinstance(summary[key], str)
    assert summary["num_steps"] == 300 and summary["valid"] is False
    assert "mala nan" in summary["invalid_reason"]  # no diagnostics: not valid


def test_fast_backend_regular_model_is_valid_and_right():
    """Linear regression, q = 6: the fast backend's estimate is q/2 within 10% and passes every
    check; the MALA acceptance of a step 100x larger collapses and the estimate is invalid."""
    q = 6
    model, x, y = regular_problem(q)
    sampler = dict(
        lr=2e-4, nbeta=400.0, localization=1.0, num_chains=4, num_burnin_steps=100,
        num_draws=1400, batch_size=len(x), num_init_loss_batches=1,
    )  # fmt: skip
    res = estimate_llc(model, x, y, half_mse, sampler, seed=1, backend="fast")
    assert res.llc_mean == pytest.approx(q / 2, rel=0.10)
    assert res.valid, res.invalid_reason
    assert res.mala_acceptance > 0.9 and res.grad_loc_ratio > 10
    assert res.prior_radius == pytest.approx(math.sqrt(q / 1.0))
    assert res.num_steps == 1500 and res.burn_in >= 100
    big = estimate_llc(model, x, y, half_mse, {**sampler, "lr": 2e-2}, seed=1, backend="fast")
    assert not big.valid and not big.step_ok


def test_devinterp_backend_reports_distances_and_forces_like_the_fast_one(trained_small):
    """Same settings: devinterp's metrics give the same mean distance and force ratio as the
    fast backend's own diagnostics (within 10%; different random numbers)."""
    model, x, y = trained_small
    sampler = dict(lr=1e-3, localization=50.0, num_chains=4, num_burnin_steps=100,
                   num_draws=300, batch_size=16)  # fmt: skip
    fast = estimate_llc(model, x, y, centred_mse, sampler, seed=0, backend="fast")
    ref = estimate_llc(model, x, y, centred_mse, sampler, seed=0, backend="devinterp")
    assert ref.mean_distance == pytest.approx(fast.mean_distance, rel=0.1)
    assert ref.grad_loc_ratio == pytest.approx(fast.grad_loc_ratio, rel=0.1)
    assert math.isfinite(ref.r_hat_distance)


def test_adaptive_length_stops_when_stationary_and_agrees_with_the_cap():
    """max_steps: the run stops at the first check where the chains are stationary with ESS
    >= target, well before the cap; its trace is exactly the start of the fixed-length run at
    the cap, and the two estimates agree within 3 combined standard errors."""
    model, x, y = regular_problem(q=4, n=200)
    base = dict(lr=1e-3, nbeta=200.0, localization=1.0, num_chains=4, num_burnin_steps=50,
                num_draws=350, batch_size=len(x), num_init_loss_batches=1)  # fmt: skip
    adaptive = estimate_llc(model, x, y, half_mse, {**base, "max_steps": 4000,
                            "target_ess": 600}, seed=2, backend="fast")  # fmt: skip
    cap = estimate_llc(model, x, y, half_mse, {**base, "num_draws": 3950}, seed=2,
                       backend="fast")  # fmt: skip
    used = adaptive.num_steps
    assert 400 < used < 4000 and adaptive.ess >= 600 and adaptive.stationary
    np.testing.assert_array_equal(adaptive.loss_trace, cap.loss_trace[:, :used])
    se = math.hypot(adaptive.llc_se, cap.llc_se)
    assert abs(adaptive.llc_mean - cap.llc_mean) <= 3 * se
    # a target it cannot reach in time: runs to the cap
    capped = estimate_llc(model, x, y, half_mse, {**base, "max_steps": 600,
                          "target_ess": 1e6}, seed=2, backend="fast")  # fmt: skip
    assert capped.num_steps == 600


@pytest.fixture(scope="module")
def trained_small(tmp_path_factory):
    """A small quadratic net (p=11, K=16) trained 400 steps: model, x, y."""
    from grokking_llc.config import TrainConfig
    from grokking_llc.train import checkpoint_state, train

    cfg = TrainConfig(p=11, width=16, lr=1e-2, weight_decay=0.0, batch_size=16, max_steps=400,
                      checkpoint_every=400)  # fmt: skip
    split = make_split(11, cfg.train_frac, 0)
    result = train(cfg, split, tmp_path_factory.mktemp("train"))
    model = QuadraticNet(11, 16)
    model.load_state_dict(checkpoint_state(result.checkpoints, -1))
    x, y = split_tensors(split, "train")
    return model, x, y
