"""grokking_llc.training.train: one run's training loop, its checkpoints and logs, early stopping,
and resuming after a kill at any point to identical bytes (SPEC section 3)."""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import pickle
import re
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

import grokking_llc.training.checkpoints as ck_mod
import grokking_llc.training.train as tr
from grokking_llc.core.data import make_split
from grokking_llc.core.io import (
    CheckpointFileError,
    CorruptFileError,
    UnsafeFileError,
    file_digest,
    parquet_provenance,
    settings_hash,
    torch_load,
    torch_save,
)
from grokking_llc.core.model import build_model
from grokking_llc.core.settings import TrainConfig
from grokking_llc.training import train as train_mod
from grokking_llc.training.checkpoints import CheckpointMismatchError, load_checkpoints
from grokking_llc.training.train import (
    LOG_COLUMNS,
    PREV_STATE_FILE,
    STATE_FILE,
    ckpt_path,
    train,
    train_run,
)

from .helpers import SMALL_RUN, plain_training_loop

CFG = SMALL_RUN


@pytest.fixture(scope="module")
def split():
    return make_split(CFG.p, CFG.train_frac, CFG.data_seed)


CFG_TINY = TrainConfig(
    p=5, train_frac=0.6, width=4, lr=1e-2, weight_decay=1e-3, batch_size=4, max_steps=50,
    checkpoint_every=20, early_stop_patience=100, early_stop_acc=0.99, seed=3,
)  # fmt: skip


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**CFG_TINY.to_dict(), **kw})


@pytest.fixture(scope="module")
def split_tiny():
    return make_split(CFG_TINY.p, CFG_TINY.train_frac, CFG_TINY.data_seed)


def reference(c: TrainConfig, split_tiny):
    """SPEC section 3 written out (:func:`plain_training_loop`): the log and the weights at
    every checkpoint."""
    rows, weights, _ = plain_training_loop(c, split_tiny)
    return pd.DataFrame(rows, columns=list(tr.LOG_COLUMNS)), list(weights.values())


def assert_matches_reference(res, c, split_tiny):
    want_log, want_w = reference(c, split_tiny)
    pd.testing.assert_frame_equal(res.log, want_log, check_exact=True)
    assert res.checkpoints["steps"].tolist() == want_log["step"].tolist()
    assert res.checkpoints["steps"].dtype == torch.long
    for name in want_w[0]:
        torch.testing.assert_close(
            res.checkpoints["params"][name], torch.stack([w[name] for w in want_w]),
            rtol=0, atol=0,
        )  # fmt: skip


@pytest.fixture
def stopped(split_tiny, tmp_path):
    """A work dir stopped after the checkpoint at step 20, and its state."""
    work = tmp_path / "w"
    tr.train(CFG_TINY, split_tiny, work, _stop_after_step=20)
    return work, torch_load(work / tr.STATE_FILE)


def good_ckpts():
    return {"steps": torch.tensor([0, 20, 40]), "params": {"W": torch.zeros(3, 2)}}


class Clock:
    """A stand-in for the time module whose perf_counter advances 1 s per call."""

    def __init__(self, tick=1.0):
        self.now, self.tick = 0.0, tick

    def perf_counter(self):
        self.now += self.tick
        return self.now


def progress(messages):
    return [m.split("  ")[0] + " " + m.rsplit("  ", 1)[1] for m in messages if "steps/s" in m]


# 7 checkpoints: steps 0, 10, ..., 60
CFG_RESUME = TrainConfig(
    p=7, train_frac=0.6, width=8, lr=1e-2, weight_decay=1e-4, batch_size=8,
    max_steps=60, checkpoint_every=10,
)  # fmt: skip


STEPS = list(range(0, 61, 10))


REPO = pathlib.Path(__file__).resolve().parents[2]


class Killed(BaseException):
    """An injected kill: a BaseException, so no ``except Exception`` in the code swallows it."""


class Evil:
    """Unpickling this calls ``Path.touch(marker)``: a stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def sha(path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def paths(root):
    root = pathlib.Path(root)
    return dict(
        log_path=root / "train_log.parquet",
        checkpoints_path=root / "checkpoints.pt",
        work_dir=root / "partial",
    )


def run(split_resume, root, **kw):
    return train_run(kw.pop("cfg", CFG_RESUME), split_resume, **paths(root), **kw)


def drop_outputs(root):
    """What Snakemake does to the outputs of a job that did not finish."""
    for key in ("log_path", "checkpoints_path"):
        paths(root)[key].unlink(missing_ok=True)


@pytest.fixture(scope="module")
def split_resume():
    return make_split(CFG_RESUME.p, CFG_RESUME.train_frac, CFG_RESUME.data_seed)


@pytest.fixture(scope="module")
def reference_resume(split_resume, tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    res = run(split_resume, root)
    p = paths(root)
    assert res.log["step"].tolist() == STEPS
    return {"ckpt": sha(p["checkpoints_path"]), "log": sha(p["log_path"]), "root": root}


def assert_matches_reference_resume(root, reference_resume):
    p = paths(root)
    assert sha(p["checkpoints_path"]) == reference_resume["ckpt"]
    assert sha(p["log_path"]) == reference_resume["log"]
    assert not p["work_dir"].exists()
    assert not p["work_dir"].with_name("partial.discard").exists()


class Hook:
    """Raise :class:`Killed` at the ``nth`` call at ``point`` (and ``step``, when given)."""

    def __init__(self, point, step=None, nth=1):
        self.point, self.step, self.nth, self.seen, self.calls = point, step, nth, 0, []

    def __call__(self, point, step):
        self.calls.append((point, step))
        if point == self.point and (self.step is None or step == self.step):
            self.seen += 1
            if self.seen == self.nth:
                raise Killed(f"{point}@{step}")


# Every boundary between two writes of training and of its final consolidation and clean-up.
KILL_POINTS = [
    ("start", None, 1),  # before the first checkpoint
    ("ckpt_written", 0, 1),  # first weights file written, no state yet
    ("state_rotated", 0, 1),
    ("state_written", 0, 1),
    ("ckpt_written", 30, 1),  # between a weights file and its state
    ("state_rotated", 30, 1),  # state.pt moved to state.prev.pt, new one not yet written
    ("state_written", 30, 1),
    ("ckpt_written", 60, 1),  # the last checkpoint
    ("state_written", 60, 1),  # after the last checkpoint, before consolidation
    ("trained", None, 1),
    ("checkpoints_written", None, 1),  # during consolidation: checkpoints.pt but no log
    ("outputs_written", None, 1),  # both outputs, clean-up not started
    ("partial_renamed", None, 1),  # work dir renamed aside, nothing deleted
    ("cleanup_file", None, 1),  # during the clean-up of partial/
    ("cleanup_file", None, 5),
]


SIGKILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    from grokking_llc.training import train as t
    from grokking_llc.core.settings import TrainConfig
    from grokking_llc.core.data import make_split
    cfg = TrainConfig(**{cfg!r})
    point, step = {point!r}, {step!r}
    def hook(p, s):
        if p == point and (step is None or s == step):
            os.kill(os.getpid(), signal.SIGKILL)
    t._FAULT_HOOK = hook
    root = {root!r}
    t.train_run(cfg, make_split(cfg.p, cfg.train_frac, cfg.data_seed),
                log_path=root + "/train_log.parquet", checkpoints_path=root + "/checkpoints.pt",
                work_dir=root + "/partial")
    sys.exit(3)
    """
)


