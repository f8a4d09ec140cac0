"""Tests of the paper's transformer (SPEC section 8): shapes, seeded init, training, LLC."""

from __future__ import annotations

import math

import pytest
import torch

from grokking_llc.core.data import make_split, split_tensors
from grokking_llc.core.model import build_model, cross_entropy
from grokking_llc.core.settings import TrainConfig
from grokking_llc.sampling.llc import estimate_llc
from grokking_llc.training.train import train

P = 11
WIDTH = 32
OPTIONS = {"ff_dim": 32}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(seed: int = 0, p: int = P, width: int = WIDTH, **options):
    return build_model(
        "transformer", p, width=width, generator=_gen(seed), options={**OPTIONS, **options}
    )


def _pairs(p: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, p, (n, 2), generator=_gen(seed))


def test_forward_shapes():
    model = _model()
    for n in (1, 5, 64):
        out = model(_pairs(P, n))
        assert out.shape == (n, P)
        assert out.dtype == torch.get_default_dtype()
        assert torch.isfinite(out).all()


def test_forward_shapes_with_other_options():
    model = _model(p=7, width=24, num_layers=3, num_heads=4, ff_dim=16)
    assert len(model.layers) == 3
    assert model(_pairs(7, 9)).shape == (9, 7)


def test_default_options_match_the_paper():
    model = build_model("transformer", 5, width=256, generator=_gen(0))
    assert (model.num_layers, model.num_heads, model.ff_dim) == (2, 1, 256)
    layer = model.layers[0]
    assert layer.linear1.out_features == 256
    assert layer.self_attn.num_heads == 1
    assert layer.self_attn.batch_first
    assert layer.dropout.p == 0.0


def test_forward_rejects_bad_input_shape():
    model = _model()
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        model(torch.zeros(4, 3, dtype=torch.long))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(width=30, options={"num_heads": 4}), "not divisible by num_heads"),
        (dict(width=0), "width must be a positive integer"),
        (dict(width=32, options={"num_layers": 0}), "num_layers must be a positive integer"),
        (dict(width=32, options={"ff_dim": 2.5}), "ff_dim must be a positive integer"),
        (dict(width=32, options={"dropout": 0.1}), "unknown transformer option"),
    ],
)
def test_invalid_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model("transformer", P, generator=_gen(0), **kwargs)


def test_init_is_deterministic_given_the_generator():
    a, b, c = _model(seed=0), _model(seed=0), _model(seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # Every randomly initialised tensor differs with another seed (LayerNorm/bias constants don't).
    differing = [k for k in sa if not torch.equal(sa[k], sc[k])]
    assert "tok_embed.weight" in differing and "readout.weight" in differing
    assert len(differing) >= 2 + 4 * len(a.layers)
    x = _pairs(P, 16)
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), c(x))


def test_init_ignores_and_preserves_the_global_rng():
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    a = _model(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    torch.manual_seed(2)
    b = _model(seed=3)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def _train(tmp_path, loss: str, **overrides):
    cfg = TrainConfig(
        p=P,
        train_frac=0.5,
        model="transformer",
        width=WIDTH,
        model_options=dict(OPTIONS),
        loss=loss,
        lr=1e-3,
        weight_decay=0.0,
        batch_size=16,
        max_steps=200,
        checkpoint_every=50,
        **overrides,
    )
    split = make_split(cfg.p, cfg.train_frac, cfg.data_seed)
    return cfg, split, train(cfg, split, tmp_path / cfg.run_id)


@pytest.mark.parametrize("loss", ["cross_entropy", "centred_mse"])
def test_training_lowers_the_loss(tmp_path, loss):
    cfg, _, result = _train(tmp_path, loss)
    log = result.log
    assert list(log["step"]) == [0, 50, 100, 150, 200]
    assert log["train_loss"].notna().all()
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    # Checkpoints are state dicts of the model and load back into a fresh one.
    assert result.checkpoints["steps"].tolist() == [0, 50, 100, 150, 200]
    fresh = _model(seed=123)
    fresh.load_state_dict({k: v[-1] for k, v in result.checkpoints["params"].items()})


def _trained_model_and_data(tmp_path):
    cfg, split, result = _train(tmp_path, "cross_entropy", early_stop_patience=10**6)
    model = build_model(cfg.model, cfg.p, width=cfg.width, options=cfg.model_options)
    model.load_state_dict({k: v[-1] for k, v in result.checkpoints["params"].items()})
    x, y = split_tensors(split, "train")
    return model, x, y


SAMPLER = dict(num_chains=2, num_draws=20, num_burnin_steps=5, batch_size=16, lr=1e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _trained_model_and_data(tmp_path_factory.mktemp("llc"))


def _check_llc(model, x, y, backend):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = estimate_llc(model, x, y, cross_entropy, SAMPLER, seed=0, backend=backend)
    assert res.loss_trace.shape == (2, 25)
    assert math.isfinite(res.llc_mean), res.reason
    assert math.isfinite(res.init_loss)
    # the checks at w* run through attention too (its math kernel: the fused one has no
    # forward-mode derivative): a gradient norm and the bound d/2 vs n (p - 1) / 2 for the logits
    d = sum(v.numel() for v in model.parameters())
    assert math.isfinite(res.grad_norm) and res.grad_norm > 0 and math.isfinite(res.gradient_bias)
    assert res.llc_bound == 0.5 * min(d, len(x) * (P - 1))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{backend} backend changed {k}"
    return res


def test_llc_devinterp_end_to_end(trained):  # devinterp is pinned in requirements.txt
    _check_llc(*trained, backend="devinterp")


def test_llc_fast_end_to_end(trained):
    _check_llc(*trained, backend="fast")
