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

    SE of each estimate = chain-to-chain std / sqrt(num_chains) (6 chains); the combined SE is
    ``sqrt(se1^2 + se2^2)``. 3 SE leaves a ~0.3% false-alarm rate for a correct sampler. The
    backends draw different random numbers (and devinterp replays its first epoch's batch
    order while the fast backend reshuffles), so only statistical agreement is expected.
    gamma = 50 keeps the chains near w* (they are stationary after the burn-in here). Where
    chains are not stationary the minibatch order matters at the 1% level (see the sgld module
    docstring); here it does not.
    """
    model, x, y = trained
    cfg = SamplerConfig(
        lr=1e-3, localization=50.0, num_chains=6, num_burnin_steps=100, num_draws=250,
        batch_size=16,
    )  # fmt: skip
    fast = estimate_llc(model, x, y, centred_mse, cfg, seed=0, backend="fast")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = estimate_llc(model, x, y, centred_mse, cfg, seed=0, backend="devinterp")
    assert not fast.diverged.any() and not ref.diverged.any()
    assert fast.init_loss == pytest.approx(ref.init_loss, rel=0.1)  # same L(w*), other batches
    se = math.hypot(fast.llc_std / math.sqrt(6), ref.llc_std / math.sqrt(6))
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
    8 chains x 5000 recorded steps after 1000 burn-in; standard errors by batch means (160
    batches of 250 steps, >> the autocorrelation time of <= 13 steps). Tolerance 4 SE per
    direction (SE ~1-2% for variances).
    Also checks what the trace holds: ``trace[:, t + 1]`` is the loss at the parameters left by
    update t (the loss *before* update t + 1), and ``trace[:, 0] = L(w*)``.
    """
    h = np.array([0.5, 1.0, 2.0])
    model, x, y, r = linear_regression(h, n=64, outputs=1, seed=2)
    eps, nbeta, gamma = 0.05, 10.0, 1.0
    burn, steps, chains = 1000, 6000, 8
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


# ------------------------------------------------------------------------------------------
# (g) weight decay, diagnostics, preconditioned kinds, adaptive length
# ------------------------------------------------------------------------------------------


def test_weight_decay_shifts_the_stationary_law_as_the_closed_form_says():
    """With weight decay lambda the drift has the extra term lambda w = lambda (w* + u), so in
    eigen-direction i: ``u' = (1 - eps a_i / 2) u - (eps/2) lambda w*_i + sqrt(eps) xi`` with
    ``a_i = nbeta h_i + gamma + lambda``: stationary mean ``-lambda w*_i / a_i`` and variance
    ``eps / (1 - (1 - eps a_i / 2)^2)``. A sampler that dropped the term would sit at mean 0
    (>= 20 SE away here)."""
    h = np.array([0.5, 1.0, 2.0])
    model, x, y, r = linear_regression(h, n=64, outputs=1, seed=4)
    eps, nbeta, gamma, wd = 0.05, 10.0, 1.0, 5.0
    burn, steps, chains = 200, 3000, 8
    cfg = SamplerConfig(lr=eps, nbeta=nbeta, localization=gamma, weight_decay=wd,
                        num_chains=chains, num_burnin_steps=0, num_draws=steps,
                        batch_size=len(x))  # fmt: skip
    w_star = model.weight.detach().clone().reshape(-1)
    record = torch.empty(steps, chains, len(h))

    def on_step(t, params):
        record[t] = params["weight"].reshape(chains, -1)

    sgld.sample_loss_traces_many(model, [{"weight": model.weight.detach()}], x, y, half_mse,
                                 cfg, seeds=[5], device="cpu", on_step=on_step)  # fmt: skip
    rot = r.float()
    u = ((record[burn:] - w_star) @ rot).double().numpy()  # (T, chains, q)
    a = nbeta * h + gamma + wd
    mean_exact = -wd * (w_star @ rot).double().numpy() / a
    var_exact = exact_stationary_variance(a, eps)
    nb = 20
    bmean = u.reshape(nb, -1, chains, len(h)).mean(axis=1).reshape(-1, len(h))
    mean, se = bmean.mean(0), bmean.std(0, ddof=1) / math.sqrt(len(bmean))
    assert np.all(np.abs(mean - mean_exact) <= 4 * se), (mean, mean_exact, se)
    assert np.all(np.abs(mean_exact) >= 20 * se)  # the test sees the term
    var = ((u - mean_exact) ** 2).reshape(-1, len(h)).mean(0)
    np.testing.assert_allclose(var, var_exact, rtol=0.1)


