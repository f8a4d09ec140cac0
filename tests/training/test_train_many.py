"""Runs trained together (grokking_llc.training.train_many, SPEC section 3) against the reference,
``grokking_llc.training.train.train`` run alone: logs, checkpoints, grokking and early-stop steps,
independence from the other runs of the stack, resume after a kill, and the group checks."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from grokking_llc.core.data import make_split, n_train
from grokking_llc.core.io import file_digest
from grokking_llc.core.model import QuadraticNet
from grokking_llc.core.settings import TrainConfig
from grokking_llc.training import train as train_mod
from grokking_llc.training.checkpoints import load_checkpoints
from grokking_llc.training.train import train, train_run
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

from .helpers import SMALL_RUN, plain_training_loop

BASE = SMALL_RUN  # the run of test_train.py, here trained in stacks


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**BASE.to_dict(), **kw})


# one group: different seeds, lr, weight decay (0 included), max_steps, early-stop settings
GROUP = [
    cfg(),
    cfg(seed=1, lr=3e-3, weight_decay=0.0, max_steps=90),
    cfg(seed=2, weight_decay=1e-3, early_stop_acc=0.05, early_stop_patience=3),  # stops at 100
]


@pytest.fixture(scope="module")
def split():
    return make_split(BASE.p, BASE.train_frac, BASE.data_seed)


@pytest.fixture(scope="module")
def other_split():  # same number of training rows, other rows
    return make_split(BASE.p, BASE.train_frac, 1)


@pytest.fixture(scope="module")
def alone(split, other_split, tmp_path_factory):
    """The reference: each run of GROUP trained alone by train.train (the last on other_split)."""
    d = tmp_path_factory.mktemp("alone")
    splits = [split, split, other_split]
    return [train(c, s, d / str(i)) for i, (c, s) in enumerate(zip(GROUP, splits, strict=True))]


def _max_rel(a: pd.DataFrame, b: pd.DataFrame, col: str) -> float:
    return float(np.max(np.abs(a[col] - b[col]) / np.maximum(np.abs(b[col]), 1e-12)))


GROK = dict(p=23, train_frac=0.6, width=256, batch_size=128, checkpoint_every=25,
            early_stop_patience=3, max_steps=1500)  # fmt: skip


def _outputs(cfgs, splits, d: Path):
    names = [str(i) for i in range(len(cfgs))]
    train_many_run(
        cfgs, splits, log_paths=[d / f"log{n}.parquet" for n in names],
        checkpoints_paths=[d / f"ck{n}.pt" for n in names], work_dirs=[d / f"w{n}" for n in names],
    )  # fmt: skip
    return [file_digest(d / f"ck{n}.pt") for n in names]


@pytest.fixture(scope="module")
def uninterrupted(split, other_split, tmp_path_factory):
    return _outputs(GROUP, [split, split, other_split], tmp_path_factory.mktemp("whole"))


class Killed(Exception):
    pass


BASE_TINY = cfg(p=5, width=6, weight_decay=1e-3, batch_size=4, max_steps=24, checkpoint_every=8)


def cfg_tiny(**kw) -> TrainConfig:
    return TrainConfig(**{**BASE_TINY.to_dict(), **kw})


reference = plain_training_loop  # (log rows, {step: state dict}, final Adam)


@pytest.fixture(scope="module")
def split_tiny():
    return make_split(BASE_TINY.p, BASE_TINY.train_frac, BASE_TINY.data_seed)


@pytest.fixture(scope="module")
def split2():
    return make_split(BASE_TINY.p, BASE_TINY.train_frac, 3)


GROUP_TINY = [
    cfg_tiny(),
    cfg_tiny(seed=1, lr=3e-2, weight_decay=0.0, max_steps=13),  # ends between checkpoints
    cfg_tiny(seed=2, weight_decay=1e-3, early_stop_acc=0.0, early_stop_patience=2),  # stops at 8
    cfg_tiny(seed=3, lr=5e-3, weight_decay=5e-2),
]


def _compare(res, c, split_tiny):
    rows, weights, _ = reference(c, split_tiny)
    log = res.log
    assert list(log.columns) == ["step", "train_loss", "val_loss", "train_acc", "val_acc"]
    assert log["step"].tolist() == [r[0] for r in rows]
    for j, col in enumerate(log.columns[1:], start=1):
        np.testing.assert_allclose(
            log[col].to_numpy(), [r[j] for r in rows], rtol=1e-5, atol=1e-7, err_msg=col
        )
    assert res.checkpoints["steps"].tolist() == [r[0] for r in rows]
    for k, step in enumerate(res.checkpoints["steps"].tolist()):
        W, V = weights[step]["W"], weights[step]["V"]
        torch.testing.assert_close(res.checkpoints["params"]["W"][k], W, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(res.checkpoints["params"]["V"][k], V, rtol=1e-5, atol=1e-7)


def _bitwise(cs, splits, tmp_path):
    out = train_many(cs, splits, [tmp_path / str(i) for i in range(len(cs))])
    for res, c, s in zip(out, cs, splits, strict=True):
        _, weights, _ = reference(c, s)
        for k, step in enumerate(res.checkpoints["steps"].tolist()):
            assert torch.equal(res.checkpoints["params"]["W"][k], weights[step]["W"]), step
            assert torch.equal(res.checkpoints["params"]["V"][k], weights[step]["V"]), step


def test_matches_train_alone_to_tolerance(split, other_split, alone, tmp_path):
    got = train_many(GROUP, [split, split, other_split], [tmp_path / str(i) for i in range(3)])
    for ref, res in zip(alone, got, strict=True):
        assert res.log["step"].tolist() == ref.log["step"].tolist()
        for col in ("train_loss", "val_loss"):
            assert _max_rel(res.log, ref.log, col) <= 1e-4, col
        for col in ("train_acc", "val_acc"):
            assert np.allclose(res.log[col], ref.log[col], rtol=0, atol=1e-6), col
        for name, value in ref.checkpoints["params"].items():
            torch.testing.assert_close(res.checkpoints["params"][name], value, rtol=1e-4, atol=1e-6)
    # the early stop of the third run and the max_steps of the second are theirs alone
    assert [r.log["step"].iloc[-1] for r in got] == [r.log["step"].iloc[-1] for r in alone]
    assert alone[1].log["step"].iloc[-1] == 90 and alone[2].log["step"].iloc[-1] == 100


def test_matches_train_alone_bitwise_on_cpu(split, other_split, alone, tmp_path):
    """Measured, not promised by torch: the hand gradient and the replayed Adam give the very
    bits of autograd + torch.optim.Adam (torch 2.13, CPU). A failure here after a torch upgrade
    is a finding to report; the contract is the tolerance test above."""
    got = train_many(GROUP, [split, split, other_split], [tmp_path / str(i) for i in range(3)])
    for ref, res in zip(alone, got, strict=True):
        pd.testing.assert_frame_equal(res.log, ref.log, check_exact=True)
        for name, value in ref.checkpoints["params"].items():
            assert torch.equal(res.checkpoints["params"][name], value), name


@pytest.mark.parametrize("threads", [1, 2])
def test_a_run_does_not_depend_on_its_stack(split, other_split, tmp_path, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        solo = train_many(GROUP[:1], [split], [tmp_path / "solo"])[0]
        group = train_many(
            [GROUP[2], GROUP[0], GROUP[1]], [other_split, split, split],
            [tmp_path / "g2", tmp_path / "g0", tmp_path / "g1"],
        )[1]  # fmt: skip
    finally:
        torch.set_num_threads(before)
    pd.testing.assert_frame_equal(solo.log, group.log, check_exact=True)
    for name, value in solo.checkpoints["params"].items():
        assert torch.equal(group.checkpoints["params"][name], value), name
    for step in solo.log["step"]:
        path = train_mod.ckpt_path
        assert file_digest(path(tmp_path / "solo", step)) == file_digest(
            path(tmp_path / "g0", step)
        )


def test_grokking_and_early_stop_steps_match_train_alone(tmp_path):
    """p=23, K=256, lr 1e-3, wd 1e-3: memorised by step ~125, generalised at ~475 (measured)."""
    groks = TrainConfig(**GROK, lr=1e-3, weight_decay=1e-3)
    fast = TrainConfig(**GROK, lr=3e-3, weight_decay=1e-3, seed=1)
    split = make_split(23, 0.6, 0)
    ref = train(groks, split, tmp_path / "ref").log
    got = train_many([fast, groks], [split, split], [tmp_path / "a", tmp_path / "b"])[1].log

    def first(log, col):
        return int(log.loc[log[col] >= 0.99, "step"].iloc[0])

    assert first(ref, "train_acc") < first(ref, "val_acc") - 200  # it groks, with a delay
    assert first(got, "val_acc") == first(ref, "val_acc")
    assert first(got, "train_acc") == first(ref, "train_acc")
    stop = int(ref["step"].iloc[-1])
    assert stop < groks.max_steps and int(got["step"].iloc[-1]) == stop  # the early stop
    assert _max_rel(got, ref, "val_loss") <= 1e-4


@pytest.mark.parametrize(
    ("point", "step", "nth"),
    [
        ("state_written", 40, 1),  # run 0 at step 40, runs 1 and 2 still at step 20
        ("ckpt_written", 60, 2),  # run 1's weights file of step 60 written, its state not
        ("state_rotated", 20, 3),  # run 2 has only state.prev.pt of step 0
        ("state_written", 100, 1),  # run 1 already finished (max_steps 90)
    ],
)
def test_resume_after_kill_is_exact(
    split, other_split, uninterrupted, tmp_path, monkeypatch, point, step, nth
):
    seen = []

    def hook(where, at):
        if where == point and at == step:
            seen.append(at)
            if len(seen) == nth:
                raise Killed

    splits = [split, split, other_split]
    monkeypatch.setattr(train_mod, "_FAULT_HOOK", hook)
    with pytest.raises(Killed):
        _outputs(GROUP, splits, tmp_path)
    monkeypatch.setattr(train_mod, "_FAULT_HOOK", None)
    assert _outputs(GROUP, splits, tmp_path) == uninterrupted


def test_train_and_train_many_resume_each_other(split, tmp_path):
    """The state files are train.py's: either function continues what the other began."""
    c = GROUP[0]
    whole = train(c, split, tmp_path / "whole")
    assert train_many([c], [split], [tmp_path / "a"], _stop_after_step=40) is None
    assert train(c, split, tmp_path / "ref", _stop_after_step=40) is None
    for name in ("state.pt", "state.prev.pt", "ckpt_0000040.pt"):  # the very same bytes
        assert file_digest(tmp_path / "a" / name) == file_digest(tmp_path / "ref" / name)
    from_many = train(c, split, tmp_path / "a")
    assert train(c, split, tmp_path / "b", _stop_after_step=60) is None
    from_train = train_many([c], [split], [tmp_path / "b"])[0]
    for res in (from_many, from_train):
        pd.testing.assert_frame_equal(res.log, whole.log, check_exact=True)
        for name, value in whole.checkpoints["params"].items():
            assert torch.equal(res.checkpoints["params"][name], value), name


