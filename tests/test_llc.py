"""The LLC estimator (SPEC section 4) through the devinterp reference backend."""

import math

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
        num_draws=1500, batch_size=len(x), num_init_loss_batches=1,
    )  # fmt: skip
    res = estimate_llc(model, x, y, half_mse, sampler, seed=1, backend="devinterp")
    assert res.llc_mean == pytest.approx(q / 2, rel=0.10)
    assert res.loss_trace.shape == (4, 1700) and not res.diverged.any()


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
    ours = estimate_llc(model, x, y, half_mse, cfg, seed=3, backend="devinterp")
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


def test_bias_reduced_llc_recovers_the_intercept():
    from grokking_llc.llc import bias_reduced_llc

    nbeta = np.array([10.0, 20.0, 40.0, 80.0])
    llc = 3.0 + 50.0 / nbeta  # exact line in 1/nbeta: intercept 3, slope 50
    fit = bias_reduced_llc(nbeta, llc)
    assert fit["intercept"] == pytest.approx(3.0) and fit["slope"] == pytest.approx(50.0)
    assert fit["r2"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=">= 2"):
        bias_reduced_llc([10.0, 10.0], [1.0, np.nan])


def test_select_checkpoints_strides_chunks_and_keeps_the_last():
    from grokking_llc.llc import select_checkpoints

    assert select_checkpoints(10, 3, 0, 1) == [0, 3, 6, 9]
    assert select_checkpoints(11, 3, 0, 1) == [0, 3, 6, 9, 10]
    chunks = [select_checkpoints(11, 3, c, 2) for c in range(2)]
    assert chunks == [[0, 6, 10], [3, 9]]
    with pytest.raises(ValueError, match="chunk"):
        select_checkpoints(11, 3, 2, 2)
