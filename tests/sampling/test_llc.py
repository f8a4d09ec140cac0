"""The LLC estimator, grokking_llc.sampling.llc (SPEC sections 4 and 10).

Known answers through both backends: a regular model has LLC q/2, and on its quadratic loss
full-batch SGLD has an exact stationary value (:func:`sgld_regular_llc`), which the estimate must
match within its standard error. The bookkeeping of :func:`llc_from_traces` on hand-made traces
and diagnostics, with answers computed here: per-chain LLC, runaway and non-finite chains,
standard error, the loss-plateau burn-in, the stationarity statistics of the kept draws (those of
grokking_llc.sampling.diagnostics, ArviZ's), the checks at w* (:func:`point_checks`: the gradient,
the
curvature along it and the bound from d and n, against autograd and finite differences) and the
verdict built from them (valid / not_a_minimum / invalid, grokking_llc.sampling.validity), the
adaptive
stop rule, and the glue of estimate_llc_many (devinterp replaced by a recorder where only the
glue is under test).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn

from grokking_llc.core.data import make_split, split_tensors
from grokking_llc.core.model import QuadraticNet, build_model, centred_mse, cross_entropy
from grokking_llc.core.settings import SamplerConfig, TrainConfig, default_nbeta
from grokking_llc.sampling import devinterp_backend, llc, validity
from grokking_llc.sampling import diagnostics as dg
from grokking_llc.sampling.llc import (
    BACKENDS,
    RUNAWAY_FACTOR,
    SUMMARY_COLUMNS,
    LLCResult,
    PointChecks,
    _draws_are_enough,
    _split_draws,
    default_diag_every,
    estimate_llc,
    estimate_llc_many,
    llc_bound,
    llc_from_traces,
    point_checks,
)
from grokking_llc.sampling.sgld import sample_chains_many

from .helpers import TINY_SGLD, quad_setup, regular_problem, whitened_regression


def half_mse(pred, target):
    """Gaussian negative log-likelihood up to a constant: 0.5 * mean squared error."""
    return 0.5 * (pred - target).pow(2).sum(dim=1).mean()


def sgld_regular_llc(q, nbeta, gamma, eps):
    """``nbeta (E[L] - L*)`` under the stationary law of full-batch SGLD on
    ``L* + |w - w*|^2 / 2`` (SPEC section 4's update): each coordinate follows
    ``u' = (1 - eps k / 2) u + sqrt(eps) xi`` with ``k = nbeta + gamma``, whose stationary
    variance is ``eps / (1 - (1 - eps k / 2)^2) = 1 / (k (1 - eps k / 4))`` exactly, so the value
    is ``q nbeta v / 2``: q/2 in the limit eps -> 0, gamma / nbeta -> 0."""
    k = nbeta + gamma
    return 0.5 * q * nbeta / (k * (1 - eps * k / 4))


def whitened_sampler(a, draws, nbeta=100.0, gamma=1.0, n=200, **extra):
    """Full-batch SGLD on :func:`whitened_regression` at the step ``eps = 2 a / k``: ``a`` is
    the per-step contraction, so the loss decorrelates in ~1/a steps and the stationary
    variance is ``1 / (1 - a / 2)`` times the continuous-time one; burn-in 3/a steps."""
    return dict(lr=2 * a / (nbeta + gamma), nbeta=nbeta, localization=gamma, num_chains=4,
                num_burnin_steps=int(3 / a), num_draws=draws, batch_size=n,
                num_init_loss_batches=1, **extra)  # fmt: skip


def noise_trace(chains, steps, seed=0, level=1.0, scale=0.1):
    return level + scale * np.random.default_rng(seed).standard_normal((chains, steps))


def _quad():
    model, _, x, y = quad_setup(S=1)  # p = 3, K = 2
    return model, x, y


SAMPLER = {**TINY_SGLD, "num_draws": 38, "weight_decay": 0.0}


@pytest.fixture(scope="module")
def trained_small(tmp_path_factory):
    """A small quadratic net (p=11, K=16) trained 400 steps: model, x, y."""
    from grokking_llc.training.checkpoints import checkpoint_state
    from grokking_llc.training.train import train

    cfg = TrainConfig(p=11, width=16, lr=1e-2, weight_decay=0.0, batch_size=16, max_steps=400,
                      checkpoint_every=400)  # fmt: skip
    split = make_split(11, cfg.train_frac, 0)
    result = train(cfg, split, tmp_path_factory.mktemp("train"))
    model = QuadraticNet(11, 16)
    model.load_state_dict(checkpoint_state(result.checkpoints, -1))
    x, y = split_tensors(split, "train")
    return model, x, y


def _good_run(seed=11, C=4, T=2000):
    """Hand-made stationary traces (loss 1 +- 0.1, 2,000 steps) with diagnostics of an accepted
    step and a dominant loss force: (trace, diagnostics)."""
    rng = np.random.default_rng(seed)
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
    return trace, diag


AT_MINIMUM = dict(localization=3.0, llc_bound=10.0, grad_norm=0.0, grad_curvature=2.0)


def _verdict_of(res, llc_bound, exact=False, mala_note=""):
    """validity.assess on the estimate's own statistics: what llc_from_traces must report."""
    return validity.assess(
        llc_mean=res.llc_mean, num_good_chains=int((~res.diverged).sum()),
        num_diverged=int(res.diverged.sum()), r_hat=res.r_hat, r_hat_tail=res.r_hat_tail,
        drift_z=res.drift_z, drift_se=res.drift_se, ess=res.ess, ess_tail=res.ess_tail,
        mala_acceptance=res.mala_acceptance, grad_loc_ratio=res.grad_loc_ratio,
        gradient_bias=res.gradient_bias, llc_bound=llc_bound, exact=exact, mala_note=mala_note,
    )  # fmt: skip


def _assert_verdict(res, v):
    got = (res.stationary, res.step_ok, res.localisation_dominated, res.at_minimum, res.valid,
           res.status, res.invalid_reason)  # fmt: skip
    assert got == (v.stationary, v.step_ok, v.localisation_dominated, v.at_minimum, v.valid,
                   v.status, v.invalid_reason)  # fmt: skip


def quad_centred_loss64(W, V, x, y, p):
    """The QuadraticNet's centred square loss written out here (SPEC section 2), float64."""
    h = W[x[:, 0]] + W[x[:, 1] + p]
    r = torch.nn.functional.one_hot(y, p).double() - (h * h) @ V
    r = r - r.mean(dim=0, keepdim=True)
    return 0.5 * (r * r).sum() / len(x)


class TanhNet(nn.Module):
    """A generic model for the cross-entropy: tanh layer, then linear logits."""

    def __init__(self, gen):
        super().__init__()
        self.A = nn.Parameter(0.5 * torch.randn(3, 4, generator=gen))
        self.c = nn.Parameter(0.5 * torch.randn(4, 3, generator=gen))

    def forward(self, x):
        return torch.tanh(x @ self.A) @ self.c


def tanh_ce_loss64(A, c, x, y):
    return torch.nn.functional.cross_entropy(torch.tanh(x.double() @ A) @ c, y)


def _offset(model, x, y, size, seed=5):
    """The model moved from w* by ``size`` along a fixed random direction, and the gradient of
    the loss there computed by hand: X^T (X w - y) / n (half_mse), with X^T X / n = I."""
    d = torch.randn(model.weight.shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.weight.add_(size * d / d.norm())
    x64, y64 = x.double(), y.double()
    w = model.weight.detach().double()
    grad = x64.T @ (x64 @ w.T - y64) / len(x)
    curvature = float(grad.T @ (x64.T @ x64 / len(x)) @ grad / (grad.T @ grad))
    return float(grad.norm()), curvature


SAMPLER_THR = SamplerConfig(
    lr=1e-4, nbeta=5.0, localization=10.0, num_chains=2, num_burnin_steps=3, num_draws=10,
    batch_size=8, num_init_loss_batches=2, seed=7,
)  # fmt: skip


@pytest.fixture(scope="module")
def split():
    return make_split(7, 0.6, seed=0)


def state(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    model = build_model("quadratic", 7, width=6, generator=gen)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_regular_model_has_llc_d_over_2_through_devinterp():
    """A regular model with q parameters has LLC q/2 (SPEC section 4, known answer); here
    q = 100 with the isotropic loss of :func:`whitened_regression`, through the devinterp
    backend: the estimate is the exact stationary value of full-batch SGLD (4.2% above q/2 at
    this step and localisation) within 3 standard errors, and q/2 within 10%. devinterp 2.0.1
    has no MALA acceptance: the estimate is stationary, at a minimum and below its bound q/2,
    and still never called valid. At a = 0.1 the loss decorrelates in ~10 steps, so 4 chains x
    1,200 draws give a bulk ESS of ~500 and a drift resolved to ~2% of the estimate."""
    q = 100
    model, x, y = whitened_regression(q)
    sampler = whitened_sampler(0.1, 1200)
    res = estimate_llc(model, x, y, half_mse, sampler, seed=1, backend="devinterp")
    want = sgld_regular_llc(q, 100.0, 1.0, sampler["lr"])
    assert abs(res.llc_mean - want) <= 3 * res.llc_se
    assert res.llc_mean == pytest.approx(q / 2, rel=0.10)
    assert res.loss_trace.shape == (4, 1230) and not res.diverged.any()
    assert res.llc_bound == q / 2 and res.grad_norm < 1e-4 and res.at_minimum
    assert res.stationary and math.isnan(res.mala_acceptance) and not res.step_ok
    assert not res.valid and res.status == "invalid"
    assert res.invalid_reason == "no MALA acceptance from devinterp 2.0.1"


def test_fast_backend_regular_model_is_valid_and_right():
    """The same regular model (q = 100) through the fast backend at a = 0.08: every check
    passes (status valid); the estimate is the exact stationary value of full-batch SGLD within
    3 SEs, and q/2 within the 5% an estimate may exceed its bound by; the checks at w* see a
    minimum (gradient ~1e-6, gradient term ~0) and the bound q/2. A step 100x larger (a = 8 > 2:
    the recursion is unstable) diverges and is invalid."""
    q = 100
    model, x, y = whitened_regression(q)
    sampler = whitened_sampler(0.08, 1500)
    res = estimate_llc(model, x, y, half_mse, sampler, seed=1, backend="fast")
    assert res.valid and res.status == "valid", res.invalid_reason
    want = sgld_regular_llc(q, 100.0, 1.0, sampler["lr"])
    assert abs(res.llc_mean - want) <= 3 * res.llc_se
    assert res.llc_mean == pytest.approx(q / 2, rel=validity.BOUND_TOL)
    assert res.llc_bound == q / 2 and res.grad_norm < 1e-4 and res.gradient_bias < 1e-6
    assert res.at_minimum and res.stationary and res.step_ok and res.invalid_reason == ""
    assert res.mala_acceptance > 0.9 and res.grad_loc_ratio > 10
    assert res.ess >= 400 and res.ess_tail >= 400
    assert res.prior_radius == pytest.approx(math.sqrt(q / 1.0))
    assert res.num_steps == 1537 and res.burn_in >= 37
    big = estimate_llc(model, x, y, half_mse, {**sampler, "lr": 100 * sampler["lr"]}, seed=1,
                       backend="fast")  # fmt: skip
    assert not big.valid and not big.step_ok and big.status == "invalid"


def test_burn_in_is_excluded_unlike_devinterps_own_llc():
    """devinterp 2.0.1's llc() averages over burn-in steps too; ours uses draws only."""
    from devinterp.slt.llc import llc as devinterp_llc

    from grokking_llc.sampling.devinterp_backend import as_devinterp_problem

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
    se = max(nbeta * dg.standard_error(draws), per.std(ddof=1) / 2.0)
    assert res.llc_se == pytest.approx(se, rel=1e-12)
    assert res.r_hat == pytest.approx(dg.r_hat(draws))
    assert res.r_hat_tail == pytest.approx(dg.r_hat_tail(draws))
    assert res.drift_z == pytest.approx(dg.drift_z(draws))
    assert res.ess == pytest.approx(dg.effective_sample_size(draws))
    assert res.ess_tail == pytest.approx(dg.tail_ess(draws))
    assert res.drift_se == pytest.approx(nbeta * dg.drift(draws)[1])
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
    # no checks at w*: no bound known, the gradient unknown, so not known to be a minimum
    assert res.llc_bound == math.inf and math.isnan(res.grad_norm)
    assert math.isnan(res.gradient_bias) and not res.at_minimum
    assert res.status == "not_a_minimum"
    assert res.diagnostics == {}


def test_chain_spread_raises_the_standard_error():
    # chains at different levels, tiny noise: the spread across chains dominates
    trace = noise_trace(4, 80, seed=2, scale=1e-3) + np.array([[0.0], [1.0], [2.0], [3.0]])
    res = llc_from_traces(trace, 0.0, 2.0, 0, burn_in="fixed")
    per = 2.0 * trace.mean(axis=1)
    assert res.llc_se == pytest.approx(per.std(ddof=1) / 2.0, rel=1e-9)
    assert res.llc_se > 2.0 * dg.standard_error(trace)


def test_one_chain_std_zero_and_no_r_hat():
    trace = noise_trace(1, 40, seed=3)
    res = llc_from_traces(trace, 0.5, 3.0, 4, burn_in="fixed")
    assert res.llc_std == 0.0
    assert math.isnan(res.r_hat) and math.isnan(res.r_hat_tail)
    assert res.drift_z == pytest.approx(dg.drift_z(trace[:, 4:]))
    assert res.ess == pytest.approx(dg.effective_sample_size(trace[:, 4:]))
    assert res.ess_tail == pytest.approx(dg.tail_ess(trace[:, 4:]))
    assert res.drift_se == pytest.approx(3.0 * dg.drift(trace[:, 4:])[1])
    assert res.llc_se == pytest.approx(3.0 * dg.standard_error(trace[:, 4:]))
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


def test_llc_from_traces_marks_diverged_chains():
    trace = np.array([[1.0, 1.1, 1.2], [1.0, np.nan, 1.0], [1.0, 1.3, 1.1], [1.0, 5e4, 5e4]])
    res = llc_from_traces(trace, init_loss=1.0, nbeta=10.0, num_burnin_steps=1)
    assert res.diverged.tolist() == [False, True, False, True]
    # chains 0 and 2: 10 * (1.15 - 1) = 1.5 and 10 * (1.2 - 1) = 2.0
    assert res.llc_mean == pytest.approx(1.75) and res.llc_std == pytest.approx(0.3535534)
    bad = llc_from_traces(np.full((2, 3), np.inf), init_loss=1.0, nbeta=10.0, num_burnin_steps=1)
    assert math.isnan(bad.llc_mean) and "diverged" in bad.reason


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
    assert math.isnan(res.drift_se) and math.isnan(res.ess_tail)
    assert res.status == "invalid"  # a sampler failure, not a finding about w*
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


def test_bad_arguments():
    model, x, y = regular_problem(q=2, n=10)
    with pytest.raises(ValueError, match="batch_size"):
        estimate_llc(model, x, y, half_mse, dict(batch_size=11))
    with pytest.raises(ValueError, match="unknown LLC backend"):
        estimate_llc(model, x, y, half_mse, dict(batch_size=5), backend="nope")
    with pytest.raises(ValueError, match="no draws"):
        llc_from_traces(np.zeros((1, 3)), 0.0, 1.0, num_burnin_steps=3)


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


def test_float32_trace_is_taken_in_float64():
    tr32 = noise_trace(3, 50, seed=16).astype(np.float32)
    res = llc_from_traces(tr32, 0.3, 5.0, 5, burn_in="fixed")
    assert res.loss_trace.dtype == np.float64
    want = 5.0 * (tr32.astype(np.float64)[:, 5:].mean(axis=1) - 0.3)
    np.testing.assert_allclose(res.llc_per_chain, want, rtol=1e-14)


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
        assert one.llc_se == pytest.approx(dg.standard_error(noise_trace(1, 30)[:, one.burn_in :]))


def test_auto_burn_in_is_the_loss_plateau_at_least_the_minimum():
    rng = np.random.default_rng(5)
    steps = 200
    relax = np.where(np.arange(steps) < 60, 5.0 - np.arange(steps) / 15.0, 1.0)
    trace = relax + 0.05 * rng.standard_normal((4, steps))
    trace[3, 100] = np.nan  # left out of the plateau
    want = dg.plateau_burn_in(trace[:3], minimum=10)
    assert want >= 50
    res = llc_from_traces(trace, 0.0, 1.0, 10)
    assert res.burn_in == want
    burn, bad = _split_draws(trace, 10, "auto")
    assert (burn, bad.tolist()) == (want, [False, False, False, True])
    assert _split_draws(trace, 10, "fixed")[0] == 10
    assert _split_draws(trace, 150, "auto")[0] == dg.plateau_burn_in(trace[:3], minimum=150)
    with pytest.raises(ValueError, match=r"^burn_in 'x': choose 'auto' or 'fixed'$"):
        _split_draws(trace, 10, "x")
    # no finite chain: the configured burn-in, whatever the mode
    assert _split_draws(np.full((2, 30), np.inf), 7, "x")[0] == 7


def test_r_hat_ess_and_drift_use_the_draws_after_the_measured_burn_in():
    """A trace that relaxes for ~300 steps, then is stationary: the burn-in covers the
    relaxation, and every statistic is that of grokking_llc.sampling.diagnostics on the draws after
    it
    (not on the whole trace, which still holds the relaxation): R-hat and tail R-hat, bulk and
    tail ESS, the drift in SEs and its SE in LLC units (nbeta times that of the mean loss); the
    LLC's standard error is nbeta times the Monte Carlo SE of the mean or the chains' spread,
    whichever is larger."""
    rng = np.random.default_rng(0)
    t = np.arange(2000)
    trace = 1.0 + 0.05 * rng.standard_normal((4, 2000)) + 2.0 * np.exp(-t / 60.0)
    res = llc_from_traces(trace, init_loss=1.0, nbeta=10.0, num_burnin_steps=20)
    assert 200 <= res.burn_in <= 700
    draws = trace[:, res.burn_in :]
    assert res.r_hat == dg.r_hat(draws) and res.r_hat_tail == dg.r_hat_tail(draws)
    assert res.ess == dg.effective_sample_size(draws) and res.ess_tail == dg.tail_ess(draws)
    assert res.drift_z == dg.drift_z(draws) and res.drift_se == 10.0 * dg.drift(draws)[1]
    assert res.r_hat != pytest.approx(dg.r_hat(trace[:, 20:]), abs=1e-3)
    assert res.ess != pytest.approx(dg.effective_sample_size(trace[:, 20:]), rel=1e-3)
    np.testing.assert_allclose(res.llc_per_chain, 10.0 * (draws.mean(axis=1) - 1.0))
    mcse = 10.0 * dg.standard_error(draws)
    chain_se = res.llc_std / 2.0  # 4 chains
    assert res.llc_se == pytest.approx(max(mcse, chain_se))
    # a chain stuck elsewhere: the spread across chains, not the ESS, sets the SE
    stuck = trace.copy()
    stuck[0] += 0.05
    spread = llc_from_traces(stuck, 1.0, 10.0, 800, burn_in="fixed")
    assert spread.llc_se == pytest.approx(spread.llc_std / 2.0)
    assert spread.llc_se > 10.0 * dg.standard_error(stuck[:, 800:])  # the larger of the two
    fixed = llc_from_traces(trace, 1.0, 10.0, 20, burn_in="fixed")
    assert fixed.burn_in == 20 and fixed.llc_mean > res.llc_mean  # relaxation left in


def test_two_chains_get_r_hat_std_and_distance_r_hat():
    tr = noise_trace(2, 40, seed=13)
    steps = np.arange(0, 40, 4)
    dist = 1.0 + 0.1 * np.random.default_rng(14).random((2, 10))
    diag = {"steps": steps, "distance": dist, "grad_norm": dist, "loc_norm": dist}
    res = llc_from_traces(tr, 0.0, 1.0, 4, burn_in="fixed", diagnostics=diag)
    assert res.r_hat == pytest.approx(dg.r_hat(tr[:, 4:]))
    assert res.r_hat_tail == pytest.approx(dg.r_hat_tail(tr[:, 4:]))
    assert res.llc_std == pytest.approx(tr[:, 4:].mean(axis=1).std(ddof=1))
    assert res.r_hat_distance == pytest.approx(dg.r_hat(dist[:, 1:]))


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
    assert res.r_hat_distance == pytest.approx(dg.r_hat(dist[keep][:, cols]))
    assert res.prior_radius == 2.0
    assert set(res.diagnostics) == set(diag)
    # with a per-step distance trace, its R-hat is the one used
    dtrace = 1.0 + 0.1 * rng.random((C, 100))
    res2 = llc_from_traces(
        trace, 0.0, 1.0, 35, burn_in="fixed", diagnostics={**diag, "distance_trace": dtrace}
    )
    assert res2.r_hat_distance == pytest.approx(dg.r_hat(dtrace[keep][:, 35:]))
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
    """Stationary draws, accepted steps, a dominant loss force and a stationary w* inside its
    bound: valid, and every boolean, the status and the reason are validity.assess's on the
    estimate's own statistics; the summary row carries them with their types."""
    trace, diag = _good_run()
    res = llc_from_traces(trace, 0.5, 2.0, 10, diagnostics=diag, sampler_kind="rmsprop",
                          **AT_MINIMUM)  # fmt: skip
    assert res.valid and res.stationary and res.step_ok and not res.localisation_dominated
    assert res.at_minimum and res.status == "valid"
    assert res.invalid_reason == "" and res.sampler_kind == "rmsprop"
    assert res.grad_loc_ratio == 3.0 and res.mala_acceptance == 1.0
    assert (res.llc_bound, res.grad_norm, res.gradient_bias) == (10.0, 0.0, 0.0)
    _assert_verdict(res, _verdict_of(res, 10.0))
    bad = llc_from_traces(trace, 0.5, 2.0, 10, diagnostics={**diag, "log_accept": -np.ones(
        (4, len(diag["steps"])))}, mala_note="why no MALA", **AT_MINIMUM)  # fmt: skip
    assert not bad.valid and not bad.step_ok and bad.invalid_reason == "why no MALA"
    assert bad.status == "invalid" and bad.at_minimum
    # a Metropolis-adjusted chain (exact=True) has no step error: the same draws are valid
    exact = llc_from_traces(trace, 0.5, 2.0, 10, diagnostics={**diag, "log_accept": -np.ones(
        (4, len(diag["steps"])))}, exact=True, **AT_MINIMUM)  # fmt: skip
    assert exact.valid and exact.step_ok
    s = res.summary()
    assert tuple(s) == SUMMARY_COLUMNS
    assert s["valid"] is True and s["sampler_kind"] == "rmsprop" and s["num_diverged"] == 0
    assert s["num_steps"] == 2000 and s["nbeta"] == 2.0 and s["init_loss"] == 0.5
    assert s["status"] == "valid" and s["at_minimum"] is True and s["llc_bound"] == 10.0
    for k in SUMMARY_COLUMNS:
        v = getattr(res, k, None)
        if k == "num_diverged":
            continue
        assert s[k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(s[k]))
        assert type(s[k]) is type(v) or isinstance(v, (np.floating, np.integer, np.bool_))


def test_the_checks_at_w_star_decide_minimum_and_bound():
    """The same good draws (estimate ~1.0) with other checks at w*: the gradient term is
    validity.gradient_bias of the measured gradient norm and curvature at this nbeta and gamma;
    a term above 10% of the estimate it changes is not_a_minimum (reason first); an unmeasured
    gradient is not_a_minimum too; an estimate above (1 + BOUND_TOL) x its bound is invalid
    with that reason, one exactly at it is valid. Each verdict is validity.assess's."""
    trace, diag = _good_run()
    base = llc_from_traces(trace, 0.5, 2.0, 10, diagnostics=diag, **AT_MINIMUM)
    llc_hat = base.llc_mean
    assert 0.9 < llc_hat < 1.1

    def run(**kw):
        res = llc_from_traces(trace, 0.5, 2.0, 10, diagnostics=diag, **{**AT_MINIMUM, **kw})
        _assert_verdict(res, _verdict_of(res, res.llc_bound))
        assert res.llc_mean == llc_hat  # the checks at w* change the verdict, not the estimate
        return res

    # gradient term B = (nbeta g)^2 / (nbeta h + gamma) (1 - nbeta h / (2 (nbeta h + gamma)))
    # with nbeta = 2, h = 2, gamma = 3: B = 4 g^2 / 7 x (1 - 4 / 14) = (20 / 49) g^2
    small = run(grad_norm=0.5)
    assert small.gradient_bias == pytest.approx(20 / 49 * 0.25, rel=1e-12)
    assert small.gradient_bias == validity.gradient_bias(0.5, 2.0, 2.0, 3.0)
    assert small.valid and small.at_minimum  # 0.102 <= 0.1 x (1.0 + 0.102)
    big = run(grad_norm=1.0)  # B = 0.408 > 0.1 x (1.0 + 0.408)
    assert not big.valid and not big.at_minimum and big.status == "not_a_minimum"
    assert big.invalid_reason.startswith("not_a_minimum: gradient term 0.408 > 0.1")
    unknown = run(grad_norm=math.nan, grad_curvature=math.nan)
    assert unknown.status == "not_a_minimum" and math.isnan(unknown.gradient_bias)
    assert unknown.invalid_reason == "not_a_minimum: gradient at w* not measured"
    edge = run(llc_bound=llc_hat / (1 + validity.BOUND_TOL))
    assert edge.valid
    above = run(llc_bound=0.99 * llc_hat / (1 + validity.BOUND_TOL))
    assert not above.valid and above.status == "invalid" and above.at_minimum
    assert above.invalid_reason.startswith("above the bound")
    # an estimate <= 0 (the chains found lower loss than w*) is not a minimum whatever the
    # gradient says
    below = llc_from_traces(trace, 1.5, 2.0, 10, diagnostics=diag, **AT_MINIMUM)
    assert below.status == "not_a_minimum" and below.llc_mean < 0
    assert below.invalid_reason.startswith("not_a_minimum: the chains found lower loss than w*")
    # all chains diverged: a sampler failure, not a finding about w*
    gone = llc_from_traces(np.full((4, 40), np.nan), 0.5, 2.0, 10, **AT_MINIMUM)
    assert gone.status == "invalid" and "not_a_minimum" not in gone.invalid_reason


def test_auto_burn_in_is_the_loss_plateau_alone_and_the_distance_r_hat_is_reported_not_required():
    """Flat loss draws while one chain's distance |w - w*| sits far out for the first 800 of
    2,000 steps: the burn-in is the loss plateau's, whatever the distance does (the distance is
    not what is estimated, and in singular directions it relaxes long after the loss); the
    distance R-hat over the draws after that burn-in is reported (>= 1.1 here) and does not
    make the estimate invalid. A flat distance gives the same burn-in."""
    trace, diag = _good_run(seed=17)
    rng = np.random.default_rng(18)
    dist = 1.0 + 0.01 * rng.standard_normal(trace.shape)
    dist[0, :800] += 2.0
    assert dg.plateau_burn_in(dist) >= 700  # the distance's own plateau is far later
    diag = {**diag, "distance": dist[:, diag["steps"]], "distance_trace": dist}
    res = llc_from_traces(trace, 0.5, 2.0, 10, diagnostics=diag, **AT_MINIMUM)
    burn = dg.plateau_burn_in(trace, minimum=10)
    assert burn < 100 and res.burn_in == burn == _split_draws(trace, 10, "auto")[0]
    assert res.r_hat_distance == pytest.approx(dg.r_hat(dist[:, burn:]))
    assert res.r_hat_distance >= validity.R_HAT_MAX
    assert res.valid, res.invalid_reason
    flat = {**diag, "distance_trace": np.ones(trace.shape)}
    assert llc_from_traces(trace, 0.5, 2.0, 10, diagnostics=flat, **AT_MINIMUM).burn_in == burn
    # the stop rule asks the loss alone too: these draws are enough
    assert _draws_are_enough(trace, 0.5, 2.0, 10, "auto", 400.0)


def test_llcresult_defaults():
    r = LLCResult(1.0, 0.0, np.zeros(2), np.zeros((2, 3)), 0.0, 1.0, 0)
    assert r.num_chains == 2 and r.diverged.shape == (0,)
    assert (r.reason, r.burn_in, r.num_steps, r.sampler_kind) == ("", 0, 0, "sgld")
    assert (r.stationary, r.localisation_dominated, r.step_ok, r.at_minimum, r.valid) == (
        False,
        True,
        False,
        False,
        False,
    )
    assert r.status == "invalid" and r.llc_bound == math.inf
    for k in ("r_hat", "llc_se", "ess_tail", "drift_se", "grad_norm", "gradient_bias"):
        assert math.isnan(getattr(r, k)), k
    assert r.invalid_reason == "" and r.diagnostics == {}


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


def test_summary_is_every_scalar_column():
    trace = 1.0 + 0.01 * np.random.default_rng(2).standard_normal((4, 300))
    res = llc_from_traces(trace, 0.9, 10.0, 50)
    summary = res.summary()
    assert tuple(summary) == SUMMARY_COLUMNS
    for key in ("r_hat", "r_hat_tail", "r_hat_distance", "drift_z", "drift_se", "ess",
                "ess_tail", "llc_se", "mala_acceptance", "mean_distance", "prior_radius",
                "grad_loc_ratio", "burn_in", "num_steps", "llc_bound", "grad_norm",
                "gradient_bias", "stationary", "localisation_dominated", "step_ok", "at_minimum",
                "valid", "status", "invalid_reason"):  # fmt: skip
        assert key in summary
        assert np.isscalar(summary[key]) or isinstance(summary[key], str)
    assert summary["num_steps"] == 300 and summary["valid"] is False
    assert "mala nan" in summary["invalid_reason"]  # no diagnostics: not valid
    # no checks at w*: no bound known, the gradient unknown, so w* not known to be a minimum
    assert summary["llc_bound"] == math.inf and math.isnan(summary["grad_norm"])
    assert summary["at_minimum"] is False and summary["status"] == "not_a_minimum"
    assert summary["invalid_reason"].startswith("not_a_minimum: gradient at w* not measured")


@pytest.mark.parametrize("which", ["quadratic_centred", "tanh_cross_entropy"])
def test_point_checks_gradient_and_curvature_against_autograd_and_finite_differences(which):
    """point_checks at a state that is not a minimum: the full-batch loss and its gradient norm
    against autograd of the loss written out here (float64), the gradient norm again as the
    central difference of the loss along u = g/|g| (the directional derivative along the
    gradient is |g|), and the curvature g^T H g / |g|^2 against the second difference along u.
    The state is the one given, not the model's own parameters, which stay as they were."""
    gen = torch.Generator().manual_seed(4)
    if which == "quadratic_centred":
        model, x, y = _quad()
        loss_fn, names = centred_mse, ["W", "V"]

        def loss64(a, b):
            return quad_centred_loss64(a, b, x, y, 3)
    else:
        model = TanhNet(gen)
        x, y = torch.randn(11, 3, generator=gen), torch.randint(0, 3, (11,), generator=gen)
        loss_fn, names = cross_entropy, ["A", "c"]

        def loss64(a, b):
            return tanh_ce_loss64(a, b, x, y)

    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    state = {k: v + 0.3 * torch.randn(v.shape, generator=gen) for k, v in before.items()}
    pc = point_checks(model, state, x, y, loss_fn)
    assert isinstance(pc, PointChecks)
    for k, v in model.named_parameters():
        assert torch.equal(v.detach(), before[k])
    a, b = (state[k].double().requires_grad_(True) for k in names)
    value = loss64(a, b)
    ga, gb = torch.autograd.grad(value, (a, b))
    norm = math.sqrt(float((ga * ga).sum() + (gb * gb).sum()))
    assert norm > 0.05  # not a stationary point: the checks have something to measure
    assert pc.loss == pytest.approx(value.item(), rel=1e-12)
    assert pc.grad_norm == pytest.approx(norm, rel=1e-10)
    ua, ub = ga / norm, gb / norm
    step = 1e-4
    with torch.no_grad():
        f = [float(loss64(a + t * ua, b + t * ub)) for t in (-step, 0.0, step)]
    assert pc.grad_norm == pytest.approx((f[2] - f[0]) / (2 * step), rel=1e-6)
    second = (f[2] - 2 * f[1] + f[0]) / step**2
    assert abs(second) > 1e-3
    assert pc.grad_curvature == pytest.approx(second, rel=1e-4)


def test_point_checks_at_a_stationary_point_have_no_gradient_term():
    """At w* of a linear regression (least squares) the gradient is zero up to float32 rounding
    of w*, so validity.gradient_bias is ~0 at any nbeta and gamma."""
    model, x, y = regular_problem(q=4, n=50)
    state = {k: v.detach() for k, v in model.named_parameters()}
    pc = point_checks(model, state, x, y, half_mse)
    assert pc.grad_norm < 1e-5
    assert validity.gradient_bias(pc.grad_norm, pc.grad_curvature, 1e4, 1.0) < 1e-3
    assert pc.llc_bound == 2.0  # d/2 = 2 < n/2


def test_llc_bound_is_half_the_smaller_of_d_and_the_data_dimension_the_loss_sees():
    """llc_bound (SPEC section 10): d/2, and half the dimension of the predictions the loss
    sees on n samples: (n - 1) p for the centred loss (each output column centred over the
    samples), n (p - 1) for the cross-entropy (logits matter up to a shift per sample), n p for
    any other loss. Through point_checks on a QuadraticNet (p = 3, n = 9) with K = 8 (d = 72:
    the data bind) and K = 1 (d = 9: d/2 binds), and directly for other output shapes."""
    _, x, y = _quad()
    onehot = torch.eye(3)[y]
    cases = [(centred_mse, y, 0.5 * 8 * 3), (cross_entropy, y, 0.5 * 9 * 2),
             (half_mse, onehot, 0.5 * 9 * 3)]  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    wide, narrow = QuadraticNet(3, 8, generator=gen), QuadraticNet(3, 1, generator=gen)
    assert sum(v.numel() for v in wide.parameters()) == 72
    assert sum(v.numel() for v in narrow.parameters()) == 9
    for loss_fn, target, want in cases:
        for net, bound in ((wide, want), (narrow, 4.5)):
            state = {k: v.detach() for k, v in net.named_parameters()}
            assert point_checks(net, state, x, target, loss_fn).llc_bound == bound
        assert llc_bound(72, 9, (9, 3), loss_fn) == want
    assert llc_bound(1000, 50, (50,), half_mse) == 25.0  # one output per sample
    assert llc_bound(1000, 50, (50, 1), centred_mse) == 24.5
    assert llc_bound(1000, 50, (50, 4, 2), cross_entropy) == 0.5 * 50 * 7
    assert llc_bound(1000, 50, (50, 4, 2), half_mse) == 0.5 * 50 * 8
    assert llc_bound(7, 50, (50, 3), cross_entropy) == 3.5


def test_an_estimate_away_from_the_minimum_is_not_a_minimum_by_its_gradient_term():
    """w = w* + delta on the regular model (q = 100, |delta| = 0.7): the checks at w see the
    gradient computed by hand (|delta|, curvature 1 along it); the estimate is the exact
    stationary value less validity.gradient_bias of that gradient within 3 SEs (exact on a
    quadratic loss: the chains' mean moves to (nbeta w* + gamma w) / (nbeta + gamma)); that
    term, 24.5, is more than 10% of the estimate it changes, so the status is not_a_minimum
    with that reason first."""
    q = 100
    model, x, y = whitened_regression(q)
    g_norm, curvature = _offset(model, x, y, 0.7)
    assert g_norm == pytest.approx(0.7, rel=1e-4) and curvature == pytest.approx(1.0, rel=1e-6)
    sampler = whitened_sampler(0.06, 1000)
    res = estimate_llc(model, x, y, half_mse, sampler, seed=1, backend="fast")
    bias = validity.gradient_bias(g_norm, curvature, 100.0, 1.0)
    assert res.grad_norm == pytest.approx(g_norm, rel=1e-6)
    assert res.gradient_bias == pytest.approx(bias, rel=1e-5)
    assert bias == pytest.approx(24.5, rel=0.01)
    want = sgld_regular_llc(q, 100.0, 1.0, sampler["lr"]) - bias
    assert abs(res.llc_mean - want) <= 3 * res.llc_se
    assert not res.at_minimum and res.status == "not_a_minimum" and not res.valid
    assert res.invalid_reason.startswith("not_a_minimum: gradient term 24.5 > 0.1")
    assert res.mala_acceptance > 0.9 and not res.diverged.any()  # the sampler itself is fine


def test_a_hopeless_checkpoint_is_not_lengthened_and_the_stop_rule_gets_its_init_loss(
    monkeypatch,
):
    """Adaptive length at three checkpoints of the regular model (q = 100, bound 50): w*, and
    w* moved so that the gradient term is just above and just below MINIMUM_TOL x bound = 5.
    The stop rule is replaced by a recorder that always asks for more: the checkpoint above the
    line is hopeless (no minimum whatever the chains say) and stops at the first check without
    asking it; the other two run to the cap, the rule asked with each one's own init_loss (the
    sampler's diag["init_loss"]) and the sampler's settings, min_steps included."""
    asked = []

    def never_enough(trace, init_loss, nbeta, num_burnin_steps, burn_in, target_ess, min_steps):
        asked.append(init_loss)
        assert (nbeta, num_burnin_steps, burn_in, target_ess, min_steps) == (
            100.0, 5, "auto", 1e9, 30
        )  # fmt: skip
        return False

    monkeypatch.setattr(llc, "_draws_are_enough", never_enough)
    model, x, y = whitened_regression(100)
    line = validity.MINIMUM_TOL * 50.0
    unit = validity.gradient_bias(1.0, 1.0, 100.0, 1.0)  # the term grows as |g|^2
    states = [{k: v.detach().clone() for k, v in model.named_parameters()}]
    for factor in (1.02, 0.98):
        moved, _, _ = whitened_regression(100)
        g_norm, _ = _offset(moved, x, y, math.sqrt(factor * line / unit))
        assert validity.gradient_bias(g_norm, 1.0, 100.0, 1.0) == pytest.approx(
            factor * line, rel=1e-3
        )
        states.append({k: v.detach().clone() for k, v in moved.named_parameters()})
    sampler = {**whitened_sampler(0.08, 15), "num_burnin_steps": 5, "max_steps": 45,
               "target_ess": 1e9, "min_steps": 30}  # fmt: skip
    out = estimate_llc_many(model, states, x, y, half_mse, sampler, seeds=[1, 2, 3],
                            backend="fast", diag_every=0)  # fmt: skip
    assert [r.num_steps for r in out] == [45, 20, 45]
    assert sorted(asked) == sorted([out[0].init_loss, out[2].init_loss] * 2)  # checks at 20, 30
    assert out[1].gradient_bias > line > out[2].gradient_bias


def test_stop_rule_cases():
    """_draws_are_enough(trace, init_loss, nbeta, burn-in, mode, target, min_steps): every
    chain finite and the draws stationary by validity.stationarity_problems with bulk and tail
    ESS >= target (SPEC section 10), from min_steps steps on; or, at any length, nothing more to
    gain: no finite chain, or the chains below L(w*) or running downhill
    (validity.descending)."""
    rng = np.random.default_rng(12)
    good = 1.0 + 0.1 * rng.standard_normal((4, 3000))
    d = good[:, 10:]
    enough = min(dg.effective_sample_size(d), dg.tail_ess(d))
    assert _draws_are_enough(good, 0.0, 1.0, 10, "fixed", 100.0)
    assert _draws_are_enough(good, 0.0, 1.0, 10, "fixed", enough)
    assert not _draws_are_enough(good, 0.0, 1.0, 10, "fixed", enough * 1.001)  # below target
    assert not _draws_are_enough(good[:3], 0.0, 1.0, 10, "fixed", 100.0)  # fewer than 4 chains
    rising = good + np.linspace(0, 5, 3000)
    assert not _draws_are_enough(rising, 0.0, 1.0, 10, "fixed", 100.0)
    split = good.copy()
    split[0] += 3.0  # one chain elsewhere: R-hat
    assert not _draws_are_enough(split, 0.0, 1.0, 10, "fixed", 100.0)
    tail = good.copy()
    tail[0, 2000:] += 1.0  # only the tail disagrees
    assert not _draws_are_enough(tail, 0.0, 1.0, 10, "fixed", 10.0)
    one_bad = good.copy()
    one_bad[1, 5] = np.nan
    assert not _draws_are_enough(one_bad, 0.0, 1.0, 10, "fixed", 1.0)
    assert _draws_are_enough(np.full((4, 50), np.nan), 0.0, 1.0, 10, "fixed", 1e9)  # all gone
    # running downhill after the burn-in (a fall of ~15% of the estimate, 60 SEs): more steps
    # cannot help, so the run stops although the draws are not stationary
    falling = good - np.linspace(0, 0.3, 3000)
    stats = llc._stationarity_stats(falling[:, 10:], 1.0)
    assert validity.descending(falling[:, 10:].mean(), stats["drift_z"], stats["drift_se"])
    assert _draws_are_enough(falling, 0.0, 1.0, 10, "fixed", 1e9)
    # at least 16 draws; at 16 it is exactly stationarity_problems with the target's ESS
    assert not _draws_are_enough(good[:, :25], 0.0, 1.0, 10, "fixed", 1.0)
    short = good[:, 10:26]
    want = not validity.stationarity_problems(
        llc_mean=float(short.mean()), num_good_chains=4, ess_min=1.0,
        **llc._stationarity_stats(short, 1.0),
    )  # fmt: skip
    assert _draws_are_enough(good[:, :26], 0.0, 1.0, 10, "fixed", 1.0) == want
    # min_steps: stationary draws stop the run only from min_steps steps on; chains below L(w*)
    # or running downhill stop at once whatever min_steps says
    assert not _draws_are_enough(good, 0.0, 1.0, 10, "fixed", 100.0, 3001)
    assert _draws_are_enough(good, 0.0, 1.0, 10, "fixed", 100.0, 3000)
    assert _draws_are_enough(good, 0.0, 1.0, 10, "fixed", 100.0, None)
    assert _draws_are_enough(falling, 0.0, 1.0, 10, "fixed", 1e9, 10**6)
    assert _draws_are_enough(good, 1.01, 1.0, 10, "fixed", 1e9, 10**6)
    # the auto burn-in is the loss plateau's: a relaxation at the start is cut before asking
    relaxed = good.copy()
    relaxed[:, :300] += np.linspace(3.0, 0.0, 300)
    assert not _draws_are_enough(relaxed, 0.0, 1.0, 10, "fixed", 100.0)
    assert _draws_are_enough(relaxed, 0.0, 1.0, 10, "auto", 100.0)


def test_stop_rule_measures_the_estimate_from_the_init_loss():
    """The stop rule's estimate is nbeta (mean draw - init_loss): the same draws (loss 1.0 +-
    0.1, drift SE ~0.3% of the mean loss) are enough against L(w*) = 0 (estimate 1.0, its drift
    resolved), not against L(w*) = 0.99 (estimate 0.01: the drift's SE is ~25% of it, too noisy
    to tell whether it moves), and against L(w*) = 1.01 the chains sit below L(w*) (estimate
    < 0), so no minimum and nothing to wait for. nbeta scales estimate and drift alike."""
    good = noise_trace(4, 3000, seed=12)
    draws = good[:, 10:]
    assert 0.99 < draws.mean() < 1.01
    for nbeta in (1.0, 50.0):
        assert _draws_are_enough(good, 0.0, nbeta, 10, "fixed", 100.0)
        assert not _draws_are_enough(good, 0.99, nbeta, 10, "fixed", 100.0)
        assert _draws_are_enough(good, 1.01, nbeta, 10, "fixed", 1e9)
    problems = validity.stationarity_problems(
        llc_mean=float(draws.mean()) - 0.99, num_good_chains=4, ess_min=100.0,
        **llc._stationarity_stats(draws, 1.0),
    )  # fmt: skip
    assert [p.split(" (")[0] for p in problems] == ["drift unresolved"]


def test_adaptive_length_stops_when_stationary_and_agrees_with_the_cap():
    """max_steps: the run stops at the first check where the chains are stationary (the
    validity rules, drift resolved) with bulk and tail ESS >= target, well before the cap; its
    trace is exactly the start of the fixed-length run at the cap, and the two estimates agree
    within 3 combined standard errors."""
    model, x, y = whitened_regression(100)
    base = whitened_sampler(0.08, 363)  # 400 steps, then checks at 600, 900, 1350, ...
    adaptive = estimate_llc(model, x, y, half_mse, {**base, "max_steps": 4000,
                            "target_ess": 400}, seed=2, backend="fast")  # fmt: skip
    cap = estimate_llc(model, x, y, half_mse, {**base, "num_draws": 3963}, seed=2,
                       backend="fast")  # fmt: skip
    used = adaptive.num_steps
    assert 400 < used < 4000 and adaptive.stationary
    assert adaptive.ess >= 400 and adaptive.ess_tail >= 400
    np.testing.assert_array_equal(adaptive.loss_trace, cap.loss_trace[:, :used])
    se = math.hypot(adaptive.llc_se, cap.llc_se)
    assert abs(adaptive.llc_mean - cap.llc_mean) <= 3 * se
    # a target it cannot reach in time: runs to the cap
    capped = estimate_llc(model, x, y, half_mse, {**base, "max_steps": 600,
                          "target_ess": 1e6}, seed=2, backend="fast")  # fmt: skip
    assert capped.num_steps == 600


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
        dataclasses.replace(cfg, kind="rmsprop"),
        seeds=[3],
        device="cpu",
        diag_every=20,
    )
    np.testing.assert_array_equal(rms.loss_trace, ref_rms[0].trace)
    assert rms.burn_in == 2 and rms.sampler_kind == "rmsprop"


def test_fast_backend_passes_every_diagnostic_through():
    model, x, y = _quad()
    res = estimate_llc(model, x, y, centred_mse, SAMPLER, seed=2, backend="fast", diag_every=4)
    cfg = SamplerConfig(**SAMPLER)
    st = [{k: v.detach() for k, v in model.named_parameters()}]
    [r] = sample_chains_many(
        model, st, x, y, centred_mse, cfg, seeds=[2], device="cpu", diag_every=4
    )
    cols = r.diag_steps >= res.burn_in
    pc = point_checks(model, st[0], x, y, centred_mse)
    assert (res.llc_bound, res.grad_norm) == (pc.llc_bound, pc.grad_norm)
    assert res.gradient_bias == validity.gradient_bias(
        pc.grad_norm, pc.grad_curvature, SAMPLER["nbeta"], SAMPLER["localization"]
    )
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

    def fake(m, xx, yy, loss_fn, cfg, *, seed, device):
        seen.append(
            (seed, device, cfg.kind, {k: v.detach().clone() for k, v in m.named_parameters()})
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
    for res, st in zip(out, states, strict=True):  # the checks at each state reach its row
        pc = point_checks(model, st, x, y, centred_mse)
        assert (res.llc_bound, res.grad_norm) == (pc.llc_bound, pc.grad_norm)
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


def test_devinterp_gets_the_data_and_is_estimate_llc_manys_default(monkeypatch, caplog):
    model, x, y = _quad()
    got = []

    def fake(m, xx, yy, loss_fn, cfg, *, seed, device):
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


@pytest.mark.parametrize("backend", ["fast", "devinterp"])
def test_estimate_llc_many_equals_one_estimate_per_checkpoint_and_leaves_the_model(split, backend):
    x, y = split_tensors(split, "train", "cpu")
    model = build_model("quadratic", 7, width=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    states = [state(1), state(2), state(3)]
    many = estimate_llc_many(model, states, x, y, centred_mse, SAMPLER_THR, seeds=[5, 6, 7],
                             backend=backend)  # fmt: skip
    for st, seed, res in zip(states, [5, 6, 7], many, strict=True):
        alone_model = build_model("quadratic", 7, width=6)
        alone_model.load_state_dict(st)
        alone = estimate_llc(
            alone_model, x, y, centred_mse, SAMPLER_THR, seed=seed, backend=backend
        )
        np.testing.assert_array_equal(res.loss_trace, alone.loss_trace)
        assert res.llc_mean == alone.llc_mean
        assert res.summary() == pytest.approx(alone.summary(), nan_ok=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert len({r.llc_mean for r in many}) == 3  # three different checkpoints, three numbers


def test_estimate_llc_many_refuses_mismatched_seeds(split):
    x, y = split_tensors(split, "train", "cpu")
    with pytest.raises(ValueError, match="2 states but 1 seeds"):
        estimate_llc_many(build_model("quadratic", 7, width=6), [state(0), state(1)], x, y,
                          centred_mse, SAMPLER_THR, seeds=[0], backend="fast")  # fmt: skip


@pytest.mark.parametrize(
    ("steps", "expected"), [(60, 20), (600, 20), (900, 30), (1500, 50), (3000, 100), (10**6, 100)]
)
def test_default_diag_every_by_hand(steps, expected):
    assert default_diag_every(steps) == expected
