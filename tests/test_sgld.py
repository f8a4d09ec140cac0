"""Tests of the fast SGLD backend, grokking_llc.sgld (SPEC section 4).

SGLD step under test (SPEC section 4):
``w <- w - (eps/2) [nbeta grad L_batch(w) + gamma (w - w*) + lambda_wd w] + sqrt(eps) N(0, I)``,
and ``llc = nbeta (E_w[L_n(w)] - L_n(w*))``.

Known answers used here: on a quadratic loss ``L(w) = L* + (1/2)(w - w*)^T H (w - w*)`` with the
full batch, SGLD is the linear recursion ``u' = (1 - eps a_i / 2) u + sqrt(eps) xi`` in each
eigen-direction i of ``H`` (``a_i = nbeta h_i + gamma``, ``u = w - w*`` in that basis), whose
stationary law is ``N(0, v_i)`` with ``v_i = eps / (1 - (1 - eps a_i / 2)^2)`` exactly (the
continuous-time limit is ``1 / a_i``). Hence ``E[L] - L* = (1/2) sum_i h_i v_i`` and, for a small
step and ``gamma << nbeta h_i``, ``llc -> q / 2``: the learning coefficient of a regular model
with q parameters.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from grokking_llc import sgld
from grokking_llc.config import SamplerConfig, TrainConfig
from grokking_llc.data import make_split, split_tensors
from grokking_llc.llc import estimate_llc
from grokking_llc.model import QuadraticNet, centred_mse, cross_entropy
from grokking_llc.train import checkpoint_state, train

torch.set_num_threads(1)

P, WIDTH = 11, 16  # n = round(0.4 * 121) = 48 training pairs: 3 batches of 16


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small quadratic net trained 400 steps (train loss ~3e-3): model, x, y."""
    cfg = TrainConfig(
        p=P, width=WIDTH, lr=1e-2, weight_decay=0.0, batch_size=16, max_steps=400,
        checkpoint_every=400,
    )  # fmt: skip
    split = make_split(P, cfg.train_frac, 0)
    result = train(cfg, split, tmp_path_factory.mktemp("train"))
    model = QuadraticNet(P, WIDTH)
    model.load_state_dict(checkpoint_state(result.checkpoints, -1))
    x, y = split_tensors(split, "train")
    return model, x, y


def small_sampler(**overrides) -> SamplerConfig:
    base = dict(lr=1e-3, localization=5.0, num_chains=3, num_burnin_steps=20, num_draws=60)
    return SamplerConfig(**{"batch_size": 16, **base, **overrides})


# ------------------------------------------------------------------------------------------
# (a) agreement with devinterp
# ------------------------------------------------------------------------------------------


def test_fast_llc_agrees_with_devinterp(trained):
    """Same checkpoint and settings: the two backends' LLCs agree within 3 combined SEs.

    SE of each estimate = chain-to-chain std / sqrt(num_chains) (8 chains); the combined SE is
    ``sqrt(se1^2 + se2^2)``. 3 SE leaves a ~0.3% false-alarm rate for a correct sampler. The
    backends draw different random numbers (and devinterp replays its first epoch's batch
    order while the fast backend reshuffles), so only statistical agreement is expected.
    gamma = 50 keeps the chains near w* (they are stationary after the burn-in here). Where
    chains are not stationary the minibatch order matters at the 1% level (see the sgld module
    docstring); here it does not.
    """
    model, x, y = trained
    cfg = SamplerConfig(
        lr=1e-3, localization=50.0, num_chains=8, num_burnin_steps=100, num_draws=400,
        batch_size=16,
    )  # fmt: skip
    fast = estimate_llc(model, x, y, centred_mse, cfg, seed=0, backend="fast")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = estimate_llc(model, x, y, centred_mse, cfg, seed=0, backend="devinterp")
    assert not fast.diverged.any() and not ref.diverged.any()
    assert fast.init_loss == pytest.approx(ref.init_loss, rel=0.1)  # same L(w*), other batches
    se = math.hypot(fast.llc_std / math.sqrt(8), ref.llc_std / math.sqrt(8))
    assert fast.llc_mean > 0
    assert abs(fast.llc_mean - ref.llc_mean) <= 3 * se, (fast.llc_mean, ref.llc_mean, se)


# ------------------------------------------------------------------------------------------
# Linear regression: a regular model with a known quadratic loss
# ------------------------------------------------------------------------------------------