def test_log_schema_and_checkpoints(split, tmp_path):
    res = train(CFG, split, tmp_path / "w")
    assert tuple(res.log.columns) == LOG_COLUMNS
    assert res.log["step"].tolist() == list(range(0, CFG.max_steps + 1, CFG.checkpoint_every))
    assert res.checkpoints["steps"].tolist() == res.log["step"].tolist()
    assert res.checkpoints["params"]["W"].shape == (7, 14, 16)
    assert res.log["train_loss"].iloc[-1] < res.log["train_loss"].iloc[0]


def test_same_seed_same_numbers(split, tmp_path):
    a = train(CFG, split, tmp_path / "a")
    b = train(CFG, split, tmp_path / "b")
    pd.testing.assert_frame_equal(a.log, b.log)
    assert torch.equal(a.checkpoints["params"]["V"], b.checkpoints["params"]["V"])
    c = train(TrainConfig(**{**CFG.to_dict(), "seed": 1}), split, tmp_path / "c")
    assert not torch.equal(a.checkpoints["params"]["V"], c.checkpoints["params"]["V"])


@pytest.mark.parametrize("kill_at", [20, 60, 100])
def test_resume_after_interruption_gives_uninterrupted_result(split, tmp_path, kill_at):
    whole = train(CFG, split, tmp_path / "whole")
    work = tmp_path / "killed"
    assert train(CFG, split, work, _stop_after_step=kill_at) is None  # the "kill"
    # a stray temporary file, as a kill during a write would leave, is ignored
    (work / ".state.pt.abc.tmp").write_bytes(b"garbage")
    resumed = train(CFG, split, work)
    pd.testing.assert_frame_equal(whole.log, resumed.log)
    for name, value in whole.checkpoints["params"].items():
        assert torch.equal(value, resumed.checkpoints["params"][name]), name


def test_early_stop(split, tmp_path):
    cfg = TrainConfig(**{**CFG.to_dict(), "early_stop_acc": 0.0, "early_stop_patience": 3})
    res = train(cfg, split, tmp_path / "w")
    # the accuracy condition holds at every checkpoint: steps 0, 20, 40 make three
    assert res.log["step"].tolist() == [0, 20, 40]


def test_train_run_writes_outputs_and_cleans_up(split, tmp_path):
    work = tmp_path / "partial"
    train_run(
        CFG, split, log_path=tmp_path / "log.parquet", checkpoints_path=tmp_path / "ck.pt",
        work_dir=work,
    )  # fmt: skip
    assert not work.exists() and not (tmp_path / "partial.discard").exists()
    assert tuple(pd.read_parquet(tmp_path / "log.parquet").columns) == LOG_COLUMNS
    ck = load_checkpoints(tmp_path / "ck.pt", train_log=tmp_path / "log.parquet")
    assert ck["run_id"] == CFG.run_id and ck["config"] == CFG.to_dict()
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_refuses_other_runs_state(split, tmp_path):
    train(CFG, split, tmp_path / "w", _stop_after_step=20)
    other = TrainConfig(**{**CFG.to_dict(), "lr": 5e-3})
    with pytest.raises(RuntimeError, match="belongs to run"):
        train(other, split, tmp_path / "w")


