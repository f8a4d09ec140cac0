"""train_many (grokking_llc.training.train_many) against a plain-loop reference trainer written here
(QuadraticNet + autograd + torch.optim.Adam, the batch draws and checkpoint rules of SPEC
section 3), plus its checks, messages, state files, resume of lagging runs, progress log and
train_many_run's outputs (issue 15: tests a mutation run cannot slip past). Tiny runs: fast."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from grokking_llc.core.data import make_split, n_train
from grokking_llc.core.model import QuadraticNet, centred_mse
from grokking_llc.core.settings import TrainConfig
from grokking_llc.training import train as train_mod
from grokking_llc.training.train_many import (
    BATCHED_LOSSES,
    BATCHED_MODELS,
    BETA1,
    BETA2,
    EPS,
    GROUP_KEYS,
    _scalar_step,
    can_batch,
    group_key,
    train_many,
    train_many_run,
)

BASE = TrainConfig(
    p=5,
    train_frac=0.6,
    width=6,
    lr=1e-2,
    weight_decay=1e-3,
    batch_size=4,
    max_steps=24,
    checkpoint_every=8,
)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**BASE.to_dict(), **kw})


def xy(split, part):
    d = split[split["split"] == part]
    return (
        torch.tensor(d[["a", "b"]].to_numpy(dtype=np.int64)),
        torch.tensor(d["c"].to_numpy(dtype=np.int64)),
    )


def reference(c: TrainConfig, split):
    """(log rows, {step: (W, V)}, final Adam state) of one run, trained by a plain loop."""
    gen = torch.Generator().manual_seed(c.seed)
    model = QuadraticNet(c.p, c.width, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    xt, yt = xy(split, "train")
    xv, yv = xy(split, "val")
    rows, weights, streak, step = [], {}, 0, 0

    def check():
        nonlocal streak
        with torch.no_grad():
            pt, pv = model(xt), model(xv)
            row = (
                step,
                centred_mse(pt, yt).item(),
                centred_mse(pv, yv).item(),
                (pt.argmax(1) == yt).float().mean().item(),
                (pv.argmax(1) == yv).float().mean().item(),
            )
        rows.append(row)
        weights[step] = (model.W.detach().clone(), model.V.detach().clone())
        streak = streak + 1 if row[4] >= c.early_stop_acc else 0

    check()
    while streak < c.early_stop_patience and step < c.max_steps:
        idx = torch.randperm(len(yt), generator=gen)[: c.batch_size]
        loss = centred_mse(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % c.checkpoint_every == 0 or step == c.max_steps:
            check()
    return rows, weights, opt


@pytest.fixture(scope="module")
def split():
    return make_split(BASE.p, BASE.train_frac, BASE.data_seed)


@pytest.fixture(scope="module")
def split2():
    return make_split(BASE.p, BASE.train_frac, 3)


GROUP = [
    cfg(),
    cfg(seed=1, lr=3e-2, weight_decay=0.0, max_steps=13),  # ends between checkpoints
    cfg(seed=2, weight_decay=1e-3, early_stop_acc=0.0, early_stop_patience=2),  # stops at 8
    cfg(seed=3, lr=5e-3, weight_decay=5e-2),
]


def _compare(res, c, split):
    rows, weights, _ = reference(c, split)
    log = res.log
    assert list(log.columns) == ["step", "train_loss", "val_loss", "train_acc", "val_acc"]
    assert log["step"].tolist() == [r[0] for r in rows]
    for j, col in enumerate(log.columns[1:], start=1):
        np.testing.assert_allclose(
            log[col].to_numpy(), [r[j] for r in rows], rtol=1e-5, atol=1e-7, err_msg=col
        )
    assert res.checkpoints["steps"].tolist() == [r[0] for r in rows]
    for k, step in enumerate(res.checkpoints["steps"].tolist()):
        W, V = weights[step]
        torch.testing.assert_close(res.checkpoints["params"]["W"][k], W, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(res.checkpoints["params"]["V"][k], V, rtol=1e-5, atol=1e-7)


def test_a_group_equals_the_plain_loop_reference(split, split2, tmp_path):
    splits = [split, split2, split, split2]
    out = train_many(GROUP, splits, [tmp_path / str(i) for i in range(4)])
    assert len(out) == 4
    for res, c, s in zip(out, GROUP, splits, strict=True):
        _compare(res, c, s)
    assert out[1].log["step"].tolist() == [0, 8, 13]
    assert out[2].log["step"].tolist() == [0, 8]


def test_one_run_alone_and_the_state_file_is_adams(split, tmp_path):
    c = cfg(seed=5, max_steps=10, checkpoint_every=5)
    [res] = train_many([c], [split], [tmp_path / "w"])
    _compare(res, c, split)
    _, _, opt = reference(c, split)
    state = torch.load(tmp_path / "w" / "state.pt", weights_only=False)
    assert state["format"] == train_mod.STATE_FORMAT and state["run_id"] == c.run_id
    assert state["step"] == 10 and state["streak"] == 0 and state["config"] == c.to_dict()
    assert [r["step"] for r in state["log"]] == [0, 5, 10] and len(state["digests"]) == 3
    want = opt.state_dict()["state"]
    got = state["optimizer"]["state"]
    for i in (0, 1):
        assert got[i]["step"].dtype == torch.float32 and float(got[i]["step"]) == 10.0
        torch.testing.assert_close(got[i]["exp_avg"], want[i]["exp_avg"], rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(
            got[i]["exp_avg_sq"], want[i]["exp_avg_sq"], rtol=1e-5, atol=1e-12
        )
    assert (tmp_path / "w" / "state.prev.pt").exists()
    # the generator state: the next draw is the reference's next draw
    gen = torch.Generator()
    gen.set_state(state["generator"])
    ref_gen = torch.Generator().manual_seed(5)
    QuadraticNet(5, 6, generator=ref_gen)
    for _ in range(10):
        torch.randperm(n_train(5, 0.6), generator=ref_gen)
    assert torch.equal(torch.randperm(15, generator=gen), torch.randperm(15, generator=ref_gen))


def test_resume_of_lagging_runs_equals_the_reference(split, split2, tmp_path):
    dirs = [tmp_path / str(i) for i in range(2)]
    c0, c1 = cfg(seed=7, max_steps=24), cfg(seed=8, lr=2e-2, max_steps=20)
    # run 0 first alone to step 16 (killed), run 1 not at all
    assert train_many([c0], [split], dirs[:1], _stop_after_step=16) is None
    st = torch.load(dirs[0] / "state.pt", weights_only=False)
    assert st["step"] == 16
    out = train_many([c0, c1], [split, split2], dirs)
    _compare(out[0], c0, split)
    _compare(out[1], c1, split2)
    # a kill request is honoured at the first checkpoint at or after the step
    d = tmp_path / "k"
    assert train_many([c0], [split], [d], _stop_after_step=9) is None
    assert torch.load(d / "state.pt", weights_only=False)["step"] == 16


def test_progress_is_logged_when_due(split, tmp_path, caplog):
    c = cfg(max_steps=8, checkpoint_every=4)
    with caplog.at_level(logging.INFO, logger="grokking_llc.training.train_many"):
        train_many([c], [split], [tmp_path / "a"], progress_every_s=0.0)
    msgs = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("train_many: 1 runs at step 4, ") and m.endswith(" run-steps/s") for m in msgs
    )
    # the report follows the drop of finished runs: none left at step 8
    assert any(m.startswith("train_many: 0 runs at step 8, ") for m in msgs)
    assert f"{c.run_id} done at step 8" in msgs
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="grokking_llc.training.train_many"):
        train_many([c], [split], [tmp_path / "b"], progress_every_s=1e9)
    assert not any(r.getMessage().startswith("train_many: 1 runs") for r in caplog.records)
    caplog.clear()
    e = cfg(early_stop_acc=0.0, early_stop_patience=2, checkpoint_every=4)
    with caplog.at_level(logging.INFO, logger="grokking_llc.training.train_many"):
        train_many([e], [split], [tmp_path / "c"])
    assert f"{e.run_id} early stop at step 4" in [r.getMessage() for r in caplog.records]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="grokking_llc.training.train_many"):
        train_many([c], [split], [tmp_path / "a"])  # already done: resumed, nothing to train
    assert f"resuming {c.run_id} from step 8 (3 checkpoints)" in [
        r.getMessage() for r in caplog.records
    ]


def test_constants_keys_and_what_can_be_batched():
    assert (BETA1, BETA2, EPS) == (0.9, 0.999, 1e-8)
    assert BATCHED_MODELS == ("quadratic",) and BATCHED_LOSSES == ("centred_mse",)
    assert GROUP_KEYS == (
        "model",
        "model_options",
        "p",
        "width",
        "batch_size",
        "loss",
        "checkpoint_every",
    )
    assert can_batch(BASE)
    assert not can_batch(cfg(loss="cross_entropy"))
    assert not can_batch(cfg(model="transformer"))
    assert not can_batch(cfg(model_options={"x": 1}))
    key = group_key(cfg(model_options={"b": 1, "a": 2}))
    assert key == (
        ("model", "quadratic"),
        ("model_options", '{"a": 2, "b": 1}'),
        ("p", 5),
        ("width", 6),
        ("batch_size", 4),
        ("loss", "centred_mse"),
        ("checkpoint_every", 8),
        ("n_train", n_train(5, 0.6)),
    )
    assert json.loads(group_key(BASE)[1][1]) == {}


def test_scalar_step_dtype_follows_the_default():
    s = _scalar_step(7)
    assert s.dtype == torch.float32 and s.item() == 7.0 and s.shape == ()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert _scalar_step(3).dtype == torch.float64
    finally:
        torch.set_default_dtype(old)


def test_group_checks_with_their_messages(split, split2, tmp_path):
    d = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(ValueError, match=r"^train_many: no runs given$"):
        train_many([], [], [])
    with pytest.raises(
        ValueError,
        match=r"^train_many: 2 configs, 1 splits and 2 work dirs: "
        r"one of each per run$",
    ):
        train_many([BASE, BASE], [split], d)
    with pytest.raises(ValueError, match=r"^train_many: 1 configs, 1 splits and 2 work dirs"):
        train_many([BASE], [split], d)
    bad = cfg(loss="cross_entropy")
    with pytest.raises(
        ValueError,
        match=rf"^train_many: run {bad.run_id} cannot be batched "
        r"\(model 'quadratic', model_options \{\}, loss "
        r"'cross_entropy'; supported: models \('quadratic',\) "
        r"without options, losses \('centred_mse',\)\); train "
        r"it alone$",
    ):
        train_many([BASE, bad], [split, split], d)
    w = cfg(width=7)
    with pytest.raises(
        ValueError,
        match=rf"^train_many: runs differ in 'width': {BASE.run_id} "
        rf"has 6, {w.run_id} has 7$",
    ):
        train_many([BASE, w], [split, split], d)
    small = make_split(5, 0.4, 0)
    with pytest.raises(
        ValueError,
        match=rf"^train_many: runs differ in 'n_train' \(training "
        rf"rows of the split\): {BASE.run_id} has 15, "
        rf"{BASE.run_id} has 10$",
    ):
        train_many([BASE, BASE], [split, small], d)
    with pytest.raises(
        ValueError,
        match=rf"^train_many: the split of {BASE.run_id} has 24 rows, "
        r"not p\^2 = 25$",
    ):
        train_many([BASE], [split.iloc[1:]], d[:1])
    with pytest.raises(ValueError, match=r"^train_many: two runs share a work dir$"):
        train_many([BASE, BASE], [split, split], [tmp_path / "a", tmp_path / "x" / ".." / "a"])
    # the third run differing is found too (not only the second)
    with pytest.raises(ValueError, match="differ in 'width'"):
        train_many([BASE, BASE, w], [split] * 3, [tmp_path / "p", tmp_path / "q", tmp_path / "r"])


def test_train_many_run_outputs_hooks_and_leftovers(split, split2, tmp_path, caplog, monkeypatch):
    cs = [cfg(max_steps=8, checkpoint_every=4), cfg(seed=4, max_steps=8, checkpoint_every=4)]
    work = [tmp_path / "w0", tmp_path / "w1"]
    trash = train_mod._discard_dir(work[0])
    trash.mkdir()
    (trash / "junk").write_text("x")
    points = []
    monkeypatch.setattr(train_mod, "_FAULT_HOOK", lambda point, step: points.append(point))
    with caplog.at_level(logging.WARNING, logger="grokking_llc.training.train_many"):
        out = train_many_run(
            cs,
            [split, split2],
            log_paths=[tmp_path / "l0.parquet", tmp_path / "l1.parquet"],
            checkpoints_paths=[tmp_path / "c0.pt", tmp_path / "c1.pt"],
            work_dirs=work,
        )
    assert f"removing {trash}, left by a clean-up that was interrupted" in caplog.text
    assert not trash.exists()
    for i, (c, s) in enumerate(zip(cs, [split, split2], strict=True)):
        _compare(out[i], c, s)
        ck = torch.load(tmp_path / f"c{i}.pt", weights_only=False)
        assert ck["run_id"] == c.run_id and ck["config"] == c.to_dict()
        assert ck["steps"].tolist() == [0, 4, 8]
        log = pd.read_parquet(tmp_path / f"l{i}.parquet")
        pd.testing.assert_frame_equal(log, out[i].log)
        assert not work[i].exists() and not train_mod._discard_dir(work[i]).exists()
    tail = [p for p in points if p in ("checkpoints_written", "outputs_written", "partial_renamed")]
    assert tail == ["checkpoints_written", "outputs_written", "partial_renamed"] * 2
    with pytest.raises(
        ValueError,
        match=r"^train_many_run: one log path, checkpoints path and "
        r"work dir per run$",
    ):
        train_many_run(
            cs,
            [split, split2],
            log_paths=[tmp_path / "l"],
            checkpoints_paths=[tmp_path / "c0", tmp_path / "c1"],
            work_dirs=work,
        )
    for lp, cp in (([1, 2], [1]), ([1, 2], [1, 2])):
        with pytest.raises(ValueError, match="train_many_run: one log path"):
            train_many_run(
                cs, [split, split2], log_paths=lp, checkpoints_paths=cp, work_dirs=work[:1]
            )


# ----------------------------------------------------------------------------- more


def _bitwise(cs, splits, tmp_path):
    out = train_many(cs, splits, [tmp_path / str(i) for i in range(len(cs))])
    for res, c, s in zip(out, cs, splits, strict=True):
        _, weights, _ = reference(c, s)
        for k, step in enumerate(res.checkpoints["steps"].tolist()):
            assert torch.equal(res.checkpoints["params"]["W"][k], weights[step][0]), step
            assert torch.equal(res.checkpoints["params"]["V"][k], weights[step][1]), step


def test_bitwise_equal_to_the_autograd_adam_loop(tmp_path):
    """The module docstring's measured claim (the hand gradient replays autograd op by op),
    at p = 7 as in test_train_many.py."""
    c7 = TrainConfig(
        p=7,
        train_frac=0.6,
        width=8,
        lr=1e-2,
        weight_decay=1e-4,
        batch_size=8,
        max_steps=20,
        checkpoint_every=10,
    )
    cs = [c7, TrainConfig(**{**c7.to_dict(), "seed": 1, "lr": 2e-2, "weight_decay": 0.0})]
    split7 = make_split(7, 0.6, 0)
    _bitwise(cs, [split7, split7], tmp_path)


@pytest.mark.xfail(
    strict=True,
    reason="measured, not promised (module docstring): at p = 5 (K 6 or 8, B 4 or 8) train_many "
    "differs from the autograd + torch.optim.Adam loop (and from train.train) in the last bits "
    "(~3e-8 after 16 steps); the tolerance contract holds",
)
def test_bitwise_at_p5_too(split, tmp_path):
    _bitwise([cfg(seed=11, max_steps=16)], [split], tmp_path)


def test_fault_points_in_order_and_digests_checked(split, tmp_path, monkeypatch):
    c = cfg(max_steps=8, checkpoint_every=4)
    points = []
    monkeypatch.setattr(train_mod, "_FAULT_HOOK", lambda point, step: points.append((point, step)))
    train_many([c], [split], [tmp_path / "a" / "b" / "c"])  # parents made as needed
    want = [("start", -1)]
    for s in (0, 4, 8):
        want += [("ckpt_written", s), ("state_rotated", s), ("state_written", s)]
    assert points == want + [("trained", 8)]

    # a checkpoint file changed after it was written is caught by its digest
    def tamper(point, step):
        if point == "trained":
            train_mod.ckpt_path(tmp_path / "t", 0).write_bytes(b"not a checkpoint")

    monkeypatch.setattr(train_mod, "_FAULT_HOOK", tamper)
    with pytest.raises(Exception, match="missing or differs from the one logged"):
        train_many([c], [split], [tmp_path / "t"])


def test_the_step_zero_state_has_no_adam_state_yet(split, tmp_path):
    c = cfg(max_steps=8, checkpoint_every=4)
    assert train_many([c], [split], [tmp_path / "a"], _stop_after_step=4) is None
    prev = torch.load(tmp_path / "a" / "state.prev.pt", weights_only=False)
    assert prev["step"] == 0 and prev["optimizer"]["state"] == {}
    now = torch.load(tmp_path / "a" / "state.pt", weights_only=False)
    assert float(now["optimizer"]["state"][0]["step"]) == 4.0


def test_early_stop_accuracy_reached_exactly_counts(split, tmp_path):
    rows, _, _ = reference(cfg(), split)
    # validation accuracy at initialisation, as the float32 mean train.evaluate reports
    acc0 = float(torch.tensor(rows[0][4], dtype=torch.float32))
    c = cfg(early_stop_acc=acc0, early_stop_patience=1)
    [res] = train_many([c], [split], [tmp_path / "a"])
    assert res.log["step"].tolist() == [0]  # stopped before training
    _compare(res, c, split)


def test_progress_rate_with_a_frozen_clock(split, tmp_path, caplog, monkeypatch):
    import time

    monkeypatch.setattr(time, "perf_counter", lambda: 100.0)
    c = cfg(max_steps=8, checkpoint_every=4)
    with caplog.at_level(logging.INFO, logger="grokking_llc.training.train_many"):
        train_many(
            [c, cfg(seed=9, max_steps=8, checkpoint_every=4)],
            [split, split],
            [tmp_path / "a", tmp_path / "b"],
            progress_every_s=0.0,
        )
    monkeypatch.undo()
    msgs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train_many:")]
    # zero seconds passed: every due report (elapsed 0 >= 0), rate = run-steps / 1e-9
    assert msgs == [
        "train_many: 2 runs at step 4, 8000000000 run-steps/s",
        "train_many: 0 runs at step 8, 16000000000 run-steps/s",
    ]


def test_a_class_missing_from_the_training_rows(tmp_path):
    p = 5
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    df = pd.DataFrame({"a": a.ravel(), "b": b.ravel(), "c": (a + b).ravel() % p})
    df["split"] = np.where(df["c"] == p - 1, "val", "train")  # class 4 never trained on
    c = cfg(max_steps=6, checkpoint_every=3)
    [res] = train_many([c], [df], [tmp_path / "a"])
    _compare(res, c, df)