def half_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``0.5 * mean over rows of the squared error summed over outputs``."""
    return 0.5 * (pred - target).pow(2).sum(dim=1).mean()


def linear_regression(eigenvalues, n: int, outputs: int, seed: int):
    """A least-squares problem whose Hessian ``X^T X / n`` has exactly the given eigenvalues.

    Returns (model at the least-squares minimum w*, x, y, R) with ``H = R diag(h) R^T``.
    """
    gen = torch.Generator().manual_seed(seed)
    h = torch.tensor(eigenvalues, dtype=torch.float64)
    q = len(h)
    u, _ = torch.linalg.qr(torch.randn(n, q, generator=gen, dtype=torch.float64))
    r, _ = torch.linalg.qr(torch.randn(q, q, generator=gen, dtype=torch.float64))
    x = math.sqrt(n) * u @ torch.diag(h.sqrt()) @ r.T  # X^T X / n = R diag(h) R^T
    w_true = torch.randn(q, outputs, generator=gen, dtype=torch.float64)
    y = x @ w_true + 0.3 * torch.randn(n, outputs, generator=gen, dtype=torch.float64)
    w_star = torch.linalg.lstsq(x, y).solution
    model = nn.Linear(q, outputs, bias=False)
    with torch.no_grad():
        model.weight.copy_(w_star.T)
    return model, x.float(), y.float(), r


def exact_stationary_variance(a: np.ndarray, eps: float) -> np.ndarray:
    """Stationary variance of ``u' = (1 - eps a / 2) u + sqrt(eps) xi`` (exact, discrete)."""
    rho = 1.0 - eps * a / 2.0
    return eps / (1.0 - rho**2)


def test_regular_model_llc_is_half_the_dimension():
    """Linear regression, q = 10 parameters (5 inputs x 2 outputs): llc ~= q/2 = 5.

    Full batch, nbeta = 100, gamma = 0.5, eps = 2e-4. Two small biases remain, both computable:
    gamma shrinks each direction by nbeta h / (nbeta h + gamma) (>= 0.99 here) and the step
    inflates it by 1 / (1 - eps a / 4) (<= 1.01); the exact expected value of the estimator is
    ``nbeta/2 sum_i h_i v_i`` (module docstring). The estimate must match that within 4 SE and
    q/2 within 10% (stated tolerance; the SE, from 8 chains x 3000 draws, is 2-4%).
    """
    h = np.array([0.6, 0.8, 1.0, 1.3, 1.6])
    model, x, y, _ = linear_regression(h, n=200, outputs=2, seed=1)
    q = model.weight.numel()
    eps, nbeta, gamma = 2e-4, 100.0, 0.5
    cfg = SamplerConfig(
        lr=eps, nbeta=nbeta, localization=gamma, num_chains=8, num_burnin_steps=500,
        num_draws=3000, batch_size=len(x),
    )  # fmt: skip
    res = estimate_llc(model, x, y, half_mse, cfg, seed=3, backend="fast")
    a = nbeta * h + gamma
    exact = nbeta / 2 * 2 * np.sum(h * exact_stationary_variance(a, eps))  # 2 outputs
    se = res.llc_std / math.sqrt(cfg.num_chains)
    assert not res.diverged.any()
    assert abs(res.llc_mean - exact) <= 4 * se, (res.llc_mean, exact, se)
    assert res.llc_mean == pytest.approx(q / 2, rel=0.10)


# ------------------------------------------------------------------------------------------
# (c) stationary law on a quadratic potential
# ------------------------------------------------------------------------------------------


