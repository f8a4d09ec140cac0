"""Runs trained together (grokking_llc.training.train_many, SPEC section 3) against the reference,
``grokking_llc.training.train.train`` run alone: logs, checkpoints, grokking and early-stop steps,
independence from the other runs of the stack, resume after a kill, and the group checks."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from grokking_llc.core.data import make_split
from grokking_llc.core.io import file_digest
from grokking_llc.core.settings import TrainConfig
from grokking_llc.training import train as train_mod
from grokking_llc.training.checkpoints import load_checkpoints
from grokking_llc.training.train import train, train_run
from grokking_llc.training.train_many import can_batch, group_key, train_many, train_many_run

BASE = TrainConfig(
    p=7, train_frac=0.6, width=16, lr=1e-2, weight_decay=1e-4, batch_size=16,
    max_steps=120, checkpoint_every=20,
)  # fmt: skip


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


GROK = dict(p=23, train_frac=0.6, width=256, batch_size=128, checkpoint_every=25,
            early_stop_patience=3, max_steps=1500)  # fmt: skip


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
