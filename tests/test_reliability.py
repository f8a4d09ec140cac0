"""Training survives a kill at every boundary between two writes, and refuses or recovers from
corrupt and crafted files (issue 13, items 1-3).

Reference: one uninterrupted ``train_run``. Every interrupted-then-rerun case must end with
byte-identical ``checkpoints.pt`` and ``train_log.parquet``. Interruptions are injected through
``train._FAULT_HOOK`` (an exception at the named point) and, for a few points, by a real SIGKILL
of a subprocess. Before each rerun the outputs are deleted, as Snakemake does for a job that did
not finish.
"""

import hashlib
import logging
import os
import pathlib
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import torch

from grokking_llc.core.data import make_split
from grokking_llc.core.io import CheckpointFileError, CorruptFileError, UnsafeFileError, torch_save
from grokking_llc.core.settings import TrainConfig
from grokking_llc.training import train as train_mod
from grokking_llc.training.checkpoints import CheckpointMismatchError, load_checkpoints
from grokking_llc.training.train import (
    PREV_STATE_FILE,
    STATE_FILE,
    ckpt_path,
    train,
    train_run,
)

# 7 checkpoints: steps 0, 10, ..., 60
CFG = TrainConfig(
    p=7, train_frac=0.6, width=8, lr=1e-2, weight_decay=1e-4, batch_size=8,
    max_steps=60, checkpoint_every=10,
)  # fmt: skip
STEPS = list(range(0, 61, 10))
REPO = pathlib.Path(__file__).resolve().parents[1]


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


def run(split, root, **kw):
    return train_run(kw.pop("cfg", CFG), split, **paths(root), **kw)


def drop_outputs(root):
    """What Snakemake does to the outputs of a job that did not finish."""
    for key in ("log_path", "checkpoints_path"):
        paths(root)[key].unlink(missing_ok=True)


@pytest.fixture(scope="module")
def split():
    return make_split(CFG.p, CFG.train_frac, CFG.data_seed)


