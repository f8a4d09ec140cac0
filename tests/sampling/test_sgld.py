"""Tests of the fast SGLD backend, grokking_llc.sampling.sgld (SPEC section 4).

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

from grokking_llc.core.data import make_split, split_tensors
from grokking_llc.core.model import QuadraticNet, build_model, centred_mse, cross_entropy
from grokking_llc.core.settings import SamplerConfig
from grokking_llc.sampling import sgld
from grokking_llc.sampling.llc import estimate_llc
from grokking_llc.sampling.sgld import (
    GROWTH,
    batch_schedule,
    gauss_newton_diagonal,
    sample_chains_many,
)

from .helpers import TINY_SGLD, WIDTH, P, half_mse, loss_traces, loss_traces_many, quad_setup


def small_sampler(**overrides) -> SamplerConfig:
    base = dict(lr=1e-3, localization=5.0, num_chains=3, num_burnin_steps=20, num_draws=60)
    return SamplerConfig(**{"batch_size": 16, **base, **overrides})


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


def spec_log_accept(w0, w1, grad_u, u, eps):
    """SPEC section 10's MALA log acceptance written out literally (float64)."""
    fwd = w1 - w0 + 0.5 * eps * grad_u(w0)
    back = w0 - w1 + 0.5 * eps * grad_u(w1)
    return u(w0) - u(w1) - (back @ back) / (2 * eps) + (fwd @ fwd) / (2 * eps)


def _noise_stream(seed: int, shapes):
    """The sampler's N(0, I) draws, regenerated: one ``normal_`` per parameter per step."""
    _, gen = sgld._generators(seed, torch.device("cpu"))
    while True:
        yield [torch.empty(shape).normal_(generator=gen) for shape in shapes]


def ref_generators(seed):
    a, b = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(a)), torch.Generator().manual_seed(int(b))


def ref_schedule(n, m, num_batches, gen, cycle=False):
    per = n // m
    batches = []
    first = None
    while len(batches) < num_batches:
        if cycle and first is not None:
            perm = first
        else:
            perm = torch.randperm(n, generator=gen)
            first = first if first is not None else perm
        for k in range(per):
            batches.append(perm[k * m : (k + 1) * m].tolist())
    return batches[:num_batches]


def quad_loss64(params, x, y, p):
    W, V = params["W"], params["V"]
    h = W[x[:, 0]] + W[x[:, 1] + p]
    pred = (h * h) @ V
    r = torch.nn.functional.one_hot(y, p).double() - pred
    r = r - r.mean(dim=0, keepdim=True)
    return 0.5 * (r * r).sum() / len(x)


class Tiny(nn.Module):
    """A generic (non-quadratic) model: tanh layer then linear, inputs as floats."""

    def __init__(self, gen):
        super().__init__()
        self.A = nn.Parameter(torch.randn(3, 4, generator=gen) * 0.5)
        self.c = nn.Parameter(torch.randn(4, 2, generator=gen) * 0.5)

    def forward(self, x):
        return torch.tanh(x @ self.A) @ self.c


def tiny_loss64(params, x, y):
    pred = torch.tanh(x.double() @ params["A"]) @ params["c"]
    return torch.nn.functional.cross_entropy(pred, y)


def ce(pred, y):
    return torch.nn.functional.cross_entropy(pred, y)


def ref_sgld(
    loss64,
    centers,
    x,
    y,
    cfg,
    seeds,
    names,
    shapes,
    *,
    gn=None,
    steps=None,
    cycle=False,
):
    """Plain-loop SGLD, RMSprop-SGLD or GN-preconditioned SGLD (``cfg.kind``; ``gn[s]``: G per
    parameter): (traces (S, C, T), init losses, batches [s][t])."""
    kind = cfg.kind
    C, m = cfg.num_chains, cfg.batch_size
    eps, gamma, wd = cfg.lr, cfg.localization, cfg.weight_decay
    nbeta = cfg.resolved_nbeta
    T = steps or cfg.num_steps
    traces = np.zeros((len(seeds), C, T))
    inits, scheds = [], []
    for s, seed in enumerate(seeds):
        gb, gnz = ref_generators(seed)
        sched = ref_schedule(len(x), m, max(T, cfg.num_init_loss_batches), gb, cycle)
        scheds.append(sched)
        c64 = {k: centers[s][k].double() for k in names}
        inits.append(
            float(
                np.mean(
                    [loss64(c64, x[b], y[b]).item() for b in sched[: cfg.num_init_loss_batches]]
                )
            )
        )
        w = [{k: c64[k].clone() for k in names} for _ in range(C)]
        sq_avg = [{k: torch.zeros(shapes[k], dtype=torch.float64) for k in names} for _ in range(C)]
        for t in range(T):
            rows = sched[t]
            grads = []
            for c in range(C):
                wc = {k: v.clone().requires_grad_(True) for k, v in w[c].items()}
                loss = loss64(wc, x[rows], y[rows])
                g = torch.autograd.grad(loss, [wc[k] for k in names])
                traces[s, c, t] = loss.item()
                grads.append(dict(zip(names, g, strict=True)))
            xi = {k: torch.empty((C, *shapes[k])).normal_(generator=gnz) for k in names}
            for c in range(C):
                for k in names:
                    g, wk, xk = grads[c][k], w[c][k], xi[k][c].double()
                    if kind == "sgld":
                        w[c][k] = (
                            wk
                            - 0.5 * eps * (nbeta * g + gamma * (wk - c64[k]) + wd * wk)
                            + math.sqrt(eps) * xk
                        )
                        continue
                    if kind == "rmsprop":
                        a = cfg.rmsprop_alpha
                        sq_avg[c][k] = a * sq_avg[c][k] + (1 - a) * g * g
                        G = 1.0 / (sq_avg[c][k].sqrt() + cfg.rmsprop_eps)
                    else:
                        G = gn[s][k]
                    drift = nbeta * g + gamma * (wk - c64[k]) + wd * wk
                    w[c][k] = wk - 0.5 * eps * G * drift + (eps * G).sqrt() * xk
    return traces, inits, scheds