def test_outputs_are_what_train_run_writes(split, tmp_path):
    c = GROUP[0]
    train_run(c, split, log_path=tmp_path / "log_ref.parquet",
              checkpoints_path=tmp_path / "ck_ref.pt", work_dir=tmp_path / "w_ref")  # fmt: skip
    _outputs([c], [split], tmp_path)
    assert file_digest(tmp_path / "ck0.pt") == file_digest(tmp_path / "ck_ref.pt")
    ck = load_checkpoints(tmp_path / "ck0.pt", train_log=tmp_path / "log0.parquet")
    assert ck["run_id"] == c.run_id
    assert not (tmp_path / "w0").exists() and not (tmp_path / "w0.discard").exists()
    a, b = (hashlib.sha256(pd.read_parquet(tmp_path / f).to_csv().encode()).hexdigest()
            for f in ("log0.parquet", "log_ref.parquet"))  # fmt: skip
    assert a == b


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (dict(width=32), "width"),
        (dict(p=11, train_frac=0.6), "p"),
        (dict(batch_size=8), "batch_size"),
        (dict(checkpoint_every=10), "checkpoint_every"),
        (dict(train_frac=0.5), "n_train"),  # 24 training rows, not 29
    ],
)
def test_mismatched_group_is_refused_naming_the_key(split, tmp_path, change, key):
    other = cfg(**change)
    other_split = make_split(other.p, other.train_frac, 0)
    assert group_key(other) != group_key(BASE)
    with pytest.raises(ValueError, match=f"differ in '{key}'"):
        train_many([BASE, other], [split, other_split], [tmp_path / "a", tmp_path / "b"])


