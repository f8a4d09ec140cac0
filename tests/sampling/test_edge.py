"""grokking_llc.sampling.edge: the stability edge of a sampler at a state (SPEC section 10) --
the top curvature and each kind's preconditioner against dense computations by hand, and the
step at a fraction of the edge."""

from __future__ import annotations

import pytest
import torch

from grokking_llc.core.settings import SamplerConfig
from grokking_llc.sampling import edge

from .helpers import half_mse, linear_problem


def test_top_curvature_is_the_largest_eigenvalue_of_a_known_hessian():
    model, x, y = linear_problem()
    params = {"weight": torch.ones(1, 5)}
    hess = x.T @ x / len(x)  # Hessian of half_mse in the weights
    want = float(torch.linalg.eigvalsh(hess).max())
    assert edge.top_curvature(model, params, x, y, half_mse) == pytest.approx(want, rel=1e-3)
    g = torch.linspace(0.5, 2.0, 5)
    scaled = g.sqrt()[:, None] * hess * g.sqrt()[None, :]
    got = edge.top_curvature(model, params, x, y, half_mse, precond={"weight": g.reshape(1, 5)})
    assert got == pytest.approx(float(torch.linalg.eigvalsh(scaled).max()), rel=1e-3)
    # |eigenvalue|: the same for the negated loss; seeded; 0 without curvature
    neg = edge.top_curvature(model, params, x, y, lambda p, t: -half_mse(p, t))
    assert neg == pytest.approx(want, rel=1e-3)
    assert edge.top_curvature(model, params, x, y, half_mse, iters=2, seed=4) == (
        edge.top_curvature(model, params, x, y, half_mse, iters=2, seed=4))  # fmt: skip
    assert edge.top_curvature(model, params, x, y, lambda p, t: (p * 0).sum()) == 0.0


def test_preconditioner_of_each_kind_by_hand():
    from grokking_llc.sampling.sgld import gauss_newton_diagonal

    model, x, y = linear_problem(q=3, n=6)
    params = {"weight": torch.ones(1, 3)}
    assert edge.preconditioner(model, params, x, y, half_mse, SamplerConfig(), 3, 0) is None
    gopts = SamplerConfig(kind="gn_diag", gn_damping=1.0, gn_probes=3)
    h = gauss_newton_diagonal(model, params, x, y, half_mse, num_probes=3, seed=0)["weight"]
    G = edge.preconditioner(model, params, x, y, half_mse, gopts, 3, 5)
    torch.testing.assert_close(G["weight"], 1.0 / (h + float(h.mean())))  # damping 1
    G0 = edge.preconditioner(model, params, x, y, lambda p, t: (p * 0).sum(), gopts, 3, 5)
    assert torch.equal(G0["weight"], torch.ones(1, 3))  # no curvature: 1 / (0 + 1)
    # rmsprop with full batches: every minibatch gradient is the full one, G = 1/(|g| + delta)
    ropts = SamplerConfig(kind="rmsprop", rmsprop_eps=0.5)
    full = torch.func.grad(lambda p: half_mse(torch.func.functional_call(model, p, (x,)), y))(
        params)["weight"]  # fmt: skip
    G = edge.preconditioner(model, params, x, y, half_mse, ropts, len(x), 7)
    torch.testing.assert_close(G["weight"], 1.0 / (full.abs() + 0.5), rtol=1e-5, atol=0)


@pytest.mark.parametrize("kind", ["sgld", "gn_diag"])
def test_edge_scale_and_step_against_a_dense_hessian(kind):
    """(lambda, g_max) of a kind at a state: the top eigenvalue of G^(1/2) H G^(1/2) with H the
    dense Hessian (torch.autograd.functional.hessian) and G the kind's preconditioner, and the
    step lr_scaled / (nbeta lambda + gamma g_max) (SPEC section 10)."""
    model, x, y = linear_problem(q=4, n=50)
    params = {"weight": torch.linspace(-1.0, 1.0, 4).reshape(1, 4)}
    cfg = SamplerConfig(kind=kind, batch_size=50, gn_probes=8)

    def loss(w):
        return half_mse(x @ w.reshape(4, 1), y)

    hess = torch.autograd.functional.hessian(loss, params["weight"].reshape(4))
    G = edge.preconditioner(model, params, x, y, half_mse, cfg, 50, 0)
    g = torch.ones(4) if G is None else G["weight"].reshape(4)
    want_lam = float(torch.linalg.eigvalsh(g.sqrt()[:, None] * hess * g.sqrt()[None, :]).max())
    lam, gmax = edge.edge_scale(model, params, x, y, half_mse, cfg)
    assert lam == pytest.approx(want_lam, rel=1e-3)
    assert gmax == pytest.approx(float(g.max()))
    step = edge.step_at_edge(0.1, 200.0, 5.0, lam, gmax)
    assert step == pytest.approx(0.1 / (200.0 * want_lam + 5.0 * float(g.max())), rel=1e-3)
    assert step == float(f"{step:.4g}")  # 4 significant digits, as the calibration writes it
    # a step at the whole edge is ten times that at a tenth of it
    assert edge.step_at_edge(1.0, 200.0, 5.0, lam, gmax) == pytest.approx(10 * step, rel=1e-3)
