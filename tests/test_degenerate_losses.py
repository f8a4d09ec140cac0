"""A loss over one sample is always 0 (issue 21, item 2): the centred square loss centres each
output over the samples it is given (SPEC section 2), so a minibatch or split of one sample
gives 0 whatever the weights. One rule (grokking_llc.core.data.LOSS_MIN_SAMPLES) refuses it in the
config, in training (train, train_many) and in the LLC estimator (estimate_llc and
estimate_llc_many), each naming what is too small."""

import logging

import pytest
import torch

from grokking_llc.core.data import LOSS_MIN_SAMPLES, loss_samples_problem, make_split
from grokking_llc.core.model import LOSSES, build_model, centred_mse, check_loss_samples, get_loss
from grokking_llc.core.settings import TrainConfig
from grokking_llc.sampling.llc import estimate_llc, estimate_llc_many
from grokking_llc.training.train import train
from grokking_llc.training.train_many import train_many

CFG = TrainConfig(p=5, train_frac=0.6, width=4, lr=1e-2, batch_size=4, max_steps=20,
                  checkpoint_every=10)  # fmt: skip
SAMPLER = {"lr": 1e-4, "nbeta": 2.0, "localization": 10.0, "num_chains": 2, "batch_size": 1,
           "num_burnin_steps": 1, "num_draws": 3, "num_init_loss_batches": 1}  # fmt: skip


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
