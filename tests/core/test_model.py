import math

import pytest
import torch

from grokking_llc.core import model as model_module
from grokking_llc.core.model import (
    QuadraticNet,
    accuracy,
    build_model,
    centred_mse,
    cross_entropy,
    get_loss,
    one_hot_target,
    register_model,
)


def _dense_forward(net: QuadraticNet, x: torch.Tensor) -> torch.Tensor:
    """Reference: X W with X the dense one-hot [e_a ; e_b] matrix (SPEC section 2)."""
    p = net.p
    X = torch.zeros(len(x), 2 * p, dtype=net.W.dtype)
    X[torch.arange(len(x)), x[:, 0]] = 1
    X[torch.arange(len(x)), p + x[:, 1]] = 1
    return (X @ net.W) ** 2 @ net.V


def test_gather_forward_equals_dense_one_hot():
    net = QuadraticNet(7, 12, generator=torch.Generator().manual_seed(0))
    x = torch.randint(0, 7, (30, 2), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(net(x), _dense_forward(net, x))


def test_quadratic_form_view():
    """f_k(x) = x^T Q_k x with Q_k = sum_j V[j,k] w_j w_j^T (SPEC section 2)."""
    net = QuadraticNet(5, 6, generator=torch.Generator().manual_seed(2)).double()
    x = torch.tensor([[1, 3]])
    e = torch.zeros(10, dtype=torch.float64)
    e[1], e[5 + 3] = 1, 1
    W, V = net.W.detach(), net.V.detach()
    f = torch.stack([e @ (W @ torch.diag(V[:, k]) @ W.T) @ e for k in range(5)])
    torch.testing.assert_close(net(x)[0].detach(), f)


def test_init_matches_nn_linear_bounds_and_is_seeded():
    p, K = 11, 64
    net = QuadraticNet(p, K, generator=torch.Generator().manual_seed(0))
    assert net.W.abs().max() <= (2 * p) ** -0.5 and net.V.abs().max() <= K**-0.5
    again = QuadraticNet(p, K, generator=torch.Generator().manual_seed(0))
    assert torch.equal(net.W, again.W) and torch.equal(net.V, again.V)


def test_centred_mse_by_hand():
    # n=2, p=2. Y = I, Yhat = [[1, 0], [0, 0]] -> R = Y - Yhat = [[0, 0], [0, 1]]
    # column means (0, 0.5) -> P R = [[0, -0.5], [0, 0.5]]; ||.||^2 = 0.5; / (2n) = 0.125
    pred = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert centred_mse(pred, torch.tensor([0, 1])).item() == pytest.approx(0.125)
    assert centred_mse(pred, torch.eye(2)).item() == pytest.approx(0.125)


def test_centred_mse_ignores_per_column_offsets():
    """P kills a constant added to every row of an output column."""
    g = torch.Generator().manual_seed(0)
    pred, y = torch.randn(9, 4, generator=g), torch.randint(0, 4, (9,), generator=g)
    shift = torch.randn(1, 4, generator=g)
    torch.testing.assert_close(centred_mse(pred + shift, y), centred_mse(pred, y))


def test_gradients_match_finite_differences():
    net = QuadraticNet(5, 4, generator=torch.Generator().manual_seed(3)).double()
    x = torch.tensor([[0, 1], [2, 3], [4, 4], [1, 0], [3, 2]])
    y = (x[:, 0] + x[:, 1]) % 5
    assert torch.autograd.gradcheck(
        lambda W, V: centred_mse((W[x[:, 0]] + W[5 + x[:, 1]]) ** 2 @ V, y),
        (net.W.detach().requires_grad_(), net.V.detach().requires_grad_()),
    )
    # and the module's own autograd path agrees with the functional one
    loss = centred_mse(net(x), y)
    loss.backward()
    W, V = net.W.detach().clone().requires_grad_(), net.V.detach().clone().requires_grad_()
    centred_mse((W[x[:, 0]] + W[5 + x[:, 1]]) ** 2 @ V, y).backward()
    torch.testing.assert_close(net.W.grad, W.grad)
    torch.testing.assert_close(net.V.grad, V.grad)


def test_registry_and_errors():
    assert isinstance(build_model("quadratic", 5, width=3), QuadraticNet)
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("nope", 5, width=3)
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("nope")


def test_accuracy():
    pred = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert accuracy(pred, torch.tensor([1, 0, 0])) == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- mutation-proofing
# (issue 15: each test below fails for a small deliberate bug in grokking_llc.core.model)


def test_init_is_torchs_uniform_draw_in_order():
    """Reference: W ~ U(-1/sqrt(2p), 1/sqrt(2p)) then V ~ U(-1/sqrt(K), 1/sqrt(K)) from one
    generator (nn.Linear's default bounds, SPEC section 2)."""
    p, K = 7, 16
    g = torch.Generator().manual_seed(5)
    W = torch.empty(2 * p, K).uniform_(-((2 * p) ** -0.5), (2 * p) ** -0.5, generator=g)
    V = torch.empty(K, p).uniform_(-(K**-0.5), K**-0.5, generator=g)
    net = QuadraticNet(p, K, generator=torch.Generator().manual_seed(5))
    assert torch.equal(net.W.detach(), W) and torch.equal(net.V.detach(), V)
    # both signs occur: the draw is centred, not [bound, bound]
    assert net.W.min() < -0.5 * (2 * p) ** -0.5 and net.W.max() > 0.5 * (2 * p) ** -0.5


def test_default_width_is_the_papers_1024():
    net = QuadraticNet(5)
    assert (
        net.width == 1024 and tuple(net.W.shape) == (10, 1024) and tuple(net.V.shape) == (1024, 5)
    )


def test_build_model_passes_width_generator_and_options():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    net = build_model("quadratic", 5, width=3, generator=g1)
    ref = QuadraticNet(5, 3, generator=g2)
    assert net.width == 3 and torch.equal(net.W, ref.W) and torch.equal(net.V, ref.V)

    seen = {}

    def probe(p, *, width, generator, **options):
        seen.update(p=p, width=width, generator=generator, options=options)
        return torch.nn.Linear(1, 1)

    register_model("_probe_kind")(probe)
    try:
        g = torch.Generator()
        build_model("_probe_kind", 11, width=4, generator=g, options={"depth": 2})
        assert seen == {"p": 11, "width": 4, "generator": g, "options": {"depth": 2}}
    finally:
        model_module._MODELS.pop("_probe_kind", None)


def test_centred_mse_by_hand_with_n_different_from_p():
    # n=3, p=2, Yhat = 0, labels (0, 0, 1): R = Y = [[1,0],[1,0],[0,1]], column means (2/3, 1/3)
    # P R = [[1/3,-1/3],[1/3,-1/3],[-2/3,2/3]]: ||.||^2 = 4/9 + 8/9 = 4/3; / (2n = 6) = 2/9
    pred = torch.zeros(3, 2, dtype=torch.float64)
    assert centred_mse(pred, torch.tensor([0, 0, 1])).item() == pytest.approx(2 / 9, rel=1e-12)


def test_centred_mse_keeps_the_predictions_dtype():
    pred = torch.zeros(3, 2, dtype=torch.float32)
    Y = torch.eye(2, dtype=torch.float64)[[0, 0, 1]]
    assert centred_mse(pred, Y).dtype == torch.float32
    assert centred_mse(pred.double(), torch.tensor([0, 0, 1])).dtype == torch.float64


def test_centred_mse_refuses_a_1d_prediction_with_its_shape():
    with pytest.raises(ValueError, match=r"^pred must have shape \(n, p\), got \(3,\)$"):
        centred_mse(torch.zeros(3), torch.tensor([0, 1, 0]))


def test_one_hot_target():
    y = one_hot_target(torch.tensor([2, 0]), 3)
    assert y.dtype == torch.get_default_dtype()
    assert torch.equal(y, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    Y = torch.rand(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert one_hot_target(Y, 3) is Y  # a float target is taken as already encoded


def test_cross_entropy_by_hand_and_loss_registry():
    # row 1: logits (0, ln 3) -> softmax (1/4, 3/4), label 1 -> -ln(3/4)
    # row 2: logits (0, 0) -> (1/2, 1/2), label 0 -> ln 2; mean of the two
    pred = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], dtype=torch.float64)
    want = (-math.log(0.75) + math.log(2.0)) / 2
    assert cross_entropy(pred, torch.tensor([1, 0])).item() == pytest.approx(want, rel=1e-12)
    assert get_loss("cross_entropy") is cross_entropy and get_loss("centred_mse") is centred_mse
