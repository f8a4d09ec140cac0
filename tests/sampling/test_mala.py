"""The Metropolis-adjusted reference sampler (grokking_llc.sampling.mala; SPEC sections 4 and 10).

Exactness is tested where the answer is known at finite nbeta and gamma, not only in the limit:
the regular model's localised posterior is Gaussian (closed form, with and without weight
decay), and the rank-0 one-unit reduced-rank regression (a singular "cross" ``|a|^2 |b|^2 / 2``)
has a one-dimensional quadrature. The MH ratio is compared with the two Gaussian proposal
densities computed directly, transition by transition, from the documented random streams.
Known answers in the limit (q/2, Aoyagi's lambdas) are in tests/test_known_answers.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from known_answers import (
    cross_expected_llc,
    reduced_rank_problem,
    regular_expected_llc,
    regular_problem,
    rescale,
)
from torch.func import functional_call

from grokking_llc.core.model import QuadraticNet, centred_mse
from grokking_llc.sampling import mala
from grokking_llc.sampling.llc import LLCResult

torch.set_num_threads(1)

FAST = dict(num_chains=32, seed=0)


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()


def _potential(problem, nbeta, gamma, wd):
    """U(w) and grad U(w) written independently of grokking_llc.sampling.mala (SPEC section 4)."""
    model = problem.model
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    buffers = dict(model.named_buffers())
    center = _flat(model)

    def loss(theta):
        pieces = [t.view(s) for t, s in zip(theta.split(sizes), shapes, strict=True)]
        params = dict(zip(names, pieces, strict=True))
        return problem.loss_fn(functional_call(model, (params, buffers), (problem.x,)), problem.y)

    def u_and_grad(theta):
        theta = theta.detach().requires_grad_(True)
        u = (
            nbeta * loss(theta)
            + 0.5 * gamma * (theta - center).square().sum()
            + 0.5 * wd * theta.square().sum()
        )
        (g,) = torch.autograd.grad(u, theta)
        return float(u.detach()), g, float(loss(theta.detach()))

    return u_and_grad


@pytest.mark.parametrize(("precond", "eps"), [(None, 0.0003), ("gn_diag", 0.002)])
def test_mh_ratio_is_that_of_the_proposal_densities(precond, eps):
    """Three transitions of 8 chains, replayed from the documented streams (SeedSequence ->
    noise generator, acceptance generator): each proposal, log MH ratio (against
    ``-U(w') + U(w) + log q(w | w') - log q(w' | w)`` with the Gaussian densities of the
    proposal ``N(w - (eps/2) G grad U(w), eps G)`` evaluated directly), accept decision and
    recorded loss are those of the sampler. The step is large enough that both branches occur."""
    problem = reduced_rank_problem(3, 2, 2, 1)
    nbeta, gamma, wd, C, seed = 1000.0, 1.0, 0.5, 8, 3
    s = mala.sample_mala(
        problem.model, problem.x, problem.y, problem.loss_fn, nbeta=nbeta, localization=gamma,
        weight_decay=wd, num_warmup=0, num_draws=3, step_size=eps, seed=seed, num_chains=C,
        precond=precond,
    )  # fmt: skip
    G = torch.as_tensor(s.precond)
    if precond is None:
        assert torch.equal(G, torch.ones(problem.d, dtype=torch.float64))
    else:
        assert (G > 0).all() and G.std() > 0
    noise_seed, accept_seed = np.random.SeedSequence(seed).generate_state(4, dtype=np.uint64)[:2]
    gen_noise = torch.Generator().manual_seed(int(noise_seed))
    gen_accept = torch.Generator().manual_seed(int(accept_seed))
    u_and_grad = _potential(problem, nbeta, gamma, wd)
    state = [_flat(problem.model).clone() for _ in range(C)]
    both = set()
    for t in range(3):
        xi = torch.randn((C, problem.d), generator=gen_noise, dtype=torch.float64)
        draw = torch.rand(C, generator=gen_accept, dtype=torch.float64)
        for c in range(C):
            w = state[c]
            u0, g0, _ = u_and_grad(w)
            w1 = w - 0.5 * eps * G * g0 + (eps * G).sqrt() * xi[c]
            u1, g1, loss1 = u_and_grad(w1)
            scale = (eps * G).sqrt()
            log_fwd = torch.distributions.Normal(w - 0.5 * eps * G * g0, scale).log_prob(w1).sum()
            log_rev = torch.distributions.Normal(w1 - 0.5 * eps * G * g1, scale).log_prob(w).sum()
            direct = u0 - u1 + float(log_rev - log_fwd)
            assert s.log_accept[c, t] == pytest.approx(direct, rel=1e-7, abs=1e-7)
            take = bool(math.log(float(draw[c])) < s.log_accept[c, t])
            assert bool(s.accepted[c, t]) == take
            both.add(take)
            if take:
                state[c] = w1
                assert s.trace[c, t] == pytest.approx(loss1, rel=1e-10, abs=1e-14)
            dist = float((state[c] - _flat(problem.model)).norm())
            assert s.distance[c, t] == pytest.approx(dist, rel=1e-10, abs=1e-14)
    assert both == {True, False}
    assert np.all(s.step_sizes == eps) and s.step_size == eps


def test_gaussian_posterior_value_exact_at_strong_localisation():
    """Regular model, nbeta 100 and gamma 100 (so gamma / nbeta h ~ 1, the value far from q/2):
    the posterior is Gaussian and ``nbeta (E[L] - L(w*))`` is known in closed form, with and
    without weight decay (which also moves the posterior's mean); MALA, preconditioned or not,
    agrees within 4 standard errors and 3%."""
    problem = regular_problem(4, 1)
    for wd, precond in [(0.0, "gn_diag"), (5.0, "gn_diag"), (5.0, None)]:
        exact = regular_expected_llc(problem, 100.0, 100.0, wd)
        assert abs(exact - problem.llc) > 0.4  # far from the limit q/2 = 2
        res = mala.estimate_llc_mala(
            problem.model, problem.x, problem.y, problem.loss_fn, nbeta=100.0,
            localization=100.0, weight_decay=wd, num_warmup=300, num_draws=1000,
            precond=precond, **FAST,
        )  # fmt: skip
        assert abs(res.llc_mean - exact) < 4 * res.llc_se, (wd, precond)
        assert res.llc_mean == pytest.approx(exact, rel=0.03)


def test_singular_cross_value_exact_at_finite_temperature():
    """Reduced-rank regression M=3, N=2, H=1, r=0: ``L = |a|^2 |b|^2 / 2`` at w* = 0, a funnel-
    shaped singular posterior whose ``nbeta E[L]`` at nbeta 100, gamma 1 is a 1-d quadrature
    (0.939, below lambda = 1): MALA agrees within 4 SE and 3%."""
    problem = reduced_rank_problem(3, 2, 1, 0)
    assert problem.llc == 1.0
    exact = cross_expected_llc(3, 2, 100.0, 1.0)
    res = mala.estimate_llc_mala(
        problem.model, problem.x, problem.y, problem.loss_fn, nbeta=100.0, localization=1.0,
        num_warmup=500, num_draws=2000, **FAST,
    )  # fmt: skip
    assert abs(res.llc_mean - exact) < 4 * res.llc_se
    assert res.llc_mean == pytest.approx(exact, rel=0.03)
    assert res.r_hat < 1.1


@pytest.mark.parametrize("target", [0.4, 0.8])
def test_adaptation_reaches_its_target_then_freezes(target):
    """On the regular model (stationary from the start) the draws' acceptance rate is the
    target within 0.05; eps changes during the warm-up and is constant over the draws."""
    problem = regular_problem(4, 1)
    s = mala.sample_mala(
        problem.model, problem.x, problem.y, problem.loss_fn, nbeta=1000.0, localization=1.0,
        num_warmup=300, num_draws=600, target_accept=target, **FAST,
    )  # fmt: skip
    assert s.acceptance_rate == pytest.approx(target, abs=0.05)
    assert s.mean_accept_prob == pytest.approx(target, abs=0.05)
    assert np.all(s.step_sizes[300:] == s.step_size)
    assert len(np.unique(s.step_sizes[:300])) > 100


def test_same_seed_same_numbers_other_seed_others():
    problem = reduced_rank_problem(3, 2, 2, 1)
    kw = dict(nbeta=1000.0, localization=1.0, num_warmup=50, num_draws=50, num_chains=4)
    args = (problem.model, problem.x, problem.y, problem.loss_fn)
    a = mala.sample_mala(*args, seed=7, **kw)
    b = mala.sample_mala(*args, seed=7, **kw)
    c = mala.sample_mala(*args, seed=8, **kw)
    for key in ("trace", "log_accept", "accepted", "distance", "step_sizes", "precond"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert not np.array_equal(a.trace, c.trace)
    assert a.step_size == b.step_size


def test_estimate_is_invariant_under_function_preserving_rescaling():
    """Reduced-rank regression (3, 2, 2, 1) at nbeta 1000, gamma 1 and the regular model (its
    weight and scale buffer times c): the estimate after rescaling by c moves by less than 5%
    (the gn_diag preconditioner follows the parameter scale; the fixed gamma is the only
    thing that changes in the rescaled coordinates)."""
    for problem, cs, steps in [
        (reduced_rank_problem(3, 2, 2, 1), (0.5, 2.0), (500, 1500)),
        (regular_problem(4, 1), (3.0,), (300, 1000)),
    ]:
        kw = dict(nbeta=1000.0, localization=1.0, num_warmup=steps[0], num_draws=steps[1])
        base = mala.estimate_llc_mala(
            problem.model, problem.x, problem.y, problem.loss_fn, **kw, **FAST
        )
        for c in cs:
            moved = rescale(problem.model, c)
            torch.testing.assert_close(moved(problem.x), problem.model(problem.x))
            res = mala.estimate_llc_mala(moved, problem.x, problem.y, problem.loss_fn, **kw, **FAST)
            assert res.llc_mean == pytest.approx(base.llc_mean, rel=0.05), (c, problem.llc)
            assert res.llc_mean == pytest.approx(problem.llc, rel=0.05)


def test_result_is_an_llc_result_with_mala_columns():
    """The estimate is llc_from_traces' on the MALA trace: nbeta * (mean of the draws - L(w*)),
    burn-in = warm-up, sampler_kind "mala", the step check passed although the acceptance is
    ~0.6 (an exact chain: ``exact=True``), the checks at w* (point_checks: gradient ~0, bound
    d/2), acceptance and step size in the diagnostics; a regular model's estimate (q = 40: its
    drift resolved to ~2.6% of the estimate by 4 x 1,200 draws) is valid."""
    problem = regular_problem(10, 4)
    res = mala.estimate_llc_mala(
        problem.model, problem.x, problem.y, problem.loss_fn, nbeta=1000.0, localization=1.0,
        num_warmup=200, num_draws=1200, num_chains=4, seed=1,
    )  # fmt: skip
    assert isinstance(res, LLCResult)
    assert res.sampler_kind == "mala" and res.burn_in == 200 and res.num_steps == 1400
    draws = res.loss_trace[:, 200:]
    per_chain = 1000.0 * (draws.mean(axis=1) - res.init_loss)
    np.testing.assert_allclose(res.llc_per_chain, per_chain)
    assert res.llc_mean == pytest.approx(per_chain.mean())
    with torch.no_grad():
        loss_at_w_star = float(problem.loss_fn(problem.model(problem.x), problem.y))
    assert res.init_loss == pytest.approx(loss_at_w_star)
    assert res.step_ok and res.valid and res.status == "valid", res.invalid_reason
    assert res.llc_bound == problem.d / 2 and res.grad_norm < 1e-8 and res.at_minimum
    assert 0.45 < res.mala_acceptance < 0.75  # below SGLD's 0.9: exact, so not asked
    diag = res.diagnostics
    assert diag["step_size"] > 0 and 0.45 < diag["acceptance_rate"] < 0.75
    assert diag["seconds_per_step"] > 0 and len(diag["step_sizes"]) == 1400
    assert res.summary()["sampler_kind"] == "mala"


def test_any_module_float32_and_integer_inputs():
    """A tiny QuadraticNet with integer pair inputs and the centred loss (SPEC section 2), in
    its own float32: runs, leaves the model unchanged, gives a finite estimate; float64 on
    request."""
    net = QuadraticNet(5, 4, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.tensor([[a, b] for a in range(5) for b in range(5)])
    y = (x[:, 0] + x[:, 1]) % 5
    s = mala.sample_mala(net, x, y, centred_mse, nbeta=100.0, localization=10.0,
                         num_warmup=20, num_draws=20, seed=0)  # fmt: skip
    assert np.isfinite(s.trace).all() and s.trace.shape == (4, 40)
    s64 = mala.sample_mala(net, x, y, centred_mse, nbeta=100.0, localization=10.0,
                           num_warmup=20, num_draws=20, seed=0, dtype=torch.float64)  # fmt: skip
    assert np.isfinite(s64.trace).all()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]) and v.dtype == torch.float32


def test_gn_diag_preconditioner_formula():
    """G = 1 / (diag + damping * mean(diag)) per tensor; a tensor the loss does not see at w*
    (all-zero diagonal) gets G = 1."""
    from grokking_llc.sampling.sgld import gauss_newton_diagonal

    problem = reduced_rank_problem(3, 2, 2, 1)
    params = {n: p.detach() for n, p in problem.model.named_parameters()}
    diag = gauss_newton_diagonal(problem.model, params, problem.x, problem.y, problem.loss_fn,
                                 num_probes=16, seed=5)  # fmt: skip
    G = mala.gn_diag_preconditioner(problem.model, problem.x, problem.y, problem.loss_fn,
                                    damping=0.5, num_probes=16, seed=5)  # fmt: skip
    for name, h in diag.items():
        torch.testing.assert_close(1.0 / G[name] - h, torch.full_like(h, 0.5 * float(h.mean())))
    zero = reduced_rank_problem(3, 2, 1, 0)  # w* = 0: no gradient reaches either layer
    G0 = mala.gn_diag_preconditioner(zero.model, zero.x, zero.y, zero.loss_fn)
    assert all(torch.equal(g, torch.ones_like(g)) for g in G0.values())


def test_bad_input_is_refused_with_the_key():
    problem = regular_problem(2, 1)
    args = (problem.model, problem.x, problem.y, problem.loss_fn)
    kw = dict(nbeta=10.0, localization=1.0, num_warmup=5, num_draws=5, seed=0)
    with pytest.raises(ValueError, match="precond"):
        mala.sample_mala(*args, **{**kw, "precond": "adam"})
    with pytest.raises(ValueError, match="step_size"):
        mala.sample_mala(*args, **{**kw, "num_warmup": 0})
    with pytest.raises(ValueError, match="target_accept"):
        mala.sample_mala(*args, **{**kw, "target_accept": 1.0})
    with pytest.raises(ValueError, match="seed"):
        mala.sample_mala(*args, **{**kw, "seed": -1})
    with pytest.raises(ValueError, match="gn_damping"):
        mala.sample_mala(*args, **{**kw, "gn_damping": 0.0})
    with pytest.raises(ValueError, match="nbeta"):
        mala.sample_mala(*args, **{**kw, "nbeta": 0.0})