def test_what_can_be_batched(split, tmp_path):
    assert can_batch(BASE) and group_key(BASE) == group_key(GROUP[1])
    for bad in (cfg(loss="cross_entropy"), cfg(model="transformer")):
        assert not can_batch(bad)
        with pytest.raises(ValueError, match="cannot be batched"):
            train_many([bad], [split], [tmp_path / "a"])
    with pytest.raises(ValueError, match="share a work dir"):
        train_many([BASE, GROUP[1]], [split, split], [tmp_path / "a", tmp_path / "a"])


def test_a_group_equals_the_plain_loop_reference(split_tiny, split2, tmp_path):
    splits = [split_tiny, split2, split_tiny, split2]
    out = train_many(GROUP_TINY, splits, [tmp_path / str(i) for i in range(4)])
    assert len(out) == 4
    for res, c, s in zip(out, GROUP_TINY, splits, strict=True):
        _compare(res, c, s)
    assert out[1].log["step"].tolist() == [0, 8, 13]
    assert out[2].log["step"].tolist() == [0, 8]


def test_one_run_alone_and_the_state_file_is_adams(split_tiny, tmp_path):
    c = cfg_tiny(seed=5, max_steps=10, checkpoint_every=5)
    [res] = train_many([c], [split_tiny], [tmp_path / "w"])
    _compare(res, c, split_tiny)
    _, _, opt = reference(c, split_tiny)
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


