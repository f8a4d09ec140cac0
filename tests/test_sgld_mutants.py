"""The fast SGLD sampler (grokking_llc.sgld) against a plain-loop reference written here
(issue 15: tests a mutation run cannot slip past).

The reference re-derives every random number from the module docstring (SeedSequence -> two
generators; minibatches: a fresh randperm per epoch cut into n // m batches; noise: one
``normal_`` per parameter of shape (chains, *shape)), takes gradients with torch autograd in
float64, and applies the SGLD / RMSprop / GN update of SPEC section 4 one chain at a time. The
diagnostics are checked against the MALA acceptance written in its textbook form
(``U(w0) - U(w1) + log q(w0|w1) - log q(w1|w0)``). Tiny models, a few steps: fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from grokking_llc.config import SamplerConfig
from grokking_llc.model import QuadraticNet, centred_mse
from grokking_llc.sgld import (
    GROWTH,
    SamplerOptions,
    batch_schedule,
    gauss_newton_diagonal,
    sample_chains_many,
    sample_loss_traces,
    sample_loss_traces_many,
    split_sampler,
)

# ----------------------------------------------------------------------------- reference


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
    kind="sgld",
    opts=None,
    gn=None,
    steps=None,
    cycle=False,
):
    """Plain-loop SGLD, RMSprop-SGLD or GN-preconditioned SGLD (``gn[s]``: G per parameter):
    (traces (S, C, T), init losses, batches [s][t])."""
    opts = opts or SamplerOptions()
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
                        a = opts.rmsprop_alpha
                        sq_avg[c][k] = a * sq_avg[c][k] + (1 - a) * g * g
                        G = 1.0 / (sq_avg[c][k].sqrt() + opts.rmsprop_eps)
                    else:
                        G = gn[s][k]
                    drift = nbeta * g + gamma * (wk - c64[k]) + wd * wk
                    w[c][k] = wk - 0.5 * eps * G * drift + (eps * G).sqrt() * xk
    return traces, inits, scheds


def quad_setup(p=3, K=2, S=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = QuadraticNet(p, K, generator=gen)
    states = [{k: v.detach().clone() for k, v in model.state_dict().items()}]
    for _ in range(S - 1):
        states.append(
            {k: v + 0.3 * torch.randn(v.shape, generator=gen) for k, v in states[0].items()}
        )
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.reshape(-1), b.reshape(-1)], 1)
    y = (x[:, 0] + x[:, 1]) % p
    return model, states, x, y


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


CFG = dict(
    lr=0.01,
    nbeta=3.0,
    localization=2.0,
    num_chains=2,
    num_burnin_steps=2,
    num_draws=4,
    batch_size=3,
    weight_decay=0.1,
    num_init_loss_batches=2,
)


def collect_params(store):
    def on_step(t, params):
        store.append({k: v.detach().double().clone() for k, v in params.items()})

    return on_step


def ref_run(loss64, states, x, y, cfg, seeds, names, **kw):
    shapes = {k: tuple(states[0][k].shape) for k in names}
    return ref_sgld(loss64, states, x, y, cfg, seeds, names, shapes, **kw)


# ----------------------------------------------------------------------------- tests


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
    out = sample_chains_many(
        model,
        states,
        x,
        y,
        centred_mse,
        cfg,
        seeds=seeds,
        device="cpu",
        on_step=collect_params(store),
        overlap_noise=overlap,
        epoch_mode=epoch_mode,
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
    out = sample_chains_many(
        model, states, x, y, ce, cfg, seeds=[1, 2], device="cpu", overlap_noise=False
    )
    want, inits, _ = ref_run(tiny_loss64, states, x, y, cfg, [1, 2], ["A", "c"])
    for s in range(2):
        np.testing.assert_allclose(out[s].trace, want[s], rtol=2e-5, atol=1e-7)
        assert out[s].init_loss == pytest.approx(inits[s], rel=1e-6)
    # the quadratic model through the generic path: same trace as the quadratic path
    qm, qs, qx, qy = quad_setup(S=1)
    cfgq = SamplerConfig(**CFG)
    a = sample_loss_traces_many(
        qm, qs, qx, qy, centred_mse, cfgq, seeds=[3], device="cpu", path="generic"
    )
    b = sample_loss_traces_many(
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

    [(trace, init)] = sample_loss_traces_many(
        model, states, x, y, mse, cfg, seeds=[7], device="cpu", path="quadratic"
    )
    want, inits, _ = ref_run(mse64, states, x, y, cfg, [7], ["W", "V"])
    np.testing.assert_allclose(trace, want[0], rtol=2e-5, atol=1e-7)
    assert init == pytest.approx(inits[0], rel=1e-6)


def test_default_nbeta_and_no_weight_decay_no_localisation():
    model, states, x, y = quad_setup(S=1)
    cfg = SamplerConfig(**{**CFG, "nbeta": None, "weight_decay": 0.0, "localization": 0.0})
    assert cfg.resolved_nbeta == pytest.approx(3 / math.log(3))
    trace, init = sample_loss_traces(model, x, y, centred_mse, cfg, seed=11, device="cpu")
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
    cfg = SamplerConfig(**{**CFG, "batch_size": 4})
    opts = SamplerOptions(
        kind=kind, rmsprop_alpha=0.9, rmsprop_eps=0.05, gn_damping=0.1, gn_probes=3
    )
    out = sample_chains_many(
        model, states, x, y, ce, cfg, seeds=[1, 2], device="cpu", options=opts, overlap_noise=False
    )
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
    want, _, _ = ref_run(
        tiny_loss64, states, x, y, cfg, [1, 2], ["A", "c"], kind=kind, opts=opts, gn=gn
    )
    for s in range(2):
        np.testing.assert_allclose(out[s].trace, want[s], rtol=5e-5, atol=1e-7)


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
    cfg = SamplerConfig(**{**CFG, "batch_size": 1, "num_init_loss_batches": 1})
    states = [{k: v.detach() for k, v in model.named_parameters()}]
    opts = SamplerOptions(kind="gn_diag", gn_damping=0.5, gn_probes=2)
    [res] = sample_chains_many(model, states, x, y, l2, cfg, seeds=[0], device="cpu", options=opts)
    # exact GN diagonal of a linear model with the square loss on one row: x^2
    h_a = x[0].double() ** 2
    gn = [{"a": 1.0 / (h_a + 0.5 * h_a.mean()), "b": torch.ones(1, dtype=torch.float64)}]

    def loss64(w, xb, yb):
        return l2_64(w, xb, yb) + 0 * w["b"].sum()

    want, _, _ = ref_run(
        loss64, states, x, y, cfg, [0], ["a", "b"], kind="gn_diag", opts=opts, gn=gn
    )
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
    out = sample_chains_many(
        model,
        states,
        x,
        y,
        loss_fn,
        cfg,
        seeds=seeds,
        device="cpu",
        diag_every=3,
        on_step=collect_params(store),
        overlap_noise=False,
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
    cfg = SamplerConfig(**{**CFG, "lr": 0.02, "num_draws": 1, "num_burnin_steps": 1})
    opts = SamplerOptions(kind="rmsprop", rmsprop_alpha=0.5, rmsprop_eps=0.2)
    store = []
    [res] = sample_chains_many(
        model,
        states,
        x,
        y,
        ce,
        cfg,
        seeds=[2],
        device="cpu",
        options=opts,
        diag_every=2,
        on_step=collect_params(store),
        overlap_noise=False,
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

    out = sample_chains_many(
        model,
        states,
        x,
        y,
        centred_mse,
        cfg,
        seeds=[1, 2],
        device="cpu",
        max_steps=13,
        stop=stop,
        diag_every=2,
    )
    # checks at 4, then ceil(4 * 1.5) = 6, 9, then the cap 13
    assert GROWTH == 1.5
    assert [(s, t) for s, t, _ in calls] == [(0, 4), (1, 4), (0, 6), (1, 6), (1, 9)]
    assert calls[0][2] == [
        "distance",
        "distance_trace",
        "grad_norm",
        "loc_norm",
        "log_accept",
        "steps",
    ]
    full = sample_chains_many(
        model,
        states,
        x,
        y,
        centred_mse,
        cfg,
        seeds=[1, 2],
        device="cpu",
        max_steps=13,
        diag_every=2,
    )
    assert out[0].trace.shape == (2, 6) and out[1].trace.shape == (2, 13)
    np.testing.assert_array_equal(out[0].trace, full[0].trace[:, :6])
    np.testing.assert_array_equal(out[1].trace, full[1].trace)
    np.testing.assert_array_equal(out[0].diag_steps, [1, 3, 5])
    np.testing.assert_array_equal(out[0].log_accept, full[0].log_accept[:, :3])
    np.testing.assert_array_equal(out[0].distance_trace, full[0].distance_trace[:, :6])
    # all stop at once: no growth
    calls.clear()
    out = sample_chains_many(
        model,
        states,
        x,
        y,
        centred_mse,
        cfg,
        seeds=[1, 2],
        device="cpu",
        max_steps=13,
        stop=lambda s, t, d: calls.append(s) or True,
    )
    assert calls == [0, 1] and out[0].trace.shape == (2, 4)
    # growth of one step at least; cap equal to the run length: no check at all
    calls.clear()
    one = SamplerConfig(**{**CFG, "num_burnin_steps": 0, "num_draws": 1})
    sample_chains_many(
        model,
        states,
        x,
        y,
        centred_mse,
        one,
        seeds=[1, 2],
        device="cpu",
        max_steps=3,
        stop=lambda s, t, d: calls.append(t.shape[1]) and False,
    )
    assert calls == [1, 1, 2, 2]
    calls.clear()
    sample_chains_many(
        model,
        states,
        x,
        y,
        centred_mse,
        cfg,
        seeds=[1, 2],
        device="cpu",
        max_steps=4,
        stop=lambda s, t, d: calls.append(1),
    )
    assert calls == []


def test_argument_checks_with_their_messages():
    model, states, x, y = quad_setup(S=1)
    cfg = SamplerConfig(**CFG)
    kw = dict(seeds=[0], device="cpu")
    with pytest.raises(ValueError, match=r"^unknown SGLD path 'x'; choose one of \('auto'"):
        sample_chains_many(model, states, x, y, centred_mse, cfg, path="x", **kw)
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
    with pytest.raises(ValueError, match=r"^path='quadratic' needs a grokking_llc\.model\.Qu"):
        sample_chains_many(tiny, tstates, tx, ty, ce, cfg, path="quadratic", **kw)
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
    with pytest.raises(ValueError, match="needs a grokking_llc.model.QuadraticNet"):
        sample_chains_many(
            sub, states, x, y, centred_mse, cfg, seeds=[0], device="cpu", path="quadratic"
        )
    # the subclass runs through the generic path (auto): same numbers as the plain net's
    a = sample_chains_many(sub, states, x, y, centred_mse, cfg, seeds=[0], device="cpu")
    b = sample_chains_many(model, states, x, y, centred_mse, cfg, seeds=[0], device="cpu")
    np.testing.assert_allclose(a[0].trace, b[0].trace, rtol=1e-6)


def test_sampler_options_checks_defaults_and_non_default():
    o = SamplerOptions()
    assert (
        o.kind,
        o.rmsprop_alpha,
        o.rmsprop_eps,
        o.gn_damping,
        o.gn_probes,
        o.burn_in,
        o.max_steps,
        o.target_ess,
    ) == ("sgld", 0.99, 0.1, 0.01, 64, "auto", None, 400.0)
    assert o.non_default() == {}
    assert SamplerOptions(kind="rmsprop", target_ess=10.0).non_default() == {
        "kind": "rmsprop",
        "target_ess": 10.0,
    }
    ok = [
        dict(kind="gn_diag"),
        dict(rmsprop_alpha=1e-9),
        dict(rmsprop_alpha=1 - 1e-9),
        dict(rmsprop_eps=1e-12),
        dict(gn_probes=1),
        dict(max_steps=1),
        dict(burn_in="fixed"),
        dict(target_ess=1e-9),
        dict(gn_damping=1e-12),
    ]
    for kw in ok:
        SamplerOptions(**kw)
    bad = [
        (dict(kind="x"), r"^sampler kind 'x': choose one of \('sgld', 'rmsprop', 'gn_diag'\)$"),
        (dict(burn_in="x"), r"^burn_in 'x': choose one of \('auto', 'fixed'\)$"),
        (dict(rmsprop_alpha=0.0), r"^rmsprop_alpha must lie in \(0, 1\) and rmsprop_eps be > 0$"),
        (dict(rmsprop_alpha=1.0), "rmsprop_alpha must lie"),
        (dict(rmsprop_eps=0.0), "rmsprop_alpha must lie"),
        (dict(gn_damping=0.0), r"^gn_damping must be > 0 and gn_probes >= 1$"),
        (dict(gn_probes=0), r"^gn_damping must be > 0 and gn_probes >= 1$"),
        (dict(max_steps=0), r"^max_steps must be >= 1 or null, got 0$"),
        (dict(target_ess=0.0), r"^target_ess must be > 0, got 0.0$"),
    ]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            SamplerOptions(**kw)


def test_split_sampler_routes_the_keys():
    cfg, opts = split_sampler({**CFG, "kind": "rmsprop", "rmsprop_alpha": 0.5, "max_steps": 9})
    assert cfg.lr == 0.01 and cfg.batch_size == 3
    assert (opts.kind, opts.rmsprop_alpha, opts.max_steps) == ("rmsprop", 0.5, 9)
    assert cfg.kind == "rmsprop" and cfg.max_steps == 9  # SamplerConfig also holds these
    sc = SamplerConfig(**{**CFG, "kind": "gn_diag", "target_ess": 7.0, "burn_in": "fixed"})
    cfg2, opts2 = split_sampler(sc)
    assert cfg2 is sc
    assert (opts2.kind, opts2.target_ess, opts2.burn_in) == ("gn_diag", 7.0, "fixed")
    assert opts2.rmsprop_alpha == 0.99
    with pytest.raises((ValueError, TypeError)):
        split_sampler({**CFG, "not_a_key": 1})


# ----------------------------------------------------------------------------- more paths


def test_one_hot_scatter_path_equals_the_reference(monkeypatch):
    from grokking_llc import sgld

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
        out = sample_chains_many(
            model, states, x, y, centred_mse, cfg, seeds=[4, 9], device="cpu", overlap_noise=False
        )
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

    from grokking_llc import sgld

    model, states, x, y = quad_setup(S=1)
    cfg = SamplerConfig(**CFG)
    seen = []

    def on_step(t, params):
        seen.append(any(th.name == "sgld-noise" for th in threading.enumerate()))

    sample_chains_many(
        model,
        states,
        x,
        y,
        centred_mse,
        cfg,
        seeds=[0],
        device="cpu",
        overlap_noise=True,
        on_step=on_step,
    )
    assert seen[0] and len(seen) == 6  # the worker is alive at the first step
    seen.clear()
    sample_chains_many(
        model,
        states,
        x,
        y,
        centred_mse,
        cfg,
        seeds=[0],
        device="cpu",
        overlap_noise=False,
        on_step=on_step,
    )
    assert not any(seen)
    # "auto" (the default): on for CPU when torch leaves a usable core idle
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = torch.get_num_threads()
    torch.set_num_threads(usable)  # no idle core: "auto" is off
    try:
        seen.clear()
        sample_chains_many(
            model, states, x, y, centred_mse, cfg, seeds=[0], device="cpu", on_step=on_step
        )
        assert not any(seen)
    finally:
        torch.set_num_threads(threads)
    expected = torch.get_num_threads() < usable
    for run in (
        lambda: sample_chains_many(
            model, states, x, y, centred_mse, cfg, seeds=[0], device="cpu", on_step=on_step
        ),
        lambda: sample_loss_traces_many(
            model, states, x, y, centred_mse, cfg, seeds=[0], device="cpu", on_step=on_step
        ),
    ):
        seen.clear()
        run()
        assert seen[0] == expected and (expected or not any(seen))
    # sample_loss_traces: default "auto" too (a thread iff expected); its result is the same
    seen.clear()
    a = sample_loss_traces(model, x, y, centred_mse, cfg, seed=0, device="cpu")
    b = sample_loss_traces(
        model, x, y, centred_mse, cfg, seed=0, device="cpu", overlap_noise=not expected
    )
    np.testing.assert_array_equal(a[0], b[0])

    def boom(self, buf):
        raise OSError("no noise")

    monkeypatch.setattr(sgld._Sampler, "fill_noise", boom)
    with pytest.raises(RuntimeError, match=r"^SGLD noise thread failed$") as err:
        sample_chains_many(
            model, states, x, y, centred_mse, cfg, seeds=[0], device="cpu", overlap_noise=True
        )
    assert isinstance(err.value.__cause__, OSError)


def test_auto_path_never_takes_the_generic_step_for_the_plain_net(monkeypatch):
    from grokking_llc import sgld

    def no(self, t, loss_out):
        raise AssertionError("generic step taken")

    monkeypatch.setattr(sgld._Sampler, "generic_step", no)
    model, states, x, y = quad_setup(S=1)
    cfg = SamplerConfig(**CFG)
    [(trace, _)] = sample_loss_traces_many(
        model, states, x, y, centred_mse, cfg, seeds=[0], device="cpu"
    )
    assert trace.shape == (2, 6)


def test_stop_sees_each_checkpoints_own_diagnostics():
    model, states, x, y = quad_setup(S=2)
    cfg = SamplerConfig(**{**CFG, "num_burnin_steps": 2, "num_draws": 2})
    got = {}

    def stop(s, trace, diag):
        got[s] = (trace.copy(), {k: np.array(v) for k, v in diag.items()})
        return True

    out = sample_chains_many(
        model,
        states,
        x,
        y,
        centred_mse,
        cfg,
        seeds=[1, 2],
        device="cpu",
        max_steps=9,
        stop=stop,
        diag_every=2,
    )
    for s in range(2):
        trace, diag = got[s]
        np.testing.assert_array_equal(trace, out[s].trace)
        np.testing.assert_array_equal(diag["steps"], out[s].diag_steps)
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