def test_stationary_mean_and_variance_match_discrete_closed_form():
    """Per eigen-direction of ``nbeta H + gamma I``: mean 0 and variance ``v_i`` (exact, discrete).

    eps = 0.05 is large on purpose: in the stiffest direction eps a / 2 = 0.525 and the exact
    discrete variance is 36% above the continuous-time 1/a, so the test tells them apart.
    8 chains x 9000 recorded steps after 1000 burn-in; standard errors by batch means (160
    batches of 450 steps, >> the autocorrelation time of <= 13 steps). Tolerance 4 SE per
    direction (SE 0.6-1.4% for variances).
    Also checks what the trace holds: ``trace[:, t + 1]`` is the loss at the parameters left by
    update t (the loss *before* update t + 1), and ``trace[:, 0] = L(w*)``.
    """
    h = np.array([0.5, 1.0, 2.0])
    model, x, y, r = linear_regression(h, n=64, outputs=1, seed=2)
    eps, nbeta, gamma = 0.05, 10.0, 1.0
    burn, steps, chains = 1000, 10_000, 8
    cfg = SamplerConfig(
        lr=eps, nbeta=nbeta, localization=gamma, num_chains=chains, num_burnin_steps=0,
        num_draws=steps, batch_size=len(x),
    )  # fmt: skip
    w_star = model.weight.detach().clone().reshape(-1)
    record = torch.empty(steps, chains, len(h))

    def on_step(t, params):
        record[t] = params["weight"].reshape(chains, -1)

    state = {"weight": model.weight.detach()}
    [(trace, init_loss)] = sgld.sample_loss_traces_many(
        model, [state], x, y, half_mse, cfg, seeds=[11], device="cpu", on_step=on_step
    )
    # Trace semantics: loss before each update, so trace[:, t+1] = L(params after update t).
    with torch.no_grad():
        for t in (0, 1, 500, steps - 2):
            loss_after = [half_mse(x @ w.unsqueeze(1), y).item() for w in record[t]]
            np.testing.assert_allclose(trace[:, t + 1], loss_after, rtol=1e-5)
        l_star = half_mse(x @ w_star.unsqueeze(1), y).item()
    np.testing.assert_allclose(trace[:, 0], l_star, rtol=1e-6)
    assert init_loss == pytest.approx(l_star, rel=1e-6)

    u = ((record[burn:] - w_star) @ r.float()).double().numpy()  # (T, chains, q) eigen-coords
    a = nbeta * h + gamma
    v_exact = exact_stationary_variance(a, eps)
    nb = 20
    batches = u.reshape(nb, -1, chains, len(h))  # (batch, step, chain, direction)
    bmean = batches.mean(axis=1).reshape(nb * chains, len(h))
    bvar = (batches**2).mean(axis=1).reshape(nb * chains, len(h))
    mean, se_mean = bmean.mean(0), bmean.std(0, ddof=1) / math.sqrt(nb * chains)
    var, se_var = bvar.mean(0), bvar.std(0, ddof=1) / math.sqrt(nb * chains)
    assert np.all(np.abs(mean) <= 4 * se_mean), (mean, se_mean)
    assert np.all(np.abs(var - v_exact) <= 4 * se_var), (var, v_exact, se_var)
    # The continuous-time value is excluded in the stiff direction: the test sees the step.
    assert abs(var[-1] - 1 / a[-1]) > 10 * se_var[-1]


# ------------------------------------------------------------------------------------------
# (d) generic vmap path == specialised quadratic path
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_fn", [centred_mse, cross_entropy])
def test_generic_and_quadratic_paths_give_the_same_trace(trained, loss_fn):
    """Identical random numbers by design; only the gradient's float rounding differs.

    Tolerance rtol 1e-4: float32 rounding (~1e-7 relative per step) accumulated over 100 steps
    of a contracting recursion stays orders of magnitude below it (observed ~3e-7).
    """
    model, x, y = trained
    cfg = small_sampler(num_draws=80)
    tq, iq = sgld.sample_loss_traces(model, x, y, loss_fn, cfg, seed=4, device="cpu",
                                     path="quadratic")  # fmt: skip
    tg, ig = sgld.sample_loss_traces(model, x, y, loss_fn, cfg, seed=4, device="cpu",
                                     path="generic")  # fmt: skip
    assert iq == ig  # the init loss is computed by the same code on both paths
    assert np.isfinite(tq).all()
    np.testing.assert_allclose(tq, tg, rtol=1e-4, atol=1e-6)
    assert not np.allclose(tq[0], tq[1])  # chains differ (own noise), so the check is not void


def test_one_hot_scatter_variant_matches_index_add(trained, monkeypatch):
    """The deterministic scatter used on CUDA gives the CPU ``index_add_`` result (rounding)."""
    model, x, y = trained
    cfg = small_sampler()
    states = [model.state_dict(), {k: v * 1.01 for k, v in model.state_dict().items()}]
    ref = sgld.sample_loss_traces_many(model, states, x, y, centred_mse, cfg, seeds=[1, 2],
                                       device="cpu")  # fmt: skip
    monkeypatch.setattr(sgld, "_use_one_hot_scatter", lambda device: True)
    alt = sgld.sample_loss_traces_many(model, states, x, y, centred_mse, cfg, seeds=[1, 2],
                                       device="cpu")  # fmt: skip
    for (t_ref, _), (t_alt, _) in zip(ref, alt, strict=True):
        np.testing.assert_allclose(t_alt, t_ref, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------
# (e) determinism, batching of checkpoints, noise thread
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["quadratic", "generic"])
def test_same_seed_same_numbers(trained, path):
    model, x, y = trained
    cfg = small_sampler()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t1, i1 = sgld.sample_loss_traces(model, x, y, centred_mse, cfg, seed=7, device="cpu",
                                     path=path)  # fmt: skip
    t2, i2 = sgld.sample_loss_traces(model, x, y, centred_mse, cfg, seed=7, device="cpu",
                                     path=path)  # fmt: skip
    t3, _ = sgld.sample_loss_traces(model, x, y, centred_mse, cfg, seed=8, device="cpu",
                                    path=path)  # fmt: skip
    assert t1.shape == (cfg.num_chains, cfg.num_steps) and t1.dtype == np.float64
    np.testing.assert_array_equal(t1, t2)
    assert i1 == i2
    assert not np.array_equal(t1, t3)
    for k, v in model.state_dict().items():  # the model is left as it was
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("path", ["quadratic", "generic"])
def test_many_checkpoints_equal_one_at_a_time(trained, path):
    """Stacking checkpoints along the chain axis changes no number (each owns its generators)."""
    model, x, y = trained
    cfg = small_sampler()
    gen = torch.Generator().manual_seed(0)
    states = [
        {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}
        for _ in range(3)
    ]
    seeds = [5, 6, 100]
    many = sgld.sample_loss_traces_many(
        model, states, x, y, centred_mse, cfg, seeds=seeds, device="cpu", path=path
    )
    single = QuadraticNet(P, WIDTH)
    for state, seed, (trace, init_loss) in zip(states, seeds, many, strict=True):
        single.load_state_dict(state)
        t1, i1 = sgld.sample_loss_traces(single, x, y, centred_mse, cfg, seed=seed,
                                         device="cpu", path=path)  # fmt: skip
        np.testing.assert_array_equal(trace, t1)
        assert init_loss == i1