def test_cuda_requested_without_gpu_is_a_clear_error(split, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        train(CFG, split, tmp_path / "w", device="cuda")


def test_training_matches_the_reference_loop_with_a_last_checkpoint_at_max_steps(
    split_tiny, tmp_path
):
    work = tmp_path / "nested" / "w"  # parents are made
    res = tr.train(CFG_TINY, split_tiny, work)
    assert res.log["step"].tolist() == [0, 20, 40, 50]
    assert_matches_reference(res, CFG_TINY, split_tiny)
    files = sorted(p.name for p in work.iterdir())
    assert files == ["ckpt_0000000.pt", "ckpt_0000020.pt", "ckpt_0000040.pt",
                     "ckpt_0000050.pt", "state.prev.pt", "state.pt"]  # fmt: skip


def test_other_seeds_rates_and_batches_are_used(split_tiny, tmp_path):
    for k, c in enumerate([cfg(seed=4), cfg(lr=3e-2, weight_decay=0.5), cfg(batch_size=7),
                           cfg(max_steps=7, checkpoint_every=3)]):  # fmt: skip
        res = tr.train(c, split_tiny, tmp_path / f"w{k}")
        assert_matches_reference(res, c, split_tiny)
    assert res.log["step"].tolist() == [0, 3, 6, 7]


def test_early_stop_after_patience_checkpoints_at_the_threshold(split_tiny, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    want, _ = reference(cfg(max_steps=200), split_tiny)
    accs = want["val_acc"].tolist()
    # a threshold equal to an accuracy reached: ">=" counts it
    thr = sorted(accs)[-1]
    c = cfg(max_steps=200, early_stop_acc=thr, early_stop_patience=2)
    res = tr.train(c, split_tiny, tmp_path / "w")
    assert_matches_reference(res, c, split_tiny)
    streaks = [tr.trailing_streak([{"val_acc": a} for a in accs[: i + 1]], thr)
               for i in range(len(accs))]  # fmt: skip
    stop = next((i for i, s in enumerate(streaks) if s >= 2), len(accs) - 1)
    assert len(res.log) == stop + 1
    if stop < len(accs) - 1:
        assert f"{c.run_id} early stop at step {20 * stop}" in caplog.messages
    state = torch_load(tmp_path / "w" / tr.STATE_FILE)
    assert state["streak"] == streaks[stop]
    # every checkpoint over the threshold: stops at the patience-th (step 0 counts)
    c = cfg(early_stop_acc=0.0, early_stop_patience=1)
    res = tr.train(c, split_tiny, tmp_path / "once")
    assert res.log["step"].tolist() == [0]
    assert f"{c.run_id} early stop at step 0" in caplog.messages
    # an early stop already reached when resuming: nothing more to train
    again = tr.train(c, split_tiny, tmp_path / "once")
    assert again.log["step"].tolist() == [0]


def test_progress_lines(split_tiny, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    res = tr.train(CFG_TINY, split_tiny, tmp_path / "a", progress_every_s=0.0)
    lines = [m for m in caplog.messages if " step " in m and "steps/s" in m]
    assert len(lines) == 3
    r = res.log.iloc[1]
    want = (f"{CFG_TINY.run_id} step 20/50  train loss {r.train_loss:.3g} acc {r.train_acc:.3f}  "
            f"val loss {r.val_loss:.3g} acc {r.val_acc:.3f}  ")  # fmt: skip
    assert lines[0].startswith(want) and re.fullmatch(r".*  \d+ steps/s", lines[0])
    assert lines[2].startswith(f"{CFG_TINY.run_id} step 50/50  ")
    caplog.clear()
    tr.train(CFG_TINY, split_tiny, tmp_path / "b", progress_every_s=1e9)
    lines = [m for m in caplog.messages if "steps/s" in m]
    assert len(lines) == 1 and lines[0].startswith(f"{CFG_TINY.run_id} step 50/50  ")


def test_state_file_contents_and_rotation(split_tiny, tmp_path):
    work = tmp_path / "w"
    assert tr.train(CFG_TINY, split_tiny, work, _stop_after_step=30) is None  # stops after step 40
    state = torch_load(work / tr.STATE_FILE)
    prev = torch_load(work / tr.PREV_STATE_FILE)
    assert set(state) == {"format", "run_id", "config", "step", "streak", "log", "digests",
                          "model", "optimizer", "generator"}  # fmt: skip
    assert state["format"] == 2 and state["run_id"] == CFG_TINY.run_id
    assert state["config"] == CFG_TINY.to_dict()
    assert state["step"] == 40 and prev["step"] == 20
    assert [r["step"] for r in state["log"]] == [0, 20, 40]
    assert list(state["log"][0]) == list(tr.LOG_COLUMNS)
    assert state["streak"] == 0
    assert state["digests"] == [file_digest(tr.ckpt_path(work, s)) for s in (0, 20, 40)]
    assert state["generator"].dtype == torch.uint8
    want_log, want_w = reference(CFG_TINY, split_tiny)
    assert [tuple(r.values()) for r in state["log"]] == [
        tuple(row) for row in want_log.iloc[:3].itertuples(index=False)
    ]
    for name, value in want_w[2].items():
        assert torch.equal(state["model"][name], value)
        assert torch.equal(torch_load(tr.ckpt_path(work, 40))[name], value)
    assert state["optimizer"]["param_groups"][0]["lr"] == CFG_TINY.lr
    # resuming from it ends with the uninterrupted numbers
    assert_matches_reference(tr.train(CFG_TINY, split_tiny, work), CFG_TINY, split_tiny)


def test_fault_hook_sees_every_boundary_in_order(split_tiny, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(tr, "_FAULT_HOOK", lambda point, step: seen.append((point, step)))
    c = cfg(max_steps=20)
    tr.train_run(c, split_tiny, log_path=tmp_path / "log.parquet",
                 checkpoints_path=tmp_path / "ck.pt", work_dir=tmp_path / "partial")  # fmt: skip
    per = ["ckpt_written", "state_rotated", "state_written"]
    assert seen == (
        [("start", -1)] + [(p, 0) for p in per] + [(p, 20) for p in per]
        + [("trained", 20), ("checkpoints_written", -1), ("outputs_written", -1),
           ("partial_renamed", -1)]
        + [("cleanup_file", -1)] * 4  # two weights files, the state and the previous state
    )  # fmt: skip


def test_resolve_device(monkeypatch):
    assert ck_mod.resolve_device("cpu") == torch.device("cpu")
    assert ck_mod.resolve_device("meta") == torch.device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ck_mod.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match=r"^device 'cuda:1' requested but CUDA is not avai"):
        ck_mod.resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ck_mod.resolve_device("auto") == torch.device("cuda")
    assert ck_mod.resolve_device("cuda:1") == torch.device("cuda:1")


def test_initial_state_is_seeded_and_uses_the_rates():
    c = cfg(lr=0.25, weight_decay=0.125, seed=9)
    gen, model, opt = tr._initial_state(c, torch.device("cpu"))
    g2 = torch.Generator().manual_seed(9)
    ref = build_model(c.model, c.p, width=c.width, generator=g2, options=c.model_options)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), ref.state_dict().items(),
                                strict=True):  # fmt: skip
        assert k == k2 and torch.equal(v, v2)
    assert torch.equal(gen.get_state(), g2.get_state())  # the same generator, advanced
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.Adam) and group["lr"] == 0.25
    assert group["weight_decay"] == 0.125
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]


def test_checkpoint_file_names(tmp_path):
    assert tr.ckpt_path(tmp_path, 20) == tmp_path / "ckpt_0000020.pt"
    assert tr.ckpt_path(str(tmp_path), 1234567) == tmp_path / "ckpt_1234567.pt"
    assert tr._ckpt_step(tmp_path / "ckpt_0000020.pt") == 20
    assert tr._ckpt_step(tmp_path / "ckpt.pt") is None
    assert tr._ckpt_step(tmp_path / "ckpt_x.pt") is None
    assert tr._ckpt_step(tmp_path / "ckpt_5_x.pt") is None  # everything after the first "_"
    assert tr._ckpt_step(tmp_path / "ckpt_x_5.pt") is None
    assert tr._discard_dir(tmp_path / "partial") == tmp_path / "partial.discard"