def test_resume_of_lagging_runs_equals_the_reference(split_tiny, split2, tmp_path):
    dirs = [tmp_path / str(i) for i in range(2)]
    c0, c1 = cfg_tiny(seed=7, max_steps=24), cfg_tiny(seed=8, lr=2e-2, max_steps=20)
    # run 0 first alone to step 16 (killed), run 1 not at all
    assert train_many([c0], [split_tiny], dirs[:1], _stop_after_step=16) is None
    st = torch.load(dirs[0] / "state.pt", weights_only=False)
    assert st["step"] == 16
    out = train_many([c0, c1], [split_tiny, split2], dirs)
    _compare(out[0], c0, split_tiny)
    _compare(out[1], c1, split2)
    # a kill request is honoured at the first checkpoint at or after the step
    d = tmp_path / "k"
    assert train_many([c0], [split_tiny], [d], _stop_after_step=9) is None
    assert torch.load(d / "state.pt", weights_only=False)["step"] == 16


def test_progress_is_logged_when_due(split_tiny, tmp_path, caplog):
    c = cfg_tiny(max_steps=8, checkpoint_every=4)
    with caplog.at_level(logging.INFO, logger="grokking_llc.training.train_many"):
        train_many([c], [split_tiny], [tmp_path / "a"], progress_every_s=0.0)
    msgs = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("train_many: 1 runs at step 4, ") and m.endswith(" run-steps/s") for m in msgs
    )
    # the report follows the drop of finished runs: none left at step 8
    assert any(m.startswith("train_many: 0 runs at step 8, ") for m in msgs)
    assert f"{c.run_id} done at step 8" in msgs
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="grokking_llc.training.train_many"):
        train_many([c], [split_tiny], [tmp_path / "b"], progress_every_s=1e9)
    assert not any(r.getMessage().startswith("train_many: 1 runs") for r in caplog.records)
    caplog.clear()
    e = cfg_tiny(early_stop_acc=0.0, early_stop_patience=2, checkpoint_every=4)
    with caplog.at_level(logging.INFO, logger="grokking_llc.training.train_many"):
        train_many([e], [split_tiny], [tmp_path / "c"])
    assert f"{e.run_id} early stop at step 4" in [r.getMessage() for r in caplog.records]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="grokking_llc.training.train_many"):
        train_many([c], [split_tiny], [tmp_path / "a"])  # already done: resumed, nothing to train
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
    assert can_batch(BASE_TINY)
    assert not can_batch(cfg_tiny(loss="cross_entropy"))
    assert not can_batch(cfg_tiny(model="transformer"))
    assert not can_batch(cfg_tiny(model_options={"x": 1}))
    key = group_key(cfg_tiny(model_options={"b": 1, "a": 2}))
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
    assert json.loads(group_key(BASE_TINY)[1][1]) == {}