def spec_log_accept(w0, w1, grad_u, u, eps):
    """SPEC section 10's MALA log acceptance written out literally (float64)."""
    fwd = w1 - w0 + 0.5 * eps * grad_u(w0)
    back = w0 - w1 + 0.5 * eps * grad_u(w1)
    return u(w0) - u(w1) - (back @ back) / (2 * eps) + (fwd @ fwd) / (2 * eps)


@pytest.mark.parametrize("kind", ["sgld", "gn_diag"])
def test_diagnostics_match_the_spec_formulas(kind):
    """Every diagnostic step's log MALA acceptance equals SPEC 10's formula evaluated from the
    recorded w_t, w_{t+1} and the full-batch potential U = nbeta L + gamma/2 |w - w*|^2 +
    lambda/2 |w|^2 (with the preconditioned proposal's G-metric for gn_diag); distance and
    force norms are |w_t - w*|, |nbeta grad L(w_t)| and gamma |w_t - w*|. The step is large
    enough that log a is far from 0, and the traces are the same with diagnostics off."""
    model, x, y, _ = linear_regression([0.5, 1.0, 2.0], n=64, outputs=1, seed=6)
    eps, nbeta, gamma, wd = 0.02 if kind == "sgld" else 0.05, 20.0, 2.0, 0.5
    chains, steps = 3, 40
    cfg = SamplerConfig(lr=eps, nbeta=nbeta, localization=gamma, weight_decay=wd,
                        num_chains=chains, num_burnin_steps=0, num_draws=steps,
                        batch_size=len(x))  # fmt: skip
    opts = sgld.SamplerOptions(kind=kind)
    state = {"weight": model.weight.detach().clone()}
    record = torch.empty(steps + 1, chains, 3, dtype=torch.float64)
    record[0] = state["weight"].reshape(-1).double()

    def on_step(t, params):
        record[t + 1] = params["weight"].reshape(chains, -1).double()

    [res] = sgld.sample_chains_many(model, [state], x, y, half_mse, cfg, seeds=[3],
                                    device="cpu", options=opts, diag_every=4,
                                    on_step=on_step, overlap_noise=False)  # fmt: skip
    [plain] = sgld.sample_chains_many(model, [state], x, y, half_mse, cfg, seeds=[3],
                                      device="cpu", options=opts)  # fmt: skip
    np.testing.assert_array_equal(res.trace, plain.trace)
    assert res.diag_steps.tolist() == list(range(3, steps, 4))
    x64, y64 = x.double(), y.double()
    w_star = state["weight"].reshape(-1).double()

    def loss(w):
        return half_mse(x64 @ w.unsqueeze(1), y64)

    def grad_l(w):
        with torch.enable_grad():
            w = w.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(loss(w), w)
        return g

    if kind == "gn_diag":  # G = 1 / (diag + 0.01 mean(diag)), the sampler's GN estimate
        d = sgld.gauss_newton_diagonal(model, state, x, y, half_mse, num_probes=64, seed=0)
        d = d["weight"].reshape(-1).double()
        G = 1.0 / (d + 0.01 * d.mean())
    else:
        G = torch.ones(3, dtype=torch.float64)

    def pot(w):
        return nbeta * loss(w) + 0.5 * gamma * (w - w_star) @ (w - w_star) + 0.5 * wd * w @ w

    def grad_u(w):
        return nbeta * grad_l(w) + gamma * (w - w_star) + wd * w

    def log_a(w0, w1):  # proposal N(w0 - eps/2 G grad U, eps G): metric G^-1
        fwd = (w1 - w0 + 0.5 * eps * G * grad_u(w0)) / G.sqrt()
        back = (w0 - w1 + 0.5 * eps * G * grad_u(w1)) / G.sqrt()
        return pot(w0) - pot(w1) - (back @ back) / (2 * eps) + (fwd @ fwd) / (2 * eps)

    with torch.no_grad():
        for j, t in enumerate(res.diag_steps):
            for c in range(chains):
                w0, w1 = record[t, c], record[t + 1, c]
                if kind == "sgld":  # the literal SPEC formula
                    expected = spec_log_accept(w0, w1, grad_u, pot, eps)
                else:
                    expected = log_a(w0, w1)
                assert res.log_accept[c, j] == pytest.approx(float(expected), abs=2e-3)
                dist = float((w0 - w_star).norm())
                assert res.distance[c, j] == pytest.approx(dist, rel=1e-5)
                assert res.loc_norm[c, j] == pytest.approx(gamma * dist, rel=1e-5)
                g_norm = nbeta * float(grad_l(w0).norm())
                assert res.grad_norm[c, j] == pytest.approx(g_norm, rel=1e-4)
        np.testing.assert_allclose(res.distance_trace,
                                   (record[:steps] - w_star).norm(dim=2).T.numpy(),
                                   rtol=1e-5, atol=1e-7)  # fmt: skip
    assert np.abs(res.log_accept).max() > 0.05  # the step is not trivially accepted