def tiny_setup(S=2, n=11):
    gen = torch.Generator().manual_seed(3)
    model = Tiny(gen)
    states = [{k: v.detach().clone() for k, v in model.named_parameters()}]
    for _ in range(S - 1):
        states.append(
            {k: v + 0.2 * torch.randn(v.shape, generator=gen) for k, v in states[0].items()}
        )
    x = torch.randn(n, 3, generator=gen)
    y = torch.randint(0, 2, (n,), generator=gen)
    return model, states, x, y


CFG = TINY_SGLD


def on_cpu(model, states, x, y, loss_fn, cfg, seeds, **knobs):
    """:func:`sample_chains_many` on the CPU."""
    return sample_chains_many(model, states, x, y, loss_fn, cfg, seeds=seeds, device="cpu", **knobs)


def collect_params(store):
    def on_step(t, params):
        store.append({k: v.detach().double().clone() for k, v in params.items()})

    return on_step


def ref_run(loss64, states, x, y, cfg, seeds, names, **kw):
    shapes = {k: tuple(states[0][k].shape) for k in names}
    return ref_sgld(loss64, states, x, y, cfg, seeds, names, shapes, **kw)


def quad_ce_loss64(params, x, y, p):
    W, V = params["W"], params["V"]
    h = W[x[:, 0]] + W[x[:, 1] + p]
    return torch.nn.functional.cross_entropy((h * h) @ V, y)


def _textbook_log_accept(loss64, w0, w1, center, xi, eps, nbeta, gamma, wd):
    """log of the MALA acceptance ratio for the step w0 -> w1 with U as in the docstring."""

    def U_and_grad(w):
        wg = {k: v.clone().requires_grad_(True) for k, v in w.items()}
        u = nbeta * loss64(wg)
        for k in wg:
            u = u + 0.5 * gamma * ((wg[k] - center[k]) ** 2).sum() + 0.5 * wd * (wg[k] ** 2).sum()
        g = torch.autograd.grad(u, list(wg.values()))
        return u.item(), dict(zip(wg, g, strict=True))

    u0, g0 = U_and_grad(w0)
    u1, g1 = U_and_grad(w1)
    # the proposal from w0 is w0 - (eps/2) grad U(w0) + sqrt(eps) xi: w1 - w0 is exactly that
    fwd = sum((xi[k] ** 2).sum() for k in xi).item() * eps
    rev = sum(
        ((-math.sqrt(eps) * xi[k] + 0.5 * eps * (g0[k] + g1[k])) ** 2).sum() for k in xi
    ).item()
    return u0 - u1 - rev / (2 * eps) + fwd / (2 * eps)