def test_scalar_step_dtype_follows_the_default():
    s = _scalar_step(7)
    assert s.dtype == torch.float32 and s.item() == 7.0 and s.shape == ()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert _scalar_step(3).dtype == torch.float64
    finally:
        torch.set_default_dtype(old)


def test_group_checks_with_their_messages(split_tiny, split2, tmp_path):
    d = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(ValueError, match=r"^train_many: no runs given$"):
        train_many([], [], [])
    with pytest.raises(
        ValueError,
        match=r"^train_many: 2 configs, 1 splits and 2 work dirs: "
        r"one of each per run$",
    ):
        train_many([BASE_TINY, BASE_TINY], [split_tiny], d)
    with pytest.raises(ValueError, match=r"^train_many: 1 configs, 1 splits and 2 work dirs"):
        train_many([BASE_TINY], [split_tiny], d)
    bad = cfg_tiny(loss="cross_entropy")
    with pytest.raises(
        ValueError,
        match=rf"^train_many: run {bad.run_id} cannot be batched "
        r"\(model 'quadratic', model_options \{\}, loss "
        r"'cross_entropy'; supported: models \('quadratic',\) "
        r"without options, losses \('centred_mse',\)\); train "
        r"it alone$",
    ):
        train_many([BASE_TINY, bad], [split_tiny, split_tiny], d)
    w = cfg_tiny(width=7)
    with pytest.raises(
        ValueError,
        match=rf"^train_many: runs differ in 'width': {BASE_TINY.run_id} "
        rf"has 6, {w.run_id} has 7$",
    ):
        train_many([BASE_TINY, w], [split_tiny, split_tiny], d)
    small = make_split(5, 0.4, 0)
    with pytest.raises(
        ValueError,
        match=rf"^train_many: runs differ in 'n_train' \(training "
        rf"rows of the split\): {BASE_TINY.run_id} has 15, "
        rf"{BASE_TINY.run_id} has 10$",
    ):
        train_many([BASE_TINY, BASE_TINY], [split_tiny, small], d)
    with pytest.raises(
        ValueError,
        match=rf"^train_many: the split of {BASE_TINY.run_id} has 24 rows, "
        r"not p\^2 = 25$",
    ):
        train_many([BASE_TINY], [split_tiny.iloc[1:]], d[:1])
    with pytest.raises(ValueError, match=r"^train_many: two runs share a work dir$"):
        train_many(
            [BASE_TINY, BASE_TINY],
            [split_tiny, split_tiny],
            [tmp_path / "a", tmp_path / "x" / ".." / "a"],
        )
    # the third run differing is found too (not only the second)
    with pytest.raises(ValueError, match="differ in 'width'"):
        train_many(
            [BASE_TINY, BASE_TINY, w],
            [split_tiny] * 3,
            [tmp_path / "p", tmp_path / "q", tmp_path / "r"],
        )


def test_train_many_run_outputs_hooks_and_leftovers(
    split_tiny, split2, tmp_path, caplog, monkeypatch
):
    cs = [
        cfg_tiny(max_steps=8, checkpoint_every=4),
        cfg_tiny(seed=4, max_steps=8, checkpoint_every=4),
    ]
    work = [tmp_path / "w0", tmp_path / "w1"]
    trash = train_mod._discard_dir(work[0])
    trash.mkdir()
    (trash / "junk").write_text("x")
    points = []
    monkeypatch.setattr(train_mod, "_FAULT_HOOK", lambda point, step: points.append(point))
    with caplog.at_level(logging.WARNING, logger="grokking_llc.training.train_many"):
        out = train_many_run(
            cs,
            [split_tiny, split2],
            log_paths=[tmp_path / "l0.parquet", tmp_path / "l1.parquet"],
            checkpoints_paths=[tmp_path / "c0.pt", tmp_path / "c1.pt"],
            work_dirs=work,
        )
    assert f"removing {trash}, left by a clean-up that was interrupted" in caplog.text
    assert not trash.exists()
    for i, (c, s) in enumerate(zip(cs, [split_tiny, split2], strict=True)):
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
            [split_tiny, split2],
            log_paths=[tmp_path / "l"],
            checkpoints_paths=[tmp_path / "c0", tmp_path / "c1"],
            work_dirs=work,
        )
    for lp, cp in (([1, 2], [1]), ([1, 2], [1, 2])):
        with pytest.raises(ValueError, match="train_many_run: one log path"):
            train_many_run(
                cs, [split_tiny, split2], log_paths=lp, checkpoints_paths=cp, work_dirs=work[:1]
            )