def _noise_stream(seed: int, shapes):
    """The sampler's N(0, I) draws, regenerated: one ``normal_`` per parameter per step."""
    _, gen = sgld._generators(seed, torch.device("cpu"))
    while True:
        yield [torch.empty(shape).normal_(generator=gen) for shape in shapes]


@pytest.mark.parametrize("kind", ["rmsprop", "gn_diag"])
def test_preconditioned_update_matches_a_reference_implementation(kind):
    """Five full-batch steps of the preconditioned kinds against the update written out here
    (module docstring of grokking_llc.sgld; RMSprop as devinterp's rmsprop_sgld: v from the raw
    loss gradient, G = 1 / (sqrt(v) + delta)), fed the sampler's own noise."""
    model, x, y, _ = linear_regression([0.5, 1.0, 2.0], n=32, outputs=2, seed=7)
    eps, nbeta, gamma, wd, chains = 0.01, 30.0, 3.0, 0.2, 2
    cfg = SamplerConfig(lr=eps, nbeta=nbeta, localization=gamma, weight_decay=wd,
                        num_chains=chains, num_burnin_steps=0, num_draws=5,
                        batch_size=len(x))  # fmt: skip
    opts = sgld.SamplerOptions(kind=kind, rmsprop_alpha=0.9, rmsprop_eps=0.05, gn_damping=0.1)
    w_star = model.weight.detach().clone()
    got = []
    sgld.sample_chains_many(model, [{"weight": w_star}], x, y, half_mse, cfg, seeds=[9],
                            device="cpu", options=opts, overlap_noise=False,
                            on_step=lambda t, p: got.append(p["weight"].clone()))  # fmt: skip
    w = w_star.unsqueeze(0).repeat(chains, 1, 1).double()
    ws = w_star.double()
    v = torch.zeros_like(w)
    if kind == "gn_diag":  # the sampler's GN estimate (tested against closed forms below)
        d = sgld.gauss_newton_diagonal(model, {"weight": w_star}, x, y, half_mse,
                                       num_probes=64, seed=0)["weight"].double()  # fmt: skip
        G = (1.0 / (d + 0.1 * d.mean())).expand_as(w)
    noise = _noise_stream(9, [(chains, *w_star.shape)])
    for t in range(5):
        wg = w.clone().requires_grad_(True)
        loss = sum(half_mse(x.double() @ wg[c].T, y.double()) for c in range(chains))
        (g,) = torch.autograd.grad(loss, wg)
        if kind == "rmsprop":
            v = 0.9 * v + 0.1 * g**2
            G = 1.0 / (v.sqrt() + 0.05)
        drift = nbeta * g + gamma * (w - ws) + wd * w
        (xi,) = next(noise)
        w = w - 0.5 * eps * G * drift + math.sqrt(eps) * G.sqrt() * xi.double()
        np.testing.assert_allclose(got[t].double().numpy(), w.numpy(), rtol=1e-4, atol=1e-6)


def test_rmsprop_sgld_agrees_with_devinterps(trained):
    """Same checkpoint and settings, RMSprop-SGLD in both backends: the LLCs agree within
    3 combined standard errors (chain-to-chain SE, 6 chains each)."""
    model, x, y = trained
    sampler = dict(lr=2e-4, localization=50.0, num_chains=6, num_burnin_steps=100,
                   num_draws=200, batch_size=16, kind="rmsprop", burn_in="fixed")  # fmt: skip
    fast = estimate_llc(model, x, y, centred_mse, sampler, seed=0, backend="fast")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = estimate_llc(model, x, y, centred_mse, sampler, seed=0, backend="devinterp")
    assert fast.sampler_kind == ref.sampler_kind == "rmsprop"
    assert not fast.diverged.any() and not ref.diverged.any()
    se = math.hypot(fast.llc_std / math.sqrt(6), ref.llc_std / math.sqrt(6))
    assert fast.llc_mean > 0
    assert abs(fast.llc_mean - ref.llc_mean) <= 3 * se, (fast.llc_mean, ref.llc_mean, se)
    plain = estimate_llc(model, x, y, centred_mse, {**sampler, "kind": "sgld"}, seed=0,
                         backend="fast")  # fmt: skip
    assert not np.allclose(plain.loss_trace, fast.loss_trace)  # the kind changes the chain