def test_trailing_streak_counts_from_the_end():
    rows = [{"val_acc": a} for a in (1.0, 0.5, 0.9, 0.95, 1.0)]
    assert tr.trailing_streak(rows, 0.9) == 3
    assert tr.trailing_streak(rows, 0.95) == 2
    assert tr.trailing_streak(rows, 1.01) == 0
    assert tr.trailing_streak(rows, 0.5) == 5
    assert tr.trailing_streak([], 0.5) == 0


def test_state_problems_each_named(stopped):
    work, state = stopped
    assert tr._state_problem(state, CFG_TINY, work) is None

    def problem(**changes):
        return tr._state_problem({**state, **changes}, CFG_TINY, work)

    assert tr._state_problem([], CFG_TINY, work) == "not a training state of this format"
    for key in tr._STATE_KEYS:
        broken = {k: v for k, v in state.items() if k != key}
        assert tr._state_problem(broken, CFG_TINY, work) == "not a training state of this format"
    with pytest.raises(RuntimeError, match=f"^{re.escape(str(work))} holds a state that belongs "
                       f"to run other, not {CFG_TINY.run_id}$"):  # fmt: skip
        problem(run_id="other")
    assert problem(format=1) == "state format 1, expected 2"
    disagree = "its log, digests and step disagree"
    assert problem(log=[], digests=[]) == disagree
    assert problem(log="x") == disagree
    assert problem(digests=state["digests"][:1]) == disagree
    assert problem(log=[{**r, "step": r["step"] + 1} for r in state["log"]]) == disagree
    assert problem(step=40) == disagree
    rows = state["log"]
    assert problem(log=[rows[0], rows[0] | {"step": 20}, rows[1] | {"step": 20}],
                   digests=[*state["digests"], state["digests"][1]], step=20) == (
        "its logged steps are not increasing")  # fmt: skip
    assert problem(streak=1) == "its early-stop streak 1 disagrees with its log"
    # the streak follows the logged accuracies and cfg.early_stop_acc (0.99): at it counts
    high = [r | {"val_acc": 0.99} for r in rows]
    assert problem(log=high, streak=2) is None
    assert problem(log=high) == "its early-stop streak 0 disagrees with its log"
    assert problem(log=[rows[0] | {"val_acc": 1.0}, rows[1] | {"val_acc": 0.5}]) is None
    assert problem(digests=["0" * 64, state["digests"][1]]) == (
        "checkpoint file ckpt_0000000.pt differs from the one the state recorded"
    )
    tr.ckpt_path(work, 20).unlink()
    assert problem() == "checkpoint file ckpt_0000020.pt of logged step 20 is missing"


def test_resume_prefers_the_state_and_tidies_the_dir(stopped, caplog):
    work, state = stopped
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    (work / ".state.pt.1.tmp").write_bytes(b"x")
    (work / ".ckpt.tmp").write_bytes(b"x")
    stray = tr.ckpt_path(work, 60)
    stray.write_bytes(b"not listed")
    got = tr._resume_state(CFG_TINY, work)
    assert got["step"] == 20
    assert not list(work.glob(".*.tmp")) and not stray.exists()
    assert (work / tr.PREV_STATE_FILE).exists()  # the previous state is kept, unread
    assert f"discarding {stray}: not a checkpoint of the state resumed from (step 20)" in (
        caplog.messages
    )
    assert sorted(p.name for p in work.iterdir()) == [
        "ckpt_0000000.pt", "ckpt_0000020.pt", "state.prev.pt", "state.pt",
    ]  # fmt: skip


def test_resume_falls_back_to_the_previous_state(stopped, split_tiny, caplog):
    work, state = stopped
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    (work / tr.STATE_FILE).write_bytes(b"garbage")
    with pytest.raises(CorruptFileError) as err:
        torch_load(work / tr.STATE_FILE)
    got = tr._resume_state(CFG_TINY, work)
    assert got["step"] == 0
    assert not (work / tr.PREV_STATE_FILE).exists() and (work / tr.STATE_FILE).exists()
    assert torch_load(work / tr.STATE_FILE)["step"] == 0
    assert not tr.ckpt_path(work, 20).exists() and tr.ckpt_path(work, 0).exists()
    assert f"discarding {work / tr.STATE_FILE}: {err.value}" in caplog.messages
    assert f"resuming {CFG_TINY.run_id} from the previous state {work / tr.PREV_STATE_FILE}" in (
        caplog.messages
    )
    assert_matches_reference(tr.train(CFG_TINY, split_tiny, work), CFG_TINY, split_tiny)


def test_resume_names_a_malformed_state(stopped, caplog):
    work, state = stopped
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    torch_save({**state, "log": [{"val_acc": 1.0}], "digests": ["d"], "step": None},
               work / tr.STATE_FILE)  # fmt: skip
    os.remove(work / tr.PREV_STATE_FILE)
    assert tr._resume_state(CFG_TINY, work) is None
    assert (
        f"discarding {work / tr.STATE_FILE}: its log, digests and step disagree" in caplog.messages
    )
    torch_save({**state, "log": [{"step": 0}], "digests": ["d"], "step": 0},
               work / tr.STATE_FILE)  # fmt: skip
    caplog.clear()
    assert tr._resume_state(CFG_TINY, work) is None
    assert caplog.messages[0] == (
        f"discarding {work / tr.STATE_FILE}: malformed state (KeyError: 'val_acc')"
    )


def test_without_a_usable_state_everything_is_discarded(stopped, caplog):
    work, state = stopped
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    for name in (tr.STATE_FILE, tr.PREV_STATE_FILE):
        (work / name).write_bytes(b"")
    assert tr._resume_state(CFG_TINY, work) is None
    assert list(work.iterdir()) == []
    assert (f"{work}: no consistent training state; discarding 2 checkpoint file(s) and "
            f"starting {CFG_TINY.run_id} over") in caplog.messages  # fmt: skip
    # an empty dir: nothing to say
    caplog.clear()
    assert tr._resume_state(CFG_TINY, work) is None
    assert caplog.messages == []
    # a previous state of another format is removed too
    torch_save({"format": 1}, work / tr.PREV_STATE_FILE)
    assert tr._resume_state(CFG_TINY, work) is None and not (work / tr.PREV_STATE_FILE).exists()


def test_a_resumed_run_logs_where_it_starts(stopped, split_tiny, caplog):
    work, _ = stopped
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    tr.train(CFG_TINY, split_tiny, work)
    assert f"resuming {CFG_TINY.run_id} from step 20 (2 checkpoints)" in caplog.messages