@pytest.fixture(scope="module")
def split():
    return make_split(7, 0.6, seed=0)


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
    [(trace, init_loss)] = loss_traces_many(
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


@pytest.mark.parametrize("loss_fn", [centred_mse, cross_entropy])
def test_generic_and_quadratic_paths_give_the_same_trace(trained, loss_fn):
    """Identical random numbers by design; only the gradient's float rounding differs.

    Tolerance rtol 1e-4: float32 rounding (~1e-7 relative per step) accumulated over 100 steps
    of a contracting recursion stays orders of magnitude below it (observed ~3e-7).
    """
    model, x, y = trained
    cfg = small_sampler(num_draws=80)
    tq, iq = loss_traces(model, x, y, loss_fn, cfg, seed=4, device="cpu",
                                     path="quadratic")  # fmt: skip
    tg, ig = loss_traces(model, x, y, loss_fn, cfg, seed=4, device="cpu",
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
    ref = loss_traces_many(model, states, x, y, centred_mse, cfg, seeds=[1, 2],
                                       device="cpu")  # fmt: skip
    monkeypatch.setattr(sgld, "_use_one_hot_scatter", lambda device: True)
    alt = loss_traces_many(model, states, x, y, centred_mse, cfg, seeds=[1, 2],
                                       device="cpu")  # fmt: skip
    for (t_ref, _), (t_alt, _) in zip(ref, alt, strict=True):
        np.testing.assert_allclose(t_alt, t_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("path", ["quadratic", "generic"])
def test_same_seed_same_numbers(trained, path):
    model, x, y = trained
    cfg = small_sampler()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t1, i1 = loss_traces(model, x, y, centred_mse, cfg, seed=7, device="cpu",
                                     path=path)  # fmt: skip
    t2, i2 = loss_traces(model, x, y, centred_mse, cfg, seed=7, device="cpu",
                                     path=path)  # fmt: skip
    t3, _ = loss_traces(model, x, y, centred_mse, cfg, seed=8, device="cpu",
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
    many = loss_traces_many(
        model, states, x, y, centred_mse, cfg, seeds=seeds, device="cpu", path=path
    )
    single = QuadraticNet(P, WIDTH)
    for state, seed, (trace, init_loss) in zip(states, seeds, many, strict=True):
        single.load_state_dict(state)
        t1, i1 = loss_traces(single, x, y, centred_mse, cfg, seed=seed,
                                         device="cpu", path=path)  # fmt: skip
        np.testing.assert_array_equal(trace, t1)
        assert init_loss == i1


def test_noise_thread_gives_the_same_numbers(trained):
    model, x, y = trained
    cfg = small_sampler()
    on = loss_traces(model, x, y, centred_mse, cfg, seed=3, device="cpu",
                                 overlap_noise=True)  # fmt: skip
    off = loss_traces(model, x, y, centred_mse, cfg, seed=3, device="cpu",
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
        loss_traces(model, x, y, centred_mse, small_sampler(batch_size=len(x) + 1),
                                seed=0, device="cpu")  # fmt: skip
    with pytest.raises(ValueError, match="quadratic"):
        loss_traces(nn.Linear(2, P), x.float(), y, centred_mse, small_sampler(),
                                seed=0, device="cpu", path="quadratic")  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_paths(trained):
    """On CUDA: same seed -> same trace (quadratic path), and the two paths agree."""
    cpu_model, x, y = trained
    model = QuadraticNet(P, WIDTH)
    model.load_state_dict(cpu_model.state_dict())
    model = model.cuda()
    cfg = small_sampler()
    t1, i1 = loss_traces(model, x, y, centred_mse, cfg, seed=1, device="cuda")
    t2, i2 = loss_traces(model, x, y, centred_mse, cfg, seed=1, device="cuda")
    tg, ig = loss_traces(model, x, y, centred_mse, cfg, seed=1, device="cuda",
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

    loss_traces_many(model, [{"weight": model.weight.detach()}], x, y, half_mse,
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
                        batch_size=len(x), kind=kind)  # fmt: skip
    state = {"weight": model.weight.detach().clone()}
    record = torch.empty(steps + 1, chains, 3, dtype=torch.float64)
    record[0] = state["weight"].reshape(-1).double()

    def on_step(t, params):
        record[t + 1] = params["weight"].reshape(chains, -1).double()

    [res] = sgld.sample_chains_many(model, [state], x, y, half_mse, cfg, seeds=[3],
                                    device="cpu", diag_every=4, _on_step=on_step,
                                    _overlap_noise=False)  # fmt: skip
    [plain] = sgld.sample_chains_many(model, [state], x, y, half_mse, cfg, seeds=[3],
                                      device="cpu")  # fmt: skip
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

    if kind == "gn_diag":  # G = 1 / (diag + damping mean(diag)), the sampler's GN estimate
        assert cfg.gn_damping == 1.0  # the default (SamplerConfig)
        d = sgld.gauss_newton_diagonal(model, state, x, y, half_mse, num_probes=64, seed=0)
        d = d["weight"].reshape(-1).double()
        G = 1.0 / (d + 1.0 * d.mean())
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


@pytest.mark.parametrize("kind", ["rmsprop", "gn_diag"])
def test_preconditioned_update_matches_a_reference_implementation(kind):
    """Five full-batch steps of the preconditioned kinds against the update written out here
    (module docstring of grokking_llc.sampling.sgld; RMSprop as devinterp's rmsprop_sgld: v from the
    raw
    loss gradient, G = 1 / (sqrt(v) + delta)), fed the sampler's own noise."""
    model, x, y, _ = linear_regression([0.5, 1.0, 2.0], n=32, outputs=2, seed=7)
    eps, nbeta, gamma, wd, chains = 0.01, 30.0, 3.0, 0.2, 2
    cfg = SamplerConfig(lr=eps, nbeta=nbeta, localization=gamma, weight_decay=wd,
                        num_chains=chains, num_burnin_steps=0, num_draws=5,
                        batch_size=len(x), kind=kind, rmsprop_alpha=0.9, rmsprop_eps=0.05,
                        gn_damping=0.1)  # fmt: skip
    w_star = model.weight.detach().clone()
    got = []
    sgld.sample_chains_many(model, [{"weight": w_star}], x, y, half_mse, cfg, seeds=[9],
                            device="cpu", _overlap_noise=False,
                            _on_step=lambda t, p: got.append(p["weight"].clone()))  # fmt: skip
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

    run = on_cpu(
        model, states, x, y, centred_mse, cfg, [1, 2], max_steps=200, stop=stop, diag_every=10
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


def test_batch_schedule_equals_the_reference_both_modes():
    for mode, cycle in (("reshuffle", False), ("cycle", True)):
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        got = batch_schedule(10, 3, 8, g1, torch.device("cpu"), mode)
        assert got.shape == (8, 3)
        assert got.tolist() == ref_schedule(10, 3, 8, g2, cycle)
    # default is reshuffle
    g1, g2 = torch.Generator().manual_seed(6), torch.Generator().manual_seed(6)
    assert batch_schedule(7, 2, 9, g1, torch.device("cpu")).tolist() == ref_schedule(7, 2, 9, g2)
    with pytest.raises(ValueError, match="unknown epoch_mode 'x'; choose one of"):
        batch_schedule(7, 2, 9, g1, torch.device("cpu"), "x")


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("epoch_mode", ["reshuffle", "cycle"])
def test_quadratic_path_equals_the_plain_loop_reference(overlap, epoch_mode):
    model, states, x, y = quad_setup()
    cfg = SamplerConfig(**CFG)
    seeds = [4, 9]
    store = []
    out = on_cpu(
        model,
        states,
        x,
        y,
        centred_mse,
        cfg,
        seeds,
        _on_step=collect_params(store),
        _overlap_noise=overlap,
        _epoch_mode=epoch_mode,
    )
    p = model.p
    want, inits, _ = ref_run(
        lambda w, a, b: quad_loss64(w, a, b, p),
        states,
        x,
        y,
        cfg,
        seeds,
        ["W", "V"],
        cycle=epoch_mode == "cycle",
    )
    assert len(out) == 2
    for s in range(2):
        assert out[s].trace.shape == (2, 6)
        assert out[s].trace.dtype == np.float64
        np.testing.assert_allclose(out[s].trace, want[s], rtol=2e-5, atol=1e-7)
        assert out[s].init_loss == pytest.approx(inits[s], rel=1e-6)
        assert out[s].num_params == 2 * p * 2 + 2 * p
        # no diagnostics requested: empty arrays of the documented shapes
        assert out[s].diag_steps.shape == (0,)
        assert out[s].log_accept.shape == (2, 0)
        assert out[s].distance_trace.shape == (2, 0)
    assert len(store) == 6 and store[0]["W"].shape == (4, 2 * p, 2)


def test_generic_path_equals_the_reference_and_quadratic_generic_agree():
    model, states, x, y = tiny_setup()
    cfg = SamplerConfig(**{**CFG, "batch_size": 4, "num_init_loss_batches": 3})
    out = on_cpu(model, states, x, y, ce, cfg, [1, 2], _overlap_noise=False)
    want, inits, _ = ref_run(tiny_loss64, states, x, y, cfg, [1, 2], ["A", "c"])
    for s in range(2):
        np.testing.assert_allclose(out[s].trace, want[s], rtol=2e-5, atol=1e-7)
        assert out[s].init_loss == pytest.approx(inits[s], rel=1e-6)
    # the quadratic model through the generic path: same trace as the quadratic path
    qm, qs, qx, qy = quad_setup(S=1)
    cfgq = SamplerConfig(**CFG)
    a = loss_traces_many(qm, qs, qx, qy, centred_mse, cfgq, seeds=[3], device="cpu", path="generic")
    b = loss_traces_many(
        qm, qs, qx, qy, centred_mse, cfgq, seeds=[3], device="cpu", path="quadratic"
    )
    np.testing.assert_allclose(a[0][0], b[0][0], rtol=1e-5)


def test_quadratic_path_with_another_loss_uses_autograd_of_that_loss():
    model, states, x, y = quad_setup(S=1)
    cfg = SamplerConfig(**CFG)

    def mse(pred, target):
        return (
            (pred - torch.nn.functional.one_hot(target, pred.shape[1]).to(pred.dtype)) ** 2
        ).mean()

    def mse64(w, a, b):
        W, V = w["W"], w["V"]
        h = W[a[:, 0]] + W[a[:, 1] + 3]
        return (((h * h) @ V - torch.nn.functional.one_hot(b, 3).double()) ** 2).mean()

    [(trace, init)] = loss_traces_many(
        model, states, x, y, mse, cfg, seeds=[7], device="cpu", path="quadratic"
    )
    want, inits, _ = ref_run(mse64, states, x, y, cfg, [7], ["W", "V"])
    np.testing.assert_allclose(trace, want[0], rtol=2e-5, atol=1e-7)
    assert init == pytest.approx(inits[0], rel=1e-6)


def test_default_nbeta_and_no_weight_decay_no_localisation():
    model, states, x, y = quad_setup(S=1)
    cfg = SamplerConfig(**{**CFG, "nbeta": None, "weight_decay": 0.0, "localization": 0.0})
    assert cfg.resolved_nbeta == pytest.approx(3 / math.log(3))
    trace, init = loss_traces(model, x, y, centred_mse, cfg, seed=11, device="cpu")
    # sample_loss_traces samples the model's own parameters
    own = [{k: v.detach() for k, v in model.named_parameters()}]
    want, inits, _ = ref_run(
        lambda w, a, b: quad_loss64(w, a, b, 3), own, x, y, cfg, [11], ["W", "V"]
    )
    np.testing.assert_allclose(trace, want[0], rtol=2e-5, atol=1e-7)
    assert init == pytest.approx(inits[0], rel=1e-6)


@pytest.mark.parametrize("kind", ["rmsprop", "gn_diag"])
def test_preconditioned_kinds_equal_the_reference(kind):
    model, states, x, y = tiny_setup()
    cfg = SamplerConfig(**{**CFG, "batch_size": 4}, kind=kind, rmsprop_alpha=0.9,
                        rmsprop_eps=0.05, gn_damping=0.1, gn_probes=3)  # fmt: skip
    out = on_cpu(model, states, x, y, ce, cfg, [1, 2], _overlap_noise=False)
    gn = None
    if kind == "gn_diag":
        gn = []
        for s in range(2):
            h = gauss_newton_diagonal(model, states[s], x, y, ce, num_probes=3, seed=s)
            gs = {}
            for k, v in h.items():
                floor = 0.1 * float(v.mean())
                gs[k] = 1.0 / (v.double() + (floor if floor > 0 else 1.0))
            gn.append(gs)
    want, _, _ = ref_run(tiny_loss64, states, x, y, cfg, [1, 2], ["A", "c"], gn=gn)
    for s in range(2):
        np.testing.assert_allclose(out[s].trace, want[s], rtol=5e-5, atol=1e-7)


@pytest.mark.parametrize("loss_fn", [centred_mse, cross_entropy])
def test_gn_diag_on_the_quadratic_path_takes_the_hand_written_gradient_and_equals_the_reference(
    loss_fn, monkeypatch
):
    """gn_diag on a plain QuadraticNet runs on the quadratic path's hand-written gradient
    (``_Sampler._quadratic_gradient``, once per step; the generic path never calls it): its
    traces equal the plain-loop reference with ``G = 1 / (diag + damping mean(diag))`` at the
    default damping 1, and its traces and every diagnostic equal the generic path's up to
    float32 rounding, for the centred MSE and the cross-entropy."""
    p = 5
    model, states, x, y = quad_setup(p=p, K=4, S=2)
    cfg = SamplerConfig(**{**CFG, "lr": 1e-4, "nbeta": 20.0, "num_draws": 30, "batch_size": 8},
                        kind="gn_diag")  # fmt: skip
    assert cfg.gn_damping == 1.0
    used = []
    hand = sgld._Sampler._quadratic_gradient

    def counted(self, t, loss_out):
        used.append(t)
        return hand(self, t, loss_out)

    monkeypatch.setattr(sgld._Sampler, "_quadratic_gradient", counted)
    kw = dict(seeds=[1, 2], device="cpu", diag_every=5, _overlap_noise=False)
    quad = sample_chains_many(model, states, x, y, loss_fn, cfg, _path="quadratic", **kw)
    assert used == list(range(cfg.num_steps))  # both checkpoints in one call per step
    used.clear()
    generic = sample_chains_many(model, states, x, y, loss_fn, cfg, _path="generic", **kw)
    assert used == []
    for a, b in zip(quad, generic, strict=True):
        assert a.init_loss == b.init_loss and np.isfinite(a.trace).all()
        np.testing.assert_allclose(a.trace, b.trace, rtol=1e-5, atol=1e-6)
        for key in ("log_accept", "distance", "grad_norm", "loc_norm", "distance_trace"):
            np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=1e-4, atol=1e-6,
                                       err_msg=key)  # fmt: skip
        assert np.abs(a.trace[:, -1] - a.trace[:, 0]).max() > 1e-2  # the chains moved
    gn = []
    for s in range(2):
        h = gauss_newton_diagonal(model, states[s], x, y, loss_fn, num_probes=64, seed=s)
        gn.append({k: 1.0 / (v.double() + 1.0 * float(v.mean())) for k, v in h.items()})
    loss64 = quad_loss64 if loss_fn is centred_mse else quad_ce_loss64
    want, _, _ = ref_run(lambda w, a, b: loss64(w, a, b, p), states, x, y, cfg, [1, 2],
                         ["W", "V"], gn=gn)  # fmt: skip
    for s in range(2):
        np.testing.assert_allclose(quad[s].trace, want[s], rtol=5e-5, atol=1e-7)


def test_gn_diag_unit_scale_for_a_tensor_the_loss_does_not_see():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.tensor([0.5, -0.2]))
            self.b = nn.Parameter(torch.tensor([0.3]))

        def forward(self, x):
            return (x * self.a).sum(1, keepdim=True) + 0 * self.b

    def l2(pred, target):
        return 0.5 * ((pred[:, 0] - target) ** 2).mean()

    def l2_64(w, xb, yb):
        return 0.5 * (((xb.double() * w["a"]).sum(1) - yb.double()) ** 2).mean()

    model = Unused()
    x = torch.tensor([[1.0, 2.0]])  # one row: the probe estimate of the GN diagonal is exact
    y = torch.tensor([0.1])
    cfg = SamplerConfig(**{**CFG, "batch_size": 1, "num_init_loss_batches": 1}, kind="gn_diag",
                        gn_damping=0.5, gn_probes=2)  # fmt: skip
    states = [{k: v.detach() for k, v in model.named_parameters()}]
    [res] = sample_chains_many(model, states, x, y, l2, cfg, seeds=[0], device="cpu")
    # exact GN diagonal of a linear model with the square loss on one row: x^2
    h_a = x[0].double() ** 2
    gn = [{"a": 1.0 / (h_a + 0.5 * h_a.mean()), "b": torch.ones(1, dtype=torch.float64)}]

    def loss64(w, xb, yb):
        return l2_64(w, xb, yb) + 0 * w["b"].sum()

    want, _, _ = ref_run(loss64, states, x, y, cfg, [0], ["a", "b"], gn=gn)
    np.testing.assert_allclose(res.trace, want[0], rtol=5e-5, atol=1e-8)


def test_gauss_newton_diagonal_exact_for_one_output_and_clamped():
    lin = nn.Linear(3, 1, bias=False)
    x = torch.tensor([[1.0, -2.0, 0.5]])
    y = torch.tensor([[0.3]])
    params = {"weight": torch.tensor([[0.2, 0.1, -0.4]])}

    def loss(f, t):  # curvature 3 in f
        return 1.5 * ((f - t) ** 2).sum()

    got = gauss_newton_diagonal(lin, params, x, y, loss, num_probes=5, seed=1)
    np.testing.assert_allclose(got["weight"].numpy(), 3.0 * x.numpy() ** 2, rtol=1e-6)

    def concave(f, t):
        return -0.5 * (f**2).sum()

    got = gauss_newton_diagonal(lin, params, x, y, concave)
    assert torch.equal(got["weight"], torch.zeros(1, 3))


@pytest.mark.parametrize("which", ["quadratic", "generic"])
def test_diagnostics_equal_textbook_mala_and_norms(which):
    if which == "quadratic":
        model, states, x, y = quad_setup(S=2)
        loss_fn, names = centred_mse, ["W", "V"]

        def loss64(w, a, b):
            return quad_loss64(w, a, b, 3)
    else:
        model, states, x, y = tiny_setup()
        loss_fn, names, loss64 = ce, ["A", "c"], tiny_loss64
    cfg = SamplerConfig(**{**CFG, "lr": 0.02, "num_draws": 5})
    store = []
    seeds = [5, 8]
    out = on_cpu(
        model,
        states,
        x,
        y,
        loss_fn,
        cfg,
        seeds,
        diag_every=3,
        _on_step=collect_params(store),
        _overlap_noise=False,
    )
    # diagnostic steps t with (t + 1) % 3 == 0
    C, eps, nbeta, gamma, wd = 2, cfg.lr, 3.0, cfg.localization, cfg.weight_decay
    for s in range(2):
        np.testing.assert_array_equal(out[s].diag_steps, [2, 5])
        gb, gnz = ref_generators(seeds[s])
        sched = ref_schedule(len(x), cfg.batch_size, 7, gb)
        shapes = {k: tuple(states[s][k].shape) for k in names}
        noise = [
            {k: torch.empty((C, *shapes[k])).normal_(generator=gnz) for k in names}
            for _ in range(7)
        ]
        center = {k: states[s][k].double() for k in names}
        for d, t in enumerate([2, 5]):
            for c in range(C):
                row = s * C + c
                w0 = {k: store[t - 1][k][row] for k in names}
                w1 = {k: store[t][k][row] for k in names}
                xi = {k: noise[t][k][c].double() for k in names}
                rows = sched[t]
                want = _textbook_log_accept(
                    lambda w, rows=rows: loss64(w, x[rows], y[rows]),
                    w0,
                    w1,
                    center,
                    xi,
                    eps,
                    nbeta,
                    gamma,
                    wd,
                )
                assert out[s].log_accept[c, d] == pytest.approx(want, abs=2e-4, rel=1e-3)
                dist = math.sqrt(sum(((w0[k] - center[k]) ** 2).sum().item() for k in names))
                assert out[s].distance[c, d] == pytest.approx(dist, rel=1e-5)
                assert out[s].loc_norm[c, d] == pytest.approx(gamma * dist, rel=1e-5)
                wg = {k: v.clone().requires_grad_(True) for k, v in w0.items()}
                g = torch.autograd.grad(loss64(wg, x[rows], y[rows]), list(wg.values()))
                gn = math.sqrt(sum((gi**2).sum().item() for gi in g))
                assert out[s].grad_norm[c, d] == pytest.approx(nbeta * gn, rel=1e-4)
        # distance_trace: |w_t - w*| before every step (step 0: at w*, so 0)
        assert out[s].distance_trace.shape == (C, 7)
        for c in range(C):
            assert out[s].distance_trace[c, 0] == 0.0
            for t in range(1, 7):
                row = s * C + c
                dist = math.sqrt(
                    sum(
                        ((store[t - 1][k][row] - states[s][k].double()) ** 2).sum().item()
                        for k in names
                    )
                )
                assert out[s].distance_trace[c, t] == pytest.approx(dist, rel=1e-5)


def test_log_accept_with_rmsprop_uses_the_preconditioner():
    model, states, x, y = tiny_setup(S=1)
    cfg = SamplerConfig(**{**CFG, "lr": 0.02, "num_draws": 1, "num_burnin_steps": 1},
                        kind="rmsprop", rmsprop_alpha=0.5, rmsprop_eps=0.2)  # fmt: skip
    store = []
    [res] = on_cpu(
        model,
        states,
        x,
        y,
        ce,
        cfg,
        [2],
        diag_every=2,
        _on_step=collect_params(store),
        _overlap_noise=False,
    )
    # step 1 is the diagnostic step; G at step 1 from the square averages of steps 0 and 1
    names = ["A", "c"]
    gb, gnz = ref_generators(2)
    sched = ref_schedule(len(x), cfg.batch_size, 2, gb)
    noise = [
        {k: torch.empty((2, *states[0][k].shape)).normal_(generator=gnz) for k in names}
        for _ in range(2)
    ]
    center = {k: states[0][k].double() for k in names}
    eps, nbeta, gamma, wd = cfg.lr, 3.0, cfg.localization, cfg.weight_decay
    for c in range(2):
        sq = {}
        ws = [center] + [{k: store[t][k][c] for k in names} for t in range(2)]
        for t in range(2):
            wg = {k: v.clone().requires_grad_(True) for k, v in ws[t].items()}
            g = torch.autograd.grad(tiny_loss64(wg, x[sched[t]], y[sched[t]]), list(wg.values()))
            for k, gk in zip(names, g, strict=True):
                sq[k] = 0.5 * sq.get(k, 0) + 0.5 * gk**2
        G = {k: 1.0 / (sq[k].sqrt() + 0.2) for k in names}
        rows = sched[1]

        def U_grad(w, rows=rows):
            wg = {k: v.clone().requires_grad_(True) for k, v in w.items()}
            u = nbeta * tiny_loss64(wg, x[rows], y[rows])
            for k in wg:
                u = (
                    u
                    + 0.5 * gamma * ((wg[k] - center[k]) ** 2).sum()
                    + 0.5 * wd * (wg[k] ** 2).sum()
                )
            return u.item(), torch.autograd.grad(u, list(wg.values()))

        u0, g0 = U_grad(ws[1])
        u1, g1 = U_grad(ws[2])
        Ssum = [a + b for a, b in zip(g0, g1, strict=True)]
        quad = sum((G[k] * s_ * s_).sum().item() for k, s_ in zip(names, Ssum, strict=True))
        cross = sum(
            (noise[1][k][c].double() * G[k].sqrt() * s_).sum().item()
            for k, s_ in zip(names, Ssum, strict=True)
        )
        want = u0 - u1 - eps / 8 * quad + 0.5 * math.sqrt(eps) * cross
        assert res.log_accept[c, 0] == pytest.approx(want, abs=2e-4, rel=1e-3)


def test_adaptive_length_asks_at_the_documented_steps_and_is_a_prefix():
    model, states, x, y = quad_setup(S=2)
    cfg = SamplerConfig(**{**CFG, "num_burnin_steps": 2, "num_draws": 2})  # 4 steps
    calls = []

    def stop(s, trace, diag):
        calls.append((s, trace.shape[1], sorted(diag)))
        return s == 0 and trace.shape[1] >= 6

    def run(sampler, **kw):
        return on_cpu(model, states, x, y, centred_mse, sampler, [1, 2], **kw)

    out = run(cfg, max_steps=13, stop=stop, diag_every=2)
    # checks at 4, then ceil(4 * 1.5) = 6, 9, then the cap 13
    assert GROWTH == 1.5
    assert [(s, t) for s, t, _ in calls] == [(0, 4), (1, 4), (0, 6), (1, 6), (1, 9)]
    assert calls[0][2] == [
        "distance",
        "distance_trace",
        "grad_norm",
        "init_loss",
        "loc_norm",
        "log_accept",
        "steps",
    ]
    full = run(cfg, max_steps=13, diag_every=2)
    assert out[0].trace.shape == (2, 6) and out[1].trace.shape == (2, 13)
    np.testing.assert_array_equal(out[0].trace, full[0].trace[:, :6])
    np.testing.assert_array_equal(out[1].trace, full[1].trace)
    np.testing.assert_array_equal(out[0].diag_steps, [1, 3, 5])
    np.testing.assert_array_equal(out[0].log_accept, full[0].log_accept[:, :3])
    np.testing.assert_array_equal(out[0].distance_trace, full[0].distance_trace[:, :6])
    # all stop at once: no growth
    calls.clear()
    out = run(cfg, max_steps=13, stop=lambda s, t, d: calls.append(s) or True)
    assert calls == [0, 1] and out[0].trace.shape == (2, 4)
    # growth of one step at least; cap equal to the run length: no check at all
    calls.clear()
    one = SamplerConfig(**{**CFG, "num_burnin_steps": 0, "num_draws": 1})
    run(one, max_steps=3, stop=lambda s, t, d: calls.append(t.shape[1]) and False)
    assert calls == [1, 1, 2, 2]
    calls.clear()
    run(cfg, max_steps=4, stop=lambda s, t, d: calls.append(1))
    assert calls == []


def test_argument_checks_with_their_messages():
    model, states, x, y = quad_setup(S=1)
    cfg = SamplerConfig(**CFG)
    kw = dict(seeds=[0], device="cpu")
    with pytest.raises(ValueError, match=r"^unknown SGLD path 'x'; choose one of \('auto'"):
        sample_chains_many(model, states, x, y, centred_mse, cfg, _path="x", **kw)
    with pytest.raises(ValueError, match=r"^1 states but 2 seeds$"):
        sample_chains_many(model, states, x, y, centred_mse, cfg, seeds=[0, 1], device="cpu")
    assert sample_chains_many(model, [], x, y, centred_mse, cfg, seeds=[], device="cpu") == []
    with pytest.raises(ValueError, match=r"^x and y differ in length: 9 != 8$"):
        sample_chains_many(model, states, x, y[:8], centred_mse, cfg, **kw)
    big = SamplerConfig(**{**CFG, "batch_size": 10})
    with pytest.raises(ValueError, match=r"^sampler batch_size 10 exceeds the 9 samples$"):
        sample_chains_many(model, states, x, y, centred_mse, big, **kw)
    full = SamplerConfig(**{**CFG, "batch_size": 9, "num_draws": 1, "num_burnin_steps": 0})
    sample_chains_many(model, states, x, y, centred_mse, full, **kw)  # batch = n is fine
    with pytest.raises(ValueError, match=r"^diag_every must be >= 0, got -1$"):
        sample_chains_many(model, states, x, y, centred_mse, cfg, diag_every=-1, **kw)
    with pytest.raises(ValueError, match=r"^max_steps 5 is below the 6 steps of one run$"):
        sample_chains_many(model, states, x, y, centred_mse, cfg, max_steps=5, **kw)
    tiny, tstates, tx, ty = tiny_setup(S=1)
    needs = r"^path='quadratic' needs a grokking_llc\.core\.model\.Qu"
    with pytest.raises(ValueError, match=needs):
        sample_chains_many(tiny, tstates, tx, ty, ce, cfg, _path="quadratic", **kw)
    with pytest.raises(ValueError, match=r"^seed must be >= 0, got -1$"):
        sample_chains_many(model, states, x, y, centred_mse, cfg, seeds=[-1], device="cpu")
    sample_chains_many(model, states, x, y, centred_mse, full, seeds=[0], device="cpu")
    with pytest.raises(ValueError, match=r"^states lack parameter\(s\) \['V'\]$"):
        sample_chains_many(model, [{"W": states[0]["W"]}], x, y, centred_mse, cfg, **kw)

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.zeros(2))
            self.b = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    m = Mixed()
    with pytest.raises(ValueError, match=r"^all parameters must share one dtype$"):
        sample_chains_many(m, [dict(m.named_parameters())], tx, ty, ce, cfg, **kw)


def test_auto_path_picks_quadratic_only_for_the_plain_net():
    class Sub(QuadraticNet):
        def forward(self, x):
            return super().forward(x) * 1.0

    model, states, x, y = quad_setup(S=1)
    sub = Sub(3, 2)
    cfg = SamplerConfig(**{**CFG, "num_draws": 1, "num_burnin_steps": 0})
    with pytest.raises(ValueError, match="needs a grokking_llc.core.model.QuadraticNet"):
        on_cpu(sub, states, x, y, centred_mse, cfg, [0], _path="quadratic")
    # the subclass runs through the generic path (auto): same numbers as the plain net's
    a = sample_chains_many(sub, states, x, y, centred_mse, cfg, seeds=[0], device="cpu")
    b = sample_chains_many(model, states, x, y, centred_mse, cfg, seeds=[0], device="cpu")
    np.testing.assert_allclose(a[0].trace, b[0].trace, rtol=1e-6)


def test_one_hot_scatter_path_equals_the_reference(monkeypatch):
    assert sgld._use_one_hot_scatter(torch.device("cpu")) is False
    assert sgld._use_one_hot_scatter(torch.device("cuda")) is True
    monkeypatch.setattr(sgld, "_use_one_hot_scatter", lambda device: True)
    model, states, x, y = quad_setup(S=2)
    cfg = SamplerConfig(**CFG)
    out = sample_chains_many(model, states, x, y, centred_mse, cfg, seeds=[4, 9], device="cpu")
    want, _, _ = ref_run(
        lambda w, a, b: quad_loss64(w, a, b, 3), states, x, y, cfg, [4, 9], ["W", "V"]
    )
    for s in range(2):
        np.testing.assert_allclose(out[s].trace, want[s], rtol=2e-5, atol=1e-7)


def test_float64_model_runs_in_float64_without_resizing_buffers():
    import warnings

    model, states, x, y = quad_setup(S=2)
    model = model.double()
    states = [{k: v.double() for k, v in st.items()} for st in states]
    cfg = SamplerConfig(**CFG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = on_cpu(model, states, x, y, centred_mse, cfg, [4, 9], _overlap_noise=False)
    shapes = {k: tuple(states[0][k].shape) for k in ("W", "V")}
    gb, gn = ref_generators(4)
    # float64 noise: the reference draws it in float64 too
    want = []
    for s, seed in enumerate([4, 9]):
        gb, gnz = ref_generators(seed)
        sched = ref_schedule(9, 3, 6, gb)
        c64 = states[s]
        w = [dict(c64) for _ in range(2)]
        tr = np.zeros((2, 6))
        for t in range(6):
            grads = []
            for c in range(2):
                wc = {k: v.clone().requires_grad_(True) for k, v in w[c].items()}
                loss = quad_loss64(wc, x[sched[t]], y[sched[t]], 3)
                tr[c, t] = loss.item()
                grads.append(
                    dict(zip(wc, torch.autograd.grad(loss, list(wc.values())), strict=True))
                )
            xi = {
                k: torch.empty((2, *shapes[k]), dtype=torch.float64).normal_(generator=gnz)
                for k in ("W", "V")
            }
            for c in range(2):
                w[c] = {
                    k: w[c][k]
                    - 0.005 * (3.0 * grads[c][k] + 2.0 * (w[c][k] - c64[k]) + 0.1 * w[c][k])
                    + 0.1 * xi[k][c]
                    for k in ("W", "V")
                }
        want.append(tr)
    for s in range(2):
        np.testing.assert_allclose(out[s].trace, want[s], rtol=1e-12, atol=1e-14)


def test_noise_thread_runs_when_asked_and_its_failure_is_reported(monkeypatch):
    import os
    import threading

    model, states, x, y = quad_setup(S=1)
    cfg = SamplerConfig(**CFG)
    seen = []

    def on_step(t, params):
        seen.append(any(th.name == "sgld-noise" for th in threading.enumerate()))

    on_cpu(model, states, x, y, centred_mse, cfg, [0], _overlap_noise=True, _on_step=on_step)
    assert seen[0] and len(seen) == 6  # the worker is alive at the first step
    seen.clear()
    on_cpu(model, states, x, y, centred_mse, cfg, [0], _overlap_noise=False, _on_step=on_step)
    assert not any(seen)
    # "auto" (the default): on for CPU when torch leaves a usable core idle
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = torch.get_num_threads()
    torch.set_num_threads(usable)  # no idle core: "auto" is off
    try:
        seen.clear()
        on_cpu(model, states, x, y, centred_mse, cfg, [0], _on_step=on_step)
        assert not any(seen)
    finally:
        torch.set_num_threads(threads)
    expected = torch.get_num_threads() < usable
    for run in (
        lambda: on_cpu(model, states, x, y, centred_mse, cfg, [0], _on_step=on_step),
        lambda: loss_traces_many(
            model, states, x, y, centred_mse, cfg, seeds=[0], device="cpu", on_step=on_step
        ),
    ):
        seen.clear()
        run()
        assert seen[0] == expected and (expected or not any(seen))
    # sample_loss_traces: default "auto" too (a thread iff expected); its result is the same
    seen.clear()
    a = loss_traces(model, x, y, centred_mse, cfg, seed=0, device="cpu")
    b = loss_traces(model, x, y, centred_mse, cfg, seed=0, device="cpu", overlap_noise=not expected)
    np.testing.assert_array_equal(a[0], b[0])

    def boom(self, buf):
        raise OSError("no noise")

    monkeypatch.setattr(sgld._Sampler, "fill_noise", boom)
    with pytest.raises(RuntimeError, match=r"^SGLD noise thread failed$") as err:
        on_cpu(model, states, x, y, centred_mse, cfg, [0], _overlap_noise=True)
    assert isinstance(err.value.__cause__, OSError)


def test_auto_path_never_takes_the_generic_step_for_the_plain_net(monkeypatch):
    def no(self, t, loss_out):
        raise AssertionError("generic step taken")

    monkeypatch.setattr(sgld._Sampler, "generic_step", no)
    model, states, x, y = quad_setup(S=1)
    cfg = SamplerConfig(**CFG)
    [(trace, _)] = loss_traces_many(model, states, x, y, centred_mse, cfg, seeds=[0], device="cpu")
    assert trace.shape == (2, 6)


def test_stop_sees_each_checkpoints_own_diagnostics():
    model, states, x, y = quad_setup(S=2)
    cfg = SamplerConfig(**{**CFG, "num_burnin_steps": 2, "num_draws": 2})
    got = {}

    def stop(s, trace, diag):
        got[s] = (trace.copy(), {k: np.array(v) for k, v in diag.items()})
        return True

    out = on_cpu(
        model, states, x, y, centred_mse, cfg, [1, 2], max_steps=9, stop=stop, diag_every=2
    )
    for s in range(2):
        trace, diag = got[s]
        np.testing.assert_array_equal(trace, out[s].trace)
        np.testing.assert_array_equal(diag["steps"], out[s].diag_steps)
        assert (
            diag["init_loss"] == out[s].init_loss
        )  # the stop rule's L(w*) (grokking_llc.sampling.llc)
        for k in ("log_accept", "distance", "grad_norm", "loc_norm", "distance_trace"):
            np.testing.assert_array_equal(diag[k], getattr(out[s], k), err_msg=k)


def test_gauss_newton_diagonal_defaults_are_64_probes_from_seed_0():
    lin = nn.Linear(3, 1, bias=False)
    x = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, 1.0], [2.0, 1.0, -1.0]])
    y = torch.zeros(3, 1)
    params = {"weight": torch.tensor([[0.2, 0.1, -0.4]])}

    def loss(f, t):  # Hessian in f: the identity
        return 0.5 * ((f - t) ** 2).sum()

    got = gauss_newton_diagonal(lin, params, x, y, loss)
    gen = torch.Generator().manual_seed(0)
    acc = torch.zeros(3)
    for _ in range(64):
        u = torch.randint(0, 2, (3, 1), generator=gen).float() * 2 - 1
        acc += (x.T @ u)[:, 0] ** 2  # (J^T u) * (J^T H u) with J = x, H = I
    np.testing.assert_allclose(got["weight"][0].numpy(), (acc / 64).numpy(), rtol=1e-5)


def test_quadratic_float64_gradient_equals_autograd_of_the_centred_loss(split):
    """The hand-written float64 loss and gradient of the diagnostic steps against torch.func's
    vmap(grad) of model + centred_mse (the generic path, an independent computation)."""
    x, y = split_tensors(split, "train", "cpu")
    model = build_model("quadratic", 7, width=5, generator=torch.Generator().manual_seed(3))
    st = {k: v.detach() for k, v in model.named_parameters()}
    cfg = SamplerConfig(lr=1e-3, num_chains=3, num_burnin_steps=2, num_draws=3, batch_size=8)
    smp = sgld._Sampler(model, [st, st], x, y, centred_mse, cfg, [1, 2], torch.device("cpu"),
                        "reshuffle", 5, 1)  # fmt: skip
    smp.flat.add_(torch.randn(smp.flat.shape, generator=torch.Generator().manual_seed(0)) * 0.3)
    assert smp._quadratic64
    for t in range(4):
        w, loss, grad = smp._evaluate64(t)
        smp._quadratic64 = False
        w_ref, loss_ref, grad_ref = smp._evaluate64(t)
        smp._quadratic64 = True
        torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=1e-14)
        for name in ("W", "V"):
            assert grad[name].dtype == torch.float64
            torch.testing.assert_close(grad[name], grad_ref[name], rtol=1e-10, atol=1e-14)
            torch.testing.assert_close(w[name], w_ref[name], rtol=0, atol=0)
        assert grad["W"].abs().max() > 1e-3 and grad["V"].abs().max() > 1e-3


def test_distance_trace_is_the_norm_of_the_displacement(split):
    x, y = split_tensors(split, "train", "cpu")
    model = build_model("quadratic", 7, width=5, generator=torch.Generator().manual_seed(3))
    st = {k: v.detach() for k, v in model.named_parameters()}
    out = sgld.sample_chains_many(model, [st, st], x, y, centred_mse,
                                  SamplerConfig(lr=1e-2, num_chains=2, num_burnin_steps=1,
                                                num_draws=4, batch_size=8),
                                  seeds=[0, 1], device="cpu", diag_every=2,
                                  _on_step=None)  # fmt: skip
    assert out[0].distance_trace[:, 0] == pytest.approx([0.0, 0.0])  # before the first step
    assert (out[0].distance_trace[:, 1:] > 0).all()
    # an independent recomputation: rerun and record |w - w*| with on_step
    seen = []
    center = torch.cat([st[n].reshape(1, -1) for n in ("W", "V")], dim=1).double()

    def record(t, params):
        w = torch.cat([params[n][:2].reshape(2, -1) for n in ("W", "V")], dim=1).double()
        seen.append((w - center).norm(dim=1).numpy())

    sgld.sample_chains_many(model, [st, st], x, y, centred_mse,
                            SamplerConfig(lr=1e-2, num_chains=2, num_burnin_steps=1,
                                          num_draws=4, batch_size=8),
                            seeds=[0, 1], device="cpu", diag_every=2,
                            _on_step=record)  # fmt: skip
    # distance_trace[:, t] is taken before step t, i.e. after step t - 1
    np.testing.assert_allclose(out[0].distance_trace[:, 1:], np.array(seen[:-1]).T, rtol=1e-5)