def test_gauss_newton_diagonal_matches_the_closed_form_of_the_quadratic_net():
    """For the centred loss (SPEC 2), GN = J^T (P/n) J, whose diagonal is
    ``(1/n) |P h_j^2|^2`` for V[j, k] and ``(4/n) |V_j|^2 |P (h_j * e_a)|^2`` for W[a, j]
    (h = XW, e_a the rows using input a). The probe estimate agrees within 20% per entry and 5%
    on average; rescaling W -> cW, V -> V/c^2 scales it exactly by c^-2 and c^4."""
    p, width = 7, 6
    net = QuadraticNet(p, width, generator=torch.Generator().manual_seed(0))
    x, y = split_tensors(make_split(p, 0.6, 0), "train")
    n = len(x)
    params = {k: v.detach() for k, v in net.named_parameters()}
    est = sgld.gauss_newton_diagonal(net, params, x, y, centred_mse, num_probes=800, seed=0)
    W, V = params["W"], params["V"]
    h = W[x[:, 0]] + W[x[:, 1] + p]
    P = torch.eye(n) - 1.0 / n
    exact_v = (((P @ h**2) ** 2).sum(0) / n)[:, None].expand(width, p)
    exact_w = torch.stack([
        4.0 / n * (V**2).sum(1)
        * ((P @ (h * ((x[:, 0] == a) | (x[:, 1] + p == a)).float()[:, None])) ** 2).sum(0)
        for a in range(2 * p)
    ])  # fmt: skip
    for name, exact in (("W", exact_w), ("V", exact_v)):
        rel = ((est[name] - exact).abs() / exact).numpy()
        assert rel.max() < 0.2 and rel.mean() < 0.05, (name, rel.max(), rel.mean())
    c = 2.0
    scaled = sgld.gauss_newton_diagonal(net, {"W": W * c, "V": V / c**2}, x, y, centred_mse,
                                        num_probes=800, seed=0)  # fmt: skip
    torch.testing.assert_close(scaled["W"], est["W"] / c**2, rtol=1e-4, atol=0)
    torch.testing.assert_close(scaled["V"], est["V"] * c**4, rtol=1e-4, atol=0)


def test_adaptive_run_is_a_prefix_of_the_run_at_the_cap(trained):
    """``stop`` ends a checkpoint's chains at a check; every number up to there is the one of
    the fixed-length run at ``max_steps`` (batch schedule and noise drawn for the cap)."""
    model, x, y = trained
    cfg = small_sampler(num_burnin_steps=0, num_draws=50)
    states = [model.state_dict(), {k: v * 1.01 for k, v in model.state_dict().items()}]
    calls = []

    def stop(s, trace, diag):
        calls.append((s, trace.shape[1]))
        return s == 0 or trace.shape[1] >= 110

    run = sgld.sample_chains_many(
        model,
        states,
        x,
        y,
        centred_mse,
        cfg,
        seeds=[1, 2],
        device="cpu",
        max_steps=200,
        stop=stop,
        diag_every=10,
    )
    full = sgld.sample_chains_many(model, states, x, y, centred_mse, cfg, seeds=[1, 2],
                                   device="cpu", max_steps=200, diag_every=10)  # fmt: skip
    assert calls == [(0, 50), (1, 50), (1, 75), (1, 113)]  # grows by half each time
    assert run[0].trace.shape[1] == 50 and run[1].trace.shape[1] == 113
    assert full[0].trace.shape[1] == 200
    for part, whole in zip(run, full, strict=True):
        used = part.trace.shape[1]
        np.testing.assert_array_equal(part.trace, whole.trace[:, :used])
        np.testing.assert_array_equal(part.distance_trace, whole.distance_trace[:, :used])
        keep = whole.diag_steps < used
        np.testing.assert_array_equal(part.log_accept, whole.log_accept[:, keep])