def test_collect_checkpoints_by_glob_or_by_steps(split_tiny, tmp_path):
    work = tmp_path / "w"
    res = tr.train(CFG_TINY, split_tiny, work)
    (work / "ckpt_x.pt").write_bytes(b"ignored")
    got = tr.collect_checkpoints(work)
    assert got["steps"].tolist() == [0, 20, 40, 50] and got["steps"].dtype == torch.long
    for name, value in res.checkpoints["params"].items():
        assert torch.equal(got["params"][name], value)
    sub = tr.collect_checkpoints(work, steps=[40, 0])
    assert sub["steps"].tolist() == [40, 0]
    assert torch.equal(sub["params"]["W"][0], res.checkpoints["params"]["W"][2])
    digests = [file_digest(tr.ckpt_path(work, s)) for s in (0, 20)]
    assert tr.collect_checkpoints(work, steps=[0, 20], digests=digests)["steps"].tolist() == [0, 20]
    with pytest.raises(CheckpointFileError, match="ckpt_0000020.pt is missing or differs"):
        tr.collect_checkpoints(work, steps=[0, 20], digests=[digests[0], digests[0]])
    with pytest.raises(ValueError):  # one digest for two files
        tr.collect_checkpoints(work, steps=[0, 20], digests=digests[:1])
    with pytest.raises(CheckpointFileError, match="ckpt_0000030.pt is missing or differs"):
        tr.collect_checkpoints(work, steps=[0, 30], digests=[digests[0], digests[0]])
    with pytest.raises(FileNotFoundError):
        tr.collect_checkpoints(work, steps=[30])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointFileError, match="empty: no checkpoint files to collect"):
        tr.collect_checkpoints(empty)


def test_train_run_outputs_and_a_leftover_discard_folder(split_tiny, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    work = tmp_path / "partial"
    trash = tmp_path / "partial.discard"
    (trash / "sub").mkdir(parents=True)
    (trash / "sub" / "f").write_bytes(b"x")
    res = tr.train_run(CFG_TINY, split_tiny, log_path=tmp_path / "log.parquet",
                       checkpoints_path=tmp_path / "ck.pt", work_dir=work)  # fmt: skip
    assert f"removing {trash}, left by a clean-up that was interrupted" in caplog.messages
    # the outputs and their digest records (grokking_llc.core.io); the work dir and the trash gone
    assert sorted(p.name for p in tmp_path.iterdir()) == [".digests", "ck.pt", "log.parquet"]
    assert sorted(p.name for p in (tmp_path / ".digests").iterdir()) == [
        "ck.pt.json", "log.parquet.json",
    ]  # fmt: skip
    ck = torch_load(tmp_path / "ck.pt")
    assert set(ck) == {"steps", "params", "config", "run_id", "provenance"}
    assert ck["steps"].tolist() == [0, 20, 40, 50] and ck["run_id"] == CFG_TINY.run_id
    assert ck["config"] == CFG_TINY.to_dict()
    assert ck["provenance"] == {
        "run_id": CFG_TINY.run_id,
        "settings": settings_hash(CFG_TINY.to_dict()),
    }
    assert parquet_provenance(tmp_path / "log.parquet") == ck["provenance"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "log.parquet"), res.log)
    assert_matches_reference(res, CFG_TINY, split_tiny)