@pytest.fixture(scope="module")
def reference(split, tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    res = run(split, root)
    p = paths(root)
    assert res.log["step"].tolist() == STEPS
    return {"ckpt": sha(p["checkpoints_path"]), "log": sha(p["log_path"]), "root": root}


def assert_matches_reference(root, reference):
    p = paths(root)
    assert sha(p["checkpoints_path"]) == reference["ckpt"]
    assert sha(p["log_path"]) == reference["log"]
    assert not p["work_dir"].exists()
    assert not p["work_dir"].with_name("partial.discard").exists()


def test_outputs_are_deterministic_bytes(split, tmp_path, reference):
    run(split, tmp_path)
    assert_matches_reference(tmp_path, reference)
    ck = load_checkpoints(
        paths(tmp_path)["checkpoints_path"], train_log=paths(tmp_path)["log_path"]
    )
    assert ck["steps"].tolist() == STEPS and ck["params"]["W"].shape == (7, 14, 8)


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


@pytest.mark.parametrize(("point", "step", "nth"), KILL_POINTS)
def test_kill_at_every_boundary_resumes_to_identical_outputs(
    split, tmp_path, reference, monkeypatch, point, step, nth
):
    hook = Hook(point, step, nth)
    monkeypatch.setattr(train_mod, "_FAULT_HOOK", hook)
    with pytest.raises(Killed):
        run(split, tmp_path)
    drop_outputs(tmp_path)
    rerun = Hook("never")
    monkeypatch.setattr(train_mod, "_FAULT_HOOK", rerun)
    run(split, tmp_path)
    assert_matches_reference(tmp_path, reference)
    written = [s for p, s in rerun.calls if p == "ckpt_written"]
    if point in ("trained", "checkpoints_written", "outputs_written") or (
        point == "state_written" and step == 60
    ):
        assert written == []  # a complete work dir is re-consolidated, not retrained
    elif point == "ckpt_written" and step == 30:
        assert written == [30, 40, 50, 60]  # resumed from the state of step 20
    elif point == "state_written" and step == 30:
        assert written == [40, 50, 60]


def test_early_stop_streak_survives_a_resume(split, tmp_path, monkeypatch):
    # the accuracy condition holds at every checkpoint, so the run stops at its third: 0, 10, 20
    cfg = TrainConfig(**{**CFG.to_dict(), "early_stop_acc": 0.0, "early_stop_patience": 3})
    whole = run(split, tmp_path / "whole", cfg=cfg)
    assert whole.log["step"].tolist() == [0, 10, 20]
    monkeypatch.setattr(train_mod, "_FAULT_HOOK", Hook("state_written", 10))
    with pytest.raises(Killed):
        run(split, tmp_path / "killed", cfg=cfg)
    monkeypatch.setattr(train_mod, "_FAULT_HOOK", None)
    resumed = run(split, tmp_path / "killed", cfg=cfg)
    # a streak reset on resume would count 10 again from 1 and stop at 40 instead
    assert resumed.log["step"].tolist() == [0, 10, 20]
    assert sha(paths(tmp_path / "killed")["checkpoints_path"]) == sha(
        paths(tmp_path / "whole")["checkpoints_path"]
    )


def test_streak_that_disagrees_with_its_log_is_not_trusted(split, tmp_path, reference, caplog):
    train(CFG, split, tmp_path / "partial", _stop_after_step=30)
    state_file = tmp_path / "partial" / STATE_FILE
    state = torch.load(state_file, weights_only=True)
    state["streak"] = 5  # no checkpoint of this run reaches 0.99 validation accuracy by step 30
    torch_save(state, state_file)
    with caplog.at_level(logging.WARNING):
        run(split, tmp_path)
    assert f"discarding {state_file}" in caplog.text and "streak" in caplog.text
    assert_matches_reference(tmp_path, reference)


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


@pytest.mark.parametrize(
    ("point", "step"),
    [("state_rotated", 40), ("checkpoints_written", None), ("cleanup_file", None)],
)
def test_real_sigkill_then_rerun_gives_identical_outputs(split, tmp_path, reference, point, step):
    script = SIGKILL_SCRIPT.format(cfg=CFG.to_dict(), point=point, step=step, root=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    drop_outputs(tmp_path)
    run(split, tmp_path)
    assert_matches_reference(tmp_path, reference)


def test_garbage_state_falls_back_to_previous_state(split, tmp_path, reference, caplog):
    train(CFG, split, tmp_path / "partial", _stop_after_step=30)
    state_file = tmp_path / "partial" / STATE_FILE
    state_file.write_bytes(b"\x80garbage" * 50)
    with caplog.at_level(logging.WARNING):
        run(split, tmp_path)
    assert f"discarding {state_file}" in caplog.text
    assert f"previous state {tmp_path / 'partial' / PREV_STATE_FILE}" in caplog.text
    assert_matches_reference(tmp_path, reference)


def test_garbage_states_both_start_over(split, tmp_path, reference, caplog):
    train(CFG, split, tmp_path / "partial", _stop_after_step=30)
    for name in (STATE_FILE, PREV_STATE_FILE):
        (tmp_path / "partial" / name).write_bytes(bytes(range(256)) + b"garbage")
    with caplog.at_level(logging.WARNING):
        run(split, tmp_path)
    assert "no consistent training state" in caplog.text and "starting" in caplog.text
    assert_matches_reference(tmp_path, reference)


def test_truncated_checkpoint_file_is_detected_and_retrained(split, tmp_path, reference, caplog):
    train(CFG, split, tmp_path / "partial", _stop_after_step=30)
    bad = ckpt_path(tmp_path / "partial", 20)
    bad.write_bytes(bad.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        run(split, tmp_path)
    assert bad.name in caplog.text and "starting" in caplog.text
    assert_matches_reference(tmp_path, reference)


def test_finished_work_dir_missing_checkpoint_files_never_gives_fewer(split, tmp_path, reference):
    """The reported bug: files removed from a finished partial/ (an interrupted clean-up of the
    old code) made the rerun consolidate 23 of 31 checkpoints."""
    with pytest.raises(Killed):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(train_mod, "_FAULT_HOOK", Hook("outputs_written"))
            run(split, tmp_path)
    drop_outputs(tmp_path)
    for step in (0, 30, 50):
        ckpt_path(tmp_path / "partial", step).unlink()
    res = run(split, tmp_path)
    assert len(res.checkpoints["steps"]) == len(res.log) == len(STEPS)
    assert_matches_reference(tmp_path, reference)


def test_crafted_state_file_is_refused_and_runs_nothing(split, tmp_path):
    marker = tmp_path / "marker"
    work = tmp_path / "partial"
    train(CFG, split, work, _stop_after_step=20)
    state = torch.load(work / STATE_FILE, weights_only=True)
    state["generator"] = Evil(marker)
    torch.save(state, work / STATE_FILE)
    torch.load(work / STATE_FILE, weights_only=False)  # control: an unsafe load runs the code
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafeFileError, match=f"refusing {work / STATE_FILE}"):
        train(CFG, split, work)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["torch", "plain_pickle"])
def test_crafted_checkpoints_file_is_refused_and_runs_nothing(tmp_path, reference, kind):
    marker = tmp_path / "marker"
    crafted = tmp_path / "checkpoints.pt"
    ck = torch.load(reference["root"] / "checkpoints.pt", weights_only=True)
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


def test_checkpoints_that_do_not_match_the_log_are_refused(tmp_path, reference):
    ref = reference["root"]
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


def test_corrupt_or_malformed_checkpoints_file_is_refused(tmp_path, reference):
    data = (reference["root"] / "checkpoints.pt").read_bytes()
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


# ------------------------------------------------------------------ Snakemake's stale lock


def _make_unlock(workdir, fakebin):
    return subprocess.run(
        ["make", "--no-print-directory", "-s", "-f", str(REPO / "Makefile"), "-C", str(workdir),
         "unlock", f"BIN={fakebin}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_make_unlock_removes_only_a_stale_lock(tmp_path):
    """`make unlock` (run before figures and all) calls `snakemake --unlock` exactly when a
    lock exists and no snakemake process runs in the directory."""
    if not pathlib.Path("/proc").is_dir() or shutil.which("make") is None:
        pytest.skip("needs /proc and make")
    fakebin, work = tmp_path / "bin", tmp_path / "work"
    fakebin.mkdir()
    work.mkdir()
    (fakebin / "python").symlink_to(sys.executable)
    called = tmp_path / "unlock-called"
    (fakebin / "snakemake").write_text(f'#!/bin/sh\necho "$@" > {called}\n')
    (fakebin / "snakemake").chmod(0o755)

    assert _make_unlock(work, fakebin).returncode == 0 and not called.exists()  # no lock
    (work / ".snakemake" / "locks").mkdir(parents=True)
    assert _make_unlock(work, fakebin).returncode == 0 and not called.exists()  # empty dir
    (work / ".snakemake" / "locks" / "0.output.lock").write_text("results/x\n")

    # a live snakemake process in this directory keeps the lock
    live = tmp_path / "live" / "snakemake"
    live.parent.mkdir()
    live.write_text("#!/bin/sh\nsleep 60\n")
    live.chmod(0o755)
    proc = subprocess.Popen([str(live)], cwd=work)
    try:
        out = _make_unlock(work, fakebin)
        assert f"pid {proc.pid}" in out.stderr and "lock stays" in out.stderr
        assert not called.exists()
        other = tmp_path / "elsewhere"
        other.mkdir()
        (other / ".snakemake" / "locks").mkdir(parents=True)
        (other / ".snakemake" / "locks" / "0.input.lock").write_text("x\n")
        assert _make_unlock(other, fakebin).returncode == 0  # a snakemake elsewhere: unlock
        assert called.read_text().split() == ["--unlock", "--cores", "1"]
        called.unlink()
    finally:
        proc.kill()
        proc.wait()
    out = _make_unlock(work, fakebin)  # the process is gone: the lock is stale
    assert out.returncode == 0 and "removing the lock" in out.stderr
    assert called.read_text().split() == ["--unlock", "--cores", "1"]


def test_readme_lock_advice_lists_only_this_directory(tmp_path):
    """Issue 21: the README's `pgrep -af snakemake` listed Snakemake runs of every directory;
    its command now lists those whose working directory is this one only."""
    if not pathlib.Path("/proc").is_dir() or shutil.which("pgrep") is None:
        pytest.skip("needs /proc and pgrep")
    text = (REPO / "README.md").read_text()
    (cmd,) = [line.strip() for line in text.splitlines()
              if line.strip().startswith("for p in $(pgrep -f snakemake)")]  # fmt: skip
    advice = tmp_path / "advice.sh"  # a script: its own command line does not say snakemake
    advice.write_text(cmd + "\n")
    fake = tmp_path / "bin" / "snakemake"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nsleep 60\n")
    fake.chmod(0o755)
    here, elsewhere, empty = (tmp_path / d for d in ("here", "elsewhere", "empty"))
    for d in (here, elsewhere, empty):
        d.mkdir()
    procs = [subprocess.Popen([str(fake)], cwd=d) for d in (here, elsewhere)]
    try:
        time.sleep(0.2)

        def listed(where):
            out = subprocess.run(["bash", str(advice)], cwd=where, capture_output=True,
                                 text=True, timeout=30)  # fmt: skip
            return [int(line.split()[0]) for line in out.stdout.splitlines()]

        assert listed(here) == [procs[0].pid]
        assert listed(elsewhere) == [procs[1].pid]
        assert listed(empty) == []
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