def test_noise_thread_gives_the_same_numbers(trained):
    model, x, y = trained
    cfg = small_sampler()
    on = sgld.sample_loss_traces(model, x, y, centred_mse, cfg, seed=3, device="cpu",
                                 overlap_noise=True)  # fmt: skip
    off = sgld.sample_loss_traces(model, x, y, centred_mse, cfg, seed=3, device="cpu",
                                  overlap_noise=False)  # fmt: skip
    np.testing.assert_array_equal(on[0], off[0])


def test_batch_schedule_draws_distinct_rows_per_batch():
    gen = torch.Generator().manual_seed(0)
    sched = sgld.batch_schedule(10, 3, 7, gen, torch.device("cpu"))
    assert sched.shape == (7, 3)
    for row in sched:
        assert len(set(row.tolist())) == 3
    # 3 batches per epoch; within an epoch no row repeats
    epoch = sched[:3].reshape(-1).tolist()
    assert len(set(epoch)) == 9


def test_rejects_bad_arguments(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="batch_size"):
        sgld.sample_loss_traces(model, x, y, centred_mse, small_sampler(batch_size=len(x) + 1),
                                seed=0, device="cpu")  # fmt: skip
    with pytest.raises(ValueError, match="quadratic"):
        sgld.sample_loss_traces(nn.Linear(2, P), x.float(), y, centred_mse, small_sampler(),
                                seed=0, device="cpu", path="quadratic")  # fmt: skip


# ------------------------------------------------------------------------------------------
# (f) CUDA
# ------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_paths(trained):
    """On CUDA: same seed -> same trace (quadratic path), and the two paths agree."""
    cpu_model, x, y = trained
    model = QuadraticNet(P, WIDTH)
    model.load_state_dict(cpu_model.state_dict())
    model = model.cuda()
    cfg = small_sampler()
    t1, i1 = sgld.sample_loss_traces(model, x, y, centred_mse, cfg, seed=1, device="cuda")
    t2, i2 = sgld.sample_loss_traces(model, x, y, centred_mse, cfg, seed=1, device="cuda")
    tg, ig = sgld.sample_loss_traces(model, x, y, centred_mse, cfg, seed=1, device="cuda",
                                     path="generic")  # fmt: skip
    assert np.isfinite(t1).all()
    np.testing.assert_array_equal(t1, t2)
    assert i1 == i2 == pytest.approx(ig, rel=1e-5)
    np.testing.assert_allclose(t1, tg, rtol=1e-4, atol=1e-6)


def test_cycle_epoch_mode_replays_the_first_epoch():
    """``epoch_mode="cycle"`` is devinterp's minibatch order: one shuffle, replayed."""
    gen = torch.Generator().manual_seed(0)
    sched = sgld.batch_schedule(10, 3, 8, gen, torch.device("cpu"), epoch_mode="cycle")
    np.testing.assert_array_equal(sched[3:6], sched[:3])
    np.testing.assert_array_equal(sched[6:8], sched[:2])
    gen = torch.Generator().manual_seed(0)
    fresh = sgld.batch_schedule(10, 3, 8, gen, torch.device("cpu"))
    np.testing.assert_array_equal(fresh[:3], sched[:3])  # same first epoch
    assert not torch.equal(fresh[3:6], sched[3:6])  # then reshuffled
