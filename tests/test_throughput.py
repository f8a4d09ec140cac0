"""Issue 14's throughput work: checkpoints batched in a job, the fast float64 diagnostic
gradient, cheaper diagnostics, adaptive checkpoint selection in the LLC stage and its plan."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from grokking_llc.core.data import make_split, split_tensors  # noqa: E402
from grokking_llc.core.model import build_model, centred_mse  # noqa: E402
from grokking_llc.core.settings import SamplerConfig, TrainConfig  # noqa: E402
from grokking_llc.figures._track import draw_llc  # noqa: E402
from grokking_llc.pipeline.stages.llc import (  # noqa: E402
    BATCH_FLOATS_PER_THREAD,
    MAX_BATCH,
    checkpoint_batch,
    estimate_run_llc,
)
from grokking_llc.sampling import sgld  # noqa: E402
from grokking_llc.sampling.llc import default_diag_every, estimate_llc, estimate_llc_many  # noqa: E402
from grokking_llc.sampling.refine import RefineSettings  # noqa: E402

RUN = TrainConfig(p=7, train_frac=0.6, width=6, batch_size=8, max_steps=20, checkpoint_every=10)
SAMPLER = SamplerConfig(
    lr=1e-4, nbeta=5.0, localization=10.0, num_chains=2, num_burnin_steps=3, num_draws=10,
    batch_size=8, num_init_loss_batches=2, seed=7,
)  # fmt: skip


@pytest.fixture(scope="module")
def split():
    return make_split(7, 0.6, seed=0)


def state(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    model = build_model("quadratic", 7, width=6, generator=gen)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def ckpts(n: int):
    states = [state(s) for s in range(n)]
    return {
        "steps": torch.arange(n) * 10,
        "params": {k: torch.stack([s[k] for s in states]) for k in states[0]},
    }


# ------------------------------------------------------------------ estimate_llc_many


@pytest.mark.parametrize("backend", ["fast", "devinterp"])
def test_estimate_llc_many_equals_one_estimate_per_checkpoint_and_leaves_the_model(split, backend):
    x, y = split_tensors(split, "train", "cpu")
    model = build_model("quadratic", 7, width=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    states = [state(1), state(2), state(3)]
    many = estimate_llc_many(model, states, x, y, centred_mse, SAMPLER, seeds=[5, 6, 7],
                             backend=backend)  # fmt: skip
    for st, seed, res in zip(states, [5, 6, 7], many, strict=True):
        alone_model = build_model("quadratic", 7, width=6)
        alone_model.load_state_dict(st)
        alone = estimate_llc(alone_model, x, y, centred_mse, SAMPLER, seed=seed, backend=backend)
        np.testing.assert_array_equal(res.loss_trace, alone.loss_trace)
        assert res.llc_mean == alone.llc_mean
        assert res.summary() == pytest.approx(alone.summary(), nan_ok=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert len({r.llc_mean for r in many}) == 3  # three different checkpoints, three numbers


def test_estimate_llc_many_refuses_mismatched_seeds(split):
    x, y = split_tensors(split, "train", "cpu")
    with pytest.raises(ValueError, match="2 states but 1 seeds"):
        estimate_llc_many(build_model("quadratic", 7, width=6), [state(0), state(1)], x, y,
                          centred_mse, SAMPLER, seeds=[0], backend="fast")  # fmt: skip


# ------------------------------------------------------------------ diagnostics cost


@pytest.mark.parametrize(
    ("steps", "expected"), [(60, 20), (600, 20), (900, 30), (1500, 50), (3000, 100), (10**6, 100)]
)
def test_default_diag_every_by_hand(steps, expected):
    assert default_diag_every(steps) == expected


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


# ------------------------------------------------------------------ checkpoint batches


def test_checkpoint_batch_from_model_size_and_threads():
    per_thread = BATCH_FLOATS_PER_THREAD
    assert checkpoint_batch(per_thread // 3, 3, "fast", threads=1) == 1
    assert checkpoint_batch(per_thread // 6, 3, "fast", threads=1) == 2
    assert checkpoint_batch(per_thread // 6, 3, "fast", threads=2) == 4
    assert checkpoint_batch(10, 3, "fast", threads=1) == MAX_BATCH
    assert checkpoint_batch(10**7, 4, "fast", threads=1) == 1
    assert checkpoint_batch(10, 3, "devinterp", threads=4) == 1
    # the paper's sizes (p = 53): K=64 stacks 8, K=256 stacks 2, K=1024 one at a time
    assert [checkpoint_batch(3 * 53 * k, 3, "fast", threads=1) for k in (64, 256, 1024)] == [
        MAX_BATCH, 2, 1]  # fmt: skip


@pytest.mark.parametrize("batch", [1, 2, 3, 8])
def test_a_track_has_the_same_rows_whatever_the_checkpoint_batch(split, batch):
    c = ckpts(5)
    ref = estimate_run_llc(c, split, RUN, SAMPLER, backend="fast", every=1, batch=1)
    got = estimate_run_llc(c, split, RUN, SAMPLER, backend="fast", every=1, batch=batch)
    assert got["step"].tolist() == [0, 10, 20, 30, 40]
    np.testing.assert_array_equal(got["llc_mean"], ref["llc_mean"])
    for a, b in zip(got["loss_trace"], ref["loss_trace"], strict=True):
        np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert (got["selection"] == "all").all()


# ------------------------------------------------------------------ adaptive selection in a job


def test_an_adaptive_track_estimates_a_subset_and_says_which_pass_took_each(split):
    n = 13
    c = ckpts(n)
    steps = (torch.arange(n) * 10).tolist()
    # accuracies jump between steps 60 and 70: refinement brackets it
    log = pd.DataFrame({"step": steps, "train_acc": [0.1] * 7 + [1.0] * 6,
                        "val_acc": [0.0] * 7 + [1.0] * 6})  # fmt: skip
    settings = RefineSettings(coarse=4, tolerance=0.5, max_fraction=1.0)
    full = estimate_run_llc(c, split, RUN, SAMPLER, backend="fast", every=1)
    got = estimate_run_llc(c, split, RUN, SAMPLER, backend="fast", every=1, refine=settings,
                           train_log=log)  # fmt: skip
    sel = dict(zip(got["step"], got["selection"], strict=True))
    coarse = {0, 40, 80, 120}
    assert {s for s, k in sel.items() if k == "coarse"} == coarse
    assert {60, 70} <= set(sel)  # the accuracy jump bracketed by neighbours
    assert len(got) < n
    # the numbers at the sampled checkpoints are those of the full track
    merged = got.merge(full, on="step", suffixes=("", "_full"))
    np.testing.assert_array_equal(merged["llc_mean"], merged["llc_mean_full"])


def test_an_adaptive_track_needs_the_training_log(split):
    with pytest.raises(ValueError, match="training log"):
        estimate_run_llc(ckpts(6), split, RUN, SAMPLER, backend="fast", every=1,
                         refine=RefineSettings())  # fmt: skip


def test_the_track_figure_marks_the_sampled_checkpoints():
    df = pd.DataFrame(
        {
            "step": [0, 40, 50, 60, 80],
            "llc_mean": [1.0, 2.0, 5.0, 6.0, 6.5],
            "llc_std": [0.1] * 5,
            "valid": [False] * 5,
            "selection": ["coarse", "coarse", "refined", "refined", "coarse"],
        }
    )
    fig, ax = plt.subplots()
    draw_llc(ax, df, color="C0", name="paper")
    by_gid = {c.get_gid(): c for c in ax.collections}
    coarse = by_gid["llc_sampled_coarse:paper"].get_segments()
    refined = by_gid["llc_sampled_refined:paper"].get_segments()
    assert sorted(seg[0][0] for seg in coarse) == [0, 40, 80]
    assert sorted(seg[0][0] for seg in refined) == [50, 60]
    assert all(seg[1][1] == pytest.approx(0.06) for seg in refined)
    assert all(seg[1][1] == pytest.approx(0.03) for seg in coarse)
    plt.close(fig)
    fig, ax = plt.subplots()
    draw_llc(ax, df.assign(selection="all"), color="C0", name="paper")
    assert not any(str(c.get_gid()).startswith("llc_sampled") for c in ax.collections)
    plt.close(fig)
    assert math.isfinite(df["llc_mean"].sum())