def test_bitwise_equal_to_the_autograd_adam_loop(tmp_path):
    """The module docstring's measured claim (the hand gradient replays autograd op by op),
    at p = 7 as in test_train_many.py."""
    c7 = cfg(width=8, batch_size=8, max_steps=20, checkpoint_every=10)  # BASE, smaller
    cs = [c7, TrainConfig(**{**c7.to_dict(), "seed": 1, "lr": 2e-2, "weight_decay": 0.0})]
    split7 = make_split(7, 0.6, 0)
    _bitwise(cs, [split7, split7], tmp_path)


@pytest.mark.xfail(
    strict=True,
    reason="measured, not promised (module docstring): at p = 5 (K 6 or 8, B 4 or 8) train_many "
    "differs from the autograd + torch.optim.Adam loop (and from train.train) in the last bits "
    "(~3e-8 after 16 steps); the tolerance contract holds",
)
def test_bitwise_at_p5_too(split_tiny, tmp_path):
    _bitwise([cfg_tiny(seed=11, max_steps=16)], [split_tiny], tmp_path)


def test_fault_points_in_order_and_digests_checked(split_tiny, tmp_path, monkeypatch):
    c = cfg_tiny(max_steps=8, checkpoint_every=4)
    points = []
    monkeypatch.setattr(train_mod, "_FAULT_HOOK", lambda point, step: points.append((point, step)))
    train_many([c], [split_tiny], [tmp_path / "a" / "b" / "c"])  # parents made as needed
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
        train_many([c], [split_tiny], [tmp_path / "t"])


def test_the_step_zero_state_has_no_adam_state_yet(split_tiny, tmp_path):
    c = cfg_tiny(max_steps=8, checkpoint_every=4)
    assert train_many([c], [split_tiny], [tmp_path / "a"], _stop_after_step=4) is None
    prev = torch.load(tmp_path / "a" / "state.prev.pt", weights_only=False)
    assert prev["step"] == 0 and prev["optimizer"]["state"] == {}
    now = torch.load(tmp_path / "a" / "state.pt", weights_only=False)
    assert float(now["optimizer"]["state"][0]["step"]) == 4.0


def test_early_stop_accuracy_reached_exactly_counts(split_tiny, tmp_path):
    rows, _, _ = reference(cfg_tiny(), split_tiny)
    # validation accuracy at initialisation, as the float32 mean train.evaluate reports
    acc0 = float(torch.tensor(rows[0][4], dtype=torch.float32))
    c = cfg_tiny(early_stop_acc=acc0, early_stop_patience=1)
    [res] = train_many([c], [split_tiny], [tmp_path / "a"])
    assert res.log["step"].tolist() == [0]  # stopped before training
    _compare(res, c, split_tiny)


def test_progress_rate_with_a_frozen_clock(split_tiny, tmp_path, caplog, monkeypatch):
    import time

    monkeypatch.setattr(time, "perf_counter", lambda: 100.0)
    c = cfg_tiny(max_steps=8, checkpoint_every=4)
    with caplog.at_level(logging.INFO, logger="grokking_llc.training.train_many"):
        train_many(
            [c, cfg_tiny(seed=9, max_steps=8, checkpoint_every=4)],
            [split_tiny, split_tiny],
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
    c = cfg_tiny(max_steps=6, checkpoint_every=3)
    [res] = train_many([c], [df], [tmp_path / "a"])
    _compare(res, c, df)
