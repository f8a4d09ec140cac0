"""A loss over one sample is always 0 (issue 21, item 2): the centred square loss centres each
output over the samples it is given (SPEC section 2), so a minibatch or split of one sample
gives 0 whatever the weights. One rule (grokking_llc.core.data.LOSS_MIN_SAMPLES) refuses it in the
config, in training (train, train_many) and in the LLC estimator (estimate_llc and
estimate_llc_many), each naming what is too small."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from grokking_llc.core import model as model_module
from grokking_llc.core.data import LOSS_MIN_SAMPLES, loss_samples_problem, make_split
from grokking_llc.core.model import (
    LOSSES,
    QuadraticNet,
    accuracy,
    build_model,
    centred_mse,
    check_loss_samples,
    cross_entropy,
    get_loss,
    one_hot_target,
    register_model,
)
from grokking_llc.core.settings import TrainConfig
from grokking_llc.sampling.llc import estimate_llc, estimate_llc_many
from grokking_llc.training.train import train
from grokking_llc.training.train_many import train_many


def _dense_forward(net: QuadraticNet, x: torch.Tensor) -> torch.Tensor:
    """Reference: X W with X the dense one-hot [e_a ; e_b] matrix (SPEC section 2)."""
    p = net.p
    X = torch.zeros(len(x), 2 * p, dtype=net.W.dtype)
    X[torch.arange(len(x)), x[:, 0]] = 1
    X[torch.arange(len(x)), p + x[:, 1]] = 1
    return (X @ net.W) ** 2 @ net.V


CFG = TrainConfig(p=5, train_frac=0.6, width=4, lr=1e-2, batch_size=4, max_steps=20,
                  checkpoint_every=10)  # fmt: skip


SAMPLER = {"lr": 1e-4, "nbeta": 2.0, "localization": 10.0, "num_chains": 2, "batch_size": 1,
           "num_burnin_steps": 1, "num_draws": 3, "num_init_loss_batches": 1}  # fmt: skip


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


def test_the_rule_is_the_loss_being_zero_on_one_sample():
    """What the rule encodes, measured: the centred loss of any prediction over one sample is 0
    (and its gradient too); over two it is not."""
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(1, 5, generator=gen, requires_grad=True)
    loss = centred_mse(pred, torch.tensor([3]))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(pred.grad) == 0
    two = centred_mse(torch.randn(2, 5, generator=gen), torch.tensor([3, 1]))
    assert two.item() > 0
    assert set(LOSS_MIN_SAMPLES) == set(LOSSES)  # every registered loss has its rule
    assert loss_samples_problem("centred_mse", 2) is None
    assert loss_samples_problem("cross_entropy", 1) is None
    assert "needs >= 2" in loss_samples_problem("centred_mse", 1)


def test_training_with_a_batch_of_one_is_refused(tmp_path):
    split = make_split(CFG.p, CFG.train_frac, 0)
    bad = TrainConfig(**{**CFG.to_dict(), "batch_size": 1})
    with pytest.raises(ValueError, match=f"run {bad.run_id}: batch_size: 1 sample"):
        train(bad, split, tmp_path / "w")
    with pytest.raises(ValueError, match="batch_size: 1 sample"):
        train_many([bad], [split], [tmp_path / "w2"])
    assert not (tmp_path / "w").exists() and not (tmp_path / "w2").exists()  # nothing written


def test_a_validation_split_of_one_pair_is_refused(tmp_path):
    """p=5, train_frac 0.96: 24 training pairs, one validation pair whose val_loss would be 0
    at every checkpoint."""
    cfg = TrainConfig(**{**CFG.to_dict(), "train_frac": 0.96})
    split = make_split(cfg.p, cfg.train_frac, 0)
    assert (split["split"] == "val").sum() == 1
    with pytest.raises(ValueError, match="the validation split.*1 sample"):
        train(cfg, split, tmp_path / "w")
    with pytest.raises(ValueError, match="the validation split"):
        train_many([cfg], [split], [tmp_path / "w2"])


def test_cross_entropy_is_a_loss_on_one_sample(tmp_path):
    check_loss_samples("cross_entropy", 1, "x")
    check_loss_samples(get_loss("cross_entropy"), 1, "x")
    check_loss_samples(lambda p, t: p.sum(), 1, "an unregistered loss has no rule")
    with pytest.raises(ValueError, match="^x: 1 sample"):
        check_loss_samples(get_loss("centred_mse"), 1, "x")


def test_estimate_llc_refuses_an_sgld_batch_of_one():
    """Main gave 0.0 at every checkpoint, marked invalid with the wrong reason."""
    model = build_model("quadratic", 5, width=4, generator=torch.Generator().manual_seed(0))
    x = torch.tensor([[a, b] for a in range(5) for b in range(2)])
    y = x.sum(1) % 5
    with pytest.raises(ValueError, match="sampler batch_size: 1 sample"):
        estimate_llc(model, x, y, centred_mse, SAMPLER, backend="fast")
    state = {k: v.detach() for k, v in model.named_parameters()}
    with pytest.raises(ValueError, match="sampler batch_size"):
        estimate_llc_many(model, [state], x, y, centred_mse, SAMPLER, seeds=[0], backend="fast")
    res = estimate_llc(model, x, y, centred_mse, {**SAMPLER, "batch_size": 2}, backend="fast")
    assert res.llc_mean != 0.0


def test_early_stop_at_chance_is_warned_about(tmp_path, caplog):
    """early_stop_acc 0 counts every checkpoint: training stops after `patience` checkpoints
    (the config refuses it; a direct call is warned)."""
    caplog.set_level(logging.WARNING, logger="grokking_llc.training.train")
    cfg = TrainConfig(**{**CFG.to_dict(), "early_stop_acc": 0.0, "early_stop_patience": 1})
    res = train(cfg, make_split(cfg.p, cfg.train_frac, 0), tmp_path / "w")
    assert res.log["step"].tolist() == [0]
    assert any("at or below chance accuracy 1/p" in m for m in caplog.messages)