def test_remove_discarded_deletes_files_and_folders(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(tr, "_FAULT_HOOK", lambda point, step: seen.append((point, step)))
    trash = tmp_path / "t.discard"
    (trash / "d" / "e").mkdir(parents=True)
    (trash / "a").write_bytes(b"1")
    (trash / "d" / "e" / "b").write_bytes(b"2")
    tr._remove_discarded(trash)
    assert not trash.exists() and seen == [("cleanup_file", -1)] * 2
    tr._remove_discarded(tmp_path / "nothing")  # absent: nothing to do


def test_train_run_refuses_a_log_that_differs_from_its_checkpoints(
    split_tiny, tmp_path, monkeypatch
):
    fake = tr.TrainResult(pd.DataFrame({"step": [0, 20]}),
                          {"steps": torch.tensor([0, 40]), "params": {}})  # fmt: skip
    monkeypatch.setattr(tr, "train", lambda *a, **k: fake)
    with pytest.raises(ck_mod.CheckpointMismatchError, match="partial: checkpoint steps differ"):
        tr.train_run(CFG_TINY, split_tiny, log_path=tmp_path / "l.parquet",
                     checkpoints_path=tmp_path / "c.pt", work_dir=tmp_path / "partial")  # fmt: skip
    assert not (tmp_path / "c.pt").exists()
    assert issubclass(ck_mod.CheckpointMismatchError, CheckpointFileError)


@pytest.mark.parametrize("change, problem", [
    ({"steps": None}, "'steps' is not a 1-D integer tensor"),
    ({"steps": torch.tensor([[0, 20, 40]])}, "'steps' is not a 1-D integer tensor"),
    ({"steps": torch.tensor([0.0, 20.0, 40.0])}, "'steps' is not a 1-D integer tensor"),
    ({"steps": torch.tensor([], dtype=torch.long)}, "'steps' is empty or not increasing"),
    ({"steps": torch.tensor([0, 20, 20])}, "'steps' is empty or not increasing"),
    ({"steps": torch.tensor([0, 40, 20])}, "'steps' is empty or not increasing"),
    ({"params": {}}, "'params' is not a non-empty mapping of tensors"),
    ({"params": [torch.zeros(3)]}, "'params' is not a non-empty mapping of tensors"),
    ({"params": {"W": torch.zeros(3, 2), "V": [1, 2, 3]}},
     "params['V'] does not hold one tensor per checkpoint"),
    ({"params": {"V": torch.tensor(1.0)}}, "params['V'] does not hold one tensor per checkpoint"),
    ({"params": {"V": torch.zeros(2, 2)}}, "params['V'] does not hold one tensor per checkpoint"),
])  # fmt: skip
def test_checkpoints_file_problems(tmp_path, change, problem):
    path = tmp_path / "ck.pt"
    torch_save({**good_ckpts(), **change}, path)
    with pytest.raises(CheckpointFileError, match=f"^{re.escape(f'{path}: {problem}')}$"):
        ck_mod.load_checkpoints(path)


def test_checkpoints_file_shape_problems(tmp_path):
    path = tmp_path / "ck.pt"
    for bad in ([1, 2], {"steps": torch.tensor([0])}, {"params": {}}):
        torch_save(bad, path)
        msg = f"{path}: not a checkpoints file (needs 'steps' and 'params')"
        with pytest.raises(CheckpointFileError, match=f"^{re.escape(msg)}$"):
            ck_mod.load_checkpoints(path)
    torch_save({**good_ckpts(), "steps": torch.tensor([5])} | {"params": {"W": torch.zeros(1)}},
               path)  # fmt: skip
    assert ck_mod.load_checkpoints(path)["steps"].tolist() == [5]


def test_load_checkpoints_against_the_training_log(tmp_path):
    path = tmp_path / "ck.pt"
    torch_save(good_ckpts(), path)
    log_path = tmp_path / "log.parquet"
    pd.DataFrame({"step": [0, 20, 40]}).to_parquet(log_path)
    assert ck_mod.load_checkpoints(path, train_log=log_path)["steps"].tolist() == [0, 20, 40]
    assert ck_mod.load_checkpoints(path, train_log=pd.DataFrame({"step": [0, 20, 40]})) is not None
    cases = [
        ([0, 30, 40], "the training log (3 checkpoints, steps 0..40; first difference at "
                      "checkpoint 1)"),
        ([0, 20], "the training log (2 checkpoints, steps 0..20; first difference at "
                  "checkpoint 2)"),
        ([0, 20, 40, 60], "the training log (4 checkpoints, steps 0..60; first difference at "
                          "checkpoint 3)"),
        ([], "the training log (no steps; first difference at checkpoint 0)"),
    ]  # fmt: skip
    for logged, says in cases:
        msg = (f"{path} (3 checkpoints, steps 0..40) does not match {says}: delete both and "
               "rerun the training job")  # fmt: skip
        with pytest.raises(ck_mod.CheckpointMismatchError, match=f"^{re.escape(msg)}$"):
            ck_mod.load_checkpoints(path, train_log=pd.DataFrame({"step": logged}))
    pd.DataFrame({"step": [0, 20], "val_acc": [1.0, 1.0]}).to_parquet(log_path)
    with pytest.raises(
        ck_mod.CheckpointMismatchError, match=re.escape(f"does not match {log_path} (2")
    ):
        ck_mod.load_checkpoints(path, train_log=log_path)


def test_checkpoint_state_is_one_checkpoint_by_index():
    ck = {"steps": torch.tensor([0, 20]), "params": {"W": torch.tensor([[1.0], [2.0]]),
                                                     "V": torch.tensor([3.0, 4.0])}}  # fmt: skip
    st = ck_mod.checkpoint_state(ck, 1)
    assert set(st) == {"W", "V"} and torch.equal(st["W"], torch.tensor([2.0]))
    assert float(st["V"]) == 4.0


def test_progress_every_and_the_rate_on_a_fake_clock(split_tiny, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    monkeypatch.setattr(tr, "time", Clock())
    # t0 = 1, last report 2, checkpoints read 3, 4, 5: each 1 s after the last report
    tr.train(CFG_TINY, split_tiny, tmp_path / "a", progress_every_s=1.0)
    rid = CFG_TINY.run_id
    assert progress(caplog.messages) == [f"{rid} step 20/50 10 steps/s",  # 20 / (3 - 1)
                                         f"{rid} step 40/50 13 steps/s",  # 40 / 3
                                         f"{rid} step 50/50 12 steps/s"]  # 50 / 4  # fmt: skip
    caplog.clear()
    monkeypatch.setattr(tr, "time", Clock())
    tr.train(
        CFG_TINY, split_tiny, tmp_path / "b", progress_every_s=1.5
    )  # step 20 is only 1 s after
    assert progress(caplog.messages) == [f"{rid} step 40/50 13 steps/s",
                                         f"{rid} step 50/50 12 steps/s"]  # fmt: skip
    # resumed at step 20: the rate counts the steps of this call only
    tr.train(CFG_TINY, split_tiny, tmp_path / "c", _stop_after_step=20)
    caplog.clear()
    monkeypatch.setattr(tr, "time", Clock())
    tr.train(CFG_TINY, split_tiny, tmp_path / "c", progress_every_s=1.0)
    assert progress(caplog.messages) == [f"{rid} step 40/50 10 steps/s",  # 20 / 2
                                         f"{rid} step 50/50 10 steps/s"]  # 30 / 3  # fmt: skip


def test_progress_defaults_to_ten_seconds_and_a_fast_rate(
    split_tiny, tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    rid = CFG_TINY.run_id
    # 5 s per reading: t0 = 5, last report 10, checkpoints at 15 (5 s: no), 20 (10 s), 25 (last)
    monkeypatch.setattr(tr, "time", Clock(5.0))
    tr.train(CFG_TINY, split_tiny, tmp_path / "a")
    assert progress(caplog.messages) == [f"{rid} step 40/50 3 steps/s",  # 40 / 15
                                         f"{rid} step 50/50 2 steps/s"]  # 50 / 20  # fmt: skip
    # under a second since the start: 20 steps in 0.5 s
    caplog.clear()
    monkeypatch.setattr(tr, "time", Clock(0.25))
    tr.train(CFG_TINY, split_tiny, tmp_path / "b", progress_every_s=0.25)
    assert progress(caplog.messages)[0] == f"{rid} step 20/50 40 steps/s"


def test_progress_lines_show_the_latest_checkpoint(split_tiny, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    res = tr.train(CFG_TINY, split_tiny, tmp_path / "a", progress_every_s=0.0)
    lines = [m for m in caplog.messages if "steps/s" in m]
    for line, r in zip(lines, res.log.iloc[1:].itertuples(), strict=True):
        assert line.startswith(
            f"{CFG_TINY.run_id} step {r.step}/50  "
            f"train loss {r.train_loss:.3g} acc {r.train_acc:.3f}"
            f"  val loss {r.val_loss:.3g} acc {r.val_acc:.3f}  "
        )


def test_initial_state_passes_the_model_options():
    c = cfg(model="transformer", width=8, loss="cross_entropy",
            model_options={"ff_dim": 4, "num_layers": 1, "num_heads": 2})  # fmt: skip
    _, model, _ = tr._initial_state(c, torch.device("cpu"))
    assert (model.num_layers, model.num_heads, model.ff_dim) == (1, 2, 4)
    _, model, _ = tr._initial_state(CFG_TINY, torch.device("meta"))  # moved to the device
    assert all(p.is_meta for p in model.parameters())


def test_tensors_and_model_go_to_the_resolved_device(split_tiny, tmp_path, monkeypatch):
    seen = []
    real_split, real_init = tr.split_tensors, tr._initial_state

    def spy_split(*a, **kw):
        seen.append(("split", a[1:], kw))
        return real_split(*a, **kw)

    def spy_init(*a, **kw):
        seen.append(("init", a[1:], kw))
        return real_init(*a, **kw)

    monkeypatch.setattr(tr, "split_tensors", spy_split)
    monkeypatch.setattr(tr, "_initial_state", spy_init)
    tr.train(cfg(max_steps=1), split_tiny, tmp_path / "w", device="cpu")
    cpu = torch.device("cpu")
    assert seen == [("split", ("train", cpu), {}), ("split", ("val", cpu), {}),
                    ("init", (cpu,), {})]  # fmt: skip


def test_train_run_passes_the_device(split_tiny, tmp_path, monkeypatch):
    seen = []
    real = tr.train

    def spy(*a, **kw):
        seen.append(kw.get("device"))
        return real(*a, **{**kw, "device": "cpu"})

    monkeypatch.setattr(tr, "train", spy)
    tr.train_run(cfg(max_steps=1), split_tiny, log_path=tmp_path / "l.parquet",
                 checkpoints_path=tmp_path / "c.pt", work_dir=tmp_path / "w",
                 device="sentinel")  # fmt: skip
    assert seen == ["sentinel"]


def test_only_the_logged_and_unchanged_checkpoints_are_collected(split_tiny, tmp_path, monkeypatch):
    c = cfg(max_steps=20)
    work = tmp_path / "w"

    def stray(point, step):  # a file appearing after the training, not in the log
        if point == "trained":
            torch_save(torch_load(tr.ckpt_path(work, 0)), tr.ckpt_path(work, 30))

    monkeypatch.setattr(tr, "_FAULT_HOOK", stray)
    assert tr.train(c, split_tiny, work).checkpoints["steps"].tolist() == [0, 20]

    def tamper(point, step):  # a logged file changed after it was written
        if point == "trained":
            torch_save(torch_load(tr.ckpt_path(work, 0)), tr.ckpt_path(work, 20))

    monkeypatch.setattr(tr, "_FAULT_HOOK", tamper)
    work = tmp_path / "w2"
    with pytest.raises(CheckpointFileError, match="ckpt_0000020.pt is missing or differs"):
        tr.train(c, split_tiny, work)


def test_discard_of_a_missing_file_is_fine(tmp_path):
    tr._discard(tmp_path / "gone.pt", "already removed")
    assert not (tmp_path / "gone.pt").exists()


def test_resume_from_the_previous_state_when_the_state_is_missing(stopped):
    work, _ = stopped
    (work / tr.STATE_FILE).unlink()
    got = tr._resume_state(CFG_TINY, work)
    assert got["step"] == 0 and (work / tr.STATE_FILE).exists()


def test_outputs_are_deterministic_bytes(split_resume, tmp_path, reference_resume):
    run(split_resume, tmp_path)
    assert_matches_reference_resume(tmp_path, reference_resume)
    ck = load_checkpoints(
        paths(tmp_path)["checkpoints_path"], train_log=paths(tmp_path)["log_path"]
    )
    assert ck["steps"].tolist() == STEPS and ck["params"]["W"].shape == (7, 14, 8)


@pytest.mark.parametrize(("point", "step", "nth"), KILL_POINTS)
def test_kill_at_every_boundary_resumes_to_identical_outputs(
    split_resume, tmp_path, reference_resume, monkeypatch, point, step, nth
):
    hook = Hook(point, step, nth)
    monkeypatch.setattr(train_mod, "_FAULT_HOOK", hook)
    with pytest.raises(Killed):
        run(split_resume, tmp_path)
    drop_outputs(tmp_path)
    rerun = Hook("never")
    monkeypatch.setattr(train_mod, "_FAULT_HOOK", rerun)
    run(split_resume, tmp_path)
    assert_matches_reference_resume(tmp_path, reference_resume)
    written = [s for p, s in rerun.calls if p == "ckpt_written"]
    if point in ("trained", "checkpoints_written", "outputs_written") or (
        point == "state_written" and step == 60
    ):
        assert written == []  # a complete work dir is re-consolidated, not retrained
    elif point == "ckpt_written" and step == 30:
        assert written == [30, 40, 50, 60]  # resumed from the state of step 20
    elif point == "state_written" and step == 30:
        assert written == [40, 50, 60]


def test_early_stop_streak_survives_a_resume(split_resume, tmp_path, monkeypatch):
    # the accuracy condition holds at every checkpoint, so the run stops at its third: 0, 10, 20
    cfg = TrainConfig(**{**CFG_RESUME.to_dict(), "early_stop_acc": 0.0, "early_stop_patience": 3})
    whole = run(split_resume, tmp_path / "whole", cfg=cfg)
    assert whole.log["step"].tolist() == [0, 10, 20]
    monkeypatch.setattr(train_mod, "_FAULT_HOOK", Hook("state_written", 10))
    with pytest.raises(Killed):
        run(split_resume, tmp_path / "killed", cfg=cfg)
    monkeypatch.setattr(train_mod, "_FAULT_HOOK", None)
    resumed = run(split_resume, tmp_path / "killed", cfg=cfg)
    # a streak reset on resume would count 10 again from 1 and stop at 40 instead
    assert resumed.log["step"].tolist() == [0, 10, 20]
    assert sha(paths(tmp_path / "killed")["checkpoints_path"]) == sha(
        paths(tmp_path / "whole")["checkpoints_path"]
    )


def test_streak_that_disagrees_with_its_log_is_not_trusted(
    split_resume, tmp_path, reference_resume, caplog
):
    train(CFG_RESUME, split_resume, tmp_path / "partial", _stop_after_step=30)
    state_file = tmp_path / "partial" / STATE_FILE
    state = torch.load(state_file, weights_only=True)
    state["streak"] = 5  # no checkpoint of this run reaches 0.99 validation accuracy by step 30
    torch_save(state, state_file)
    with caplog.at_level(logging.WARNING):
        run(split_resume, tmp_path)
    assert f"discarding {state_file}" in caplog.text and "streak" in caplog.text
    assert_matches_reference_resume(tmp_path, reference_resume)


@pytest.mark.parametrize(
    ("point", "step"),
    [("state_rotated", 40), ("checkpoints_written", None), ("cleanup_file", None)],
)
def test_real_sigkill_then_rerun_gives_identical_outputs(
    split_resume, tmp_path, reference_resume, point, step
):
    script = SIGKILL_SCRIPT.format(
        cfg=CFG_RESUME.to_dict(), point=point, step=step, root=str(tmp_path)
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    drop_outputs(tmp_path)
    run(split_resume, tmp_path)
    assert_matches_reference_resume(tmp_path, reference_resume)


def test_garbage_state_falls_back_to_previous_state(
    split_resume, tmp_path, reference_resume, caplog
):
    train(CFG_RESUME, split_resume, tmp_path / "partial", _stop_after_step=30)
    state_file = tmp_path / "partial" / STATE_FILE
    state_file.write_bytes(b"\x80garbage" * 50)
    with caplog.at_level(logging.WARNING):
        run(split_resume, tmp_path)
    assert f"discarding {state_file}" in caplog.text
    assert f"previous state {tmp_path / 'partial' / PREV_STATE_FILE}" in caplog.text
    assert_matches_reference_resume(tmp_path, reference_resume)


def test_garbage_states_both_start_over(split_resume, tmp_path, reference_resume, caplog):
    train(CFG_RESUME, split_resume, tmp_path / "partial", _stop_after_step=30)
    for name in (STATE_FILE, PREV_STATE_FILE):
        (tmp_path / "partial" / name).write_bytes(bytes(range(256)) + b"garbage")
    with caplog.at_level(logging.WARNING):
        run(split_resume, tmp_path)
    assert "no consistent training state" in caplog.text and "starting" in caplog.text
    assert_matches_reference_resume(tmp_path, reference_resume)


def test_truncated_checkpoint_file_is_detected_and_retrained(
    split_resume, tmp_path, reference_resume, caplog
):
    train(CFG_RESUME, split_resume, tmp_path / "partial", _stop_after_step=30)
    bad = ckpt_path(tmp_path / "partial", 20)
    bad.write_bytes(bad.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        run(split_resume, tmp_path)
    assert bad.name in caplog.text and "starting" in caplog.text
    assert_matches_reference_resume(tmp_path, reference_resume)


def test_finished_work_dir_missing_checkpoint_files_never_gives_fewer(
    split_resume, tmp_path, reference_resume
):
    """The reported bug: files removed from a finished partial/ (an interrupted clean-up of the
    old code) made the rerun consolidate 23 of 31 checkpoints."""
    with pytest.raises(Killed):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(train_mod, "_FAULT_HOOK", Hook("outputs_written"))
            run(split_resume, tmp_path)
    drop_outputs(tmp_path)
    for step in (0, 30, 50):
        ckpt_path(tmp_path / "partial", step).unlink()
    res = run(split_resume, tmp_path)
    assert len(res.checkpoints["steps"]) == len(res.log) == len(STEPS)
    assert_matches_reference_resume(tmp_path, reference_resume)


def test_crafted_state_file_is_refused_and_runs_nothing(split_resume, tmp_path):
    marker = tmp_path / "marker"
    work = tmp_path / "partial"
    train(CFG_RESUME, split_resume, work, _stop_after_step=20)
    state = torch.load(work / STATE_FILE, weights_only=True)
    state["generator"] = Evil(marker)
    torch.save(state, work / STATE_FILE)
    torch.load(work / STATE_FILE, weights_only=False)  # control: an unsafe load runs the code
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafeFileError, match=f"refusing {work / STATE_FILE}"):
        train(CFG_RESUME, split_resume, work)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["torch", "plain_pickle"])
def test_crafted_checkpoints_file_is_refused_and_runs_nothing(tmp_path, reference_resume, kind):
    marker = tmp_path / "marker"
    crafted = tmp_path / "checkpoints.pt"
    ck = torch.load(reference_resume["root"] / "checkpoints.pt", weights_only=True)
    ck["config"] = Evil(marker)
    if kind == "torch":
        torch.save(ck, crafted)
    else:
        crafted.write_bytes(pickle.dumps(ck))
    # control: an unsafe load runs the code
    if kind == "torch":
        torch.load(crafted, weights_only=False)
    else:
        pickle.loads(crafted.read_bytes())
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafeFileError, match=f"refusing {crafted}") as err:
        load_checkpoints(crafted)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_checkpoints_that_do_not_match_the_log_are_refused(tmp_path, reference_resume):
    ref = reference_resume["root"]
    ck = load_checkpoints(ref / "checkpoints.pt", train_log=ref / "train_log.parquet")
    short = tmp_path / "checkpoints.pt"
    torch_save(
        {**ck, "steps": ck["steps"][:4], "params": {k: v[:4] for k, v in ck["params"].items()}},
        short,
    )
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoints(short, train_log=ref / "train_log.parquet")
    msg = str(err.value)
    assert str(short) in msg and str(ref / "train_log.parquet") in msg and "\n" not in msg
    assert "4 checkpoints" in msg and "7 checkpoints" in msg
    # same count, one step different
    log = pd.read_parquet(ref / "train_log.parquet")
    log.loc[3, "step"] = 31
    with pytest.raises(CheckpointMismatchError, match="first difference at checkpoint 3"):
        load_checkpoints(ref / "checkpoints.pt", train_log=log)
    assert len(load_checkpoints(short)["steps"]) == 4  # without a log, only the structure


def test_corrupt_or_malformed_checkpoints_file_is_refused(tmp_path, reference_resume):
    data = (reference_resume["root"] / "checkpoints.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match=str(truncated)):
        load_checkpoints(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CorruptFileError, match=str(empty)):
        load_checkpoints(empty)
    malformed = tmp_path / "malformed.pt"
    torch_save({"steps": torch.tensor([0.0, 10.0]), "params": {"W": torch.zeros(2, 3)}}, malformed)
    with pytest.raises(CheckpointFileError, match="integer tensor"):
        load_checkpoints(malformed)
    ragged = tmp_path / "ragged.pt"
    torch_save({"steps": torch.tensor([0, 10]), "params": {"W": torch.zeros(3, 3)}}, ragged)
    with pytest.raises(CheckpointFileError, match="one tensor per checkpoint"):
        load_checkpoints(ragged)
