import pytest
import torch

from grokking_llc.model import QuadraticNet, accuracy, build_model, centred_mse, get_loss


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
