"""The training loop and its resume/consolidation files (grokking_llc.training.train, SPEC section
3) on
tiny runs (p = 5, width 4, at most 50 steps), against expectations written here: a reference
training loop (Adam with coupled weight decay, one seeded generator for the batches, a
checkpoint every ``checkpoint_every`` steps and at ``max_steps``, the early-stop streak), the
exact file names, state contents, messages and fault-hook sequence of the module docstring.
Cases found unchecked by the mutation run (docs/mutation.md)."""

from __future__ import annotations

import logging
import os
import re

import pandas as pd
import pytest
import torch

import grokking_llc.training.checkpoints as ck_mod
import grokking_llc.training.train as tr
from grokking_llc.core.data import make_split, split_tensors
from grokking_llc.core.io import (
    CheckpointFileError,
    CorruptFileError,
    file_digest,
    parquet_provenance,
    settings_hash,
    torch_load,
    torch_save,
)
from grokking_llc.core.model import accuracy, build_model, get_loss
from grokking_llc.core.settings import TrainConfig

CFG = TrainConfig(
    p=5, train_frac=0.6, width=4, lr=1e-2, weight_decay=1e-3, batch_size=4, max_steps=50,
    checkpoint_every=20, early_stop_patience=100, early_stop_acc=0.99, seed=3,
)  # fmt: skip


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**CFG.to_dict(), **kw})


@pytest.fixture(scope="module")
def split():
    return make_split(CFG.p, CFG.train_frac, CFG.data_seed)


def reference(c: TrainConfig, split):
    """SPEC section 3 written out: the log rows and the weights at every checkpoint."""
    loss_fn = get_loss(c.loss)
    x_tr, y_tr = split_tensors(split, "train")
    x_va, y_va = split_tensors(split, "val")
    gen = torch.Generator().manual_seed(c.seed)
    model = build_model(c.model, c.p, width=c.width, generator=gen, options=c.model_options)
    opt = torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    rows, weights, streak = [], [], 0

    def record(step):
        with torch.no_grad():
            p_tr, p_va = model(x_tr), model(x_va)
            row = (step, loss_fn(p_tr, y_tr).item(), loss_fn(p_va, y_va).item(),
                   accuracy(p_tr, y_tr), accuracy(p_va, y_va))  # fmt: skip
        rows.append(row)
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return row[4]

    streak = 1 if record(0) >= c.early_stop_acc else 0
    step = 0
    while streak < c.early_stop_patience and step < c.max_steps:
        idx = torch.randperm(len(y_tr), generator=gen)[: c.batch_size]
        loss = loss_fn(model(x_tr[idx]), y_tr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % c.checkpoint_every == 0 or step == c.max_steps:
            streak = streak + 1 if record(step) >= c.early_stop_acc else 0
    return pd.DataFrame(rows, columns=list(tr.LOG_COLUMNS)), weights


def assert_matches_reference(res, c, split):
    want_log, want_w = reference(c, split)
    pd.testing.assert_frame_equal(res.log, want_log, check_exact=True)
    assert res.checkpoints["steps"].tolist() == want_log["step"].tolist()
    assert res.checkpoints["steps"].dtype == torch.long
    for name in want_w[0]:
        torch.testing.assert_close(
            res.checkpoints["params"][name], torch.stack([w[name] for w in want_w]),
            rtol=0, atol=0,
        )  # fmt: skip


# ------------------------------------------------------------------ the loop


def test_training_matches_the_reference_loop_with_a_last_checkpoint_at_max_steps(split, tmp_path):
    work = tmp_path / "nested" / "w"  # parents are made
    res = tr.train(CFG, split, work)
    assert res.log["step"].tolist() == [0, 20, 40, 50]
    assert_matches_reference(res, CFG, split)
    files = sorted(p.name for p in work.iterdir())
    assert files == ["ckpt_0000000.pt", "ckpt_0000020.pt", "ckpt_0000040.pt",
                     "ckpt_0000050.pt", "state.prev.pt", "state.pt"]  # fmt: skip


def test_other_seeds_rates_and_batches_are_used(split, tmp_path):
    for k, c in enumerate([cfg(seed=4), cfg(lr=3e-2, weight_decay=0.5), cfg(batch_size=7),
                           cfg(max_steps=7, checkpoint_every=3)]):  # fmt: skip
        res = tr.train(c, split, tmp_path / f"w{k}")
        assert_matches_reference(res, c, split)
    assert res.log["step"].tolist() == [0, 3, 6, 7]


def test_early_stop_after_patience_checkpoints_at_the_threshold(split, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    want, _ = reference(cfg(max_steps=200), split)
    accs = want["val_acc"].tolist()
    # a threshold equal to an accuracy reached: ">=" counts it
    thr = sorted(accs)[-1]
    c = cfg(max_steps=200, early_stop_acc=thr, early_stop_patience=2)
    res = tr.train(c, split, tmp_path / "w")
    assert_matches_reference(res, c, split)
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
    res = tr.train(c, split, tmp_path / "once")
    assert res.log["step"].tolist() == [0]
    assert f"{c.run_id} early stop at step 0" in caplog.messages
    # an early stop already reached when resuming: nothing more to train
    again = tr.train(c, split, tmp_path / "once")
    assert again.log["step"].tolist() == [0]


def test_progress_lines(split, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    res = tr.train(CFG, split, tmp_path / "a", progress_every_s=0.0)
    lines = [m for m in caplog.messages if " step " in m and "steps/s" in m]
    assert len(lines) == 3
    r = res.log.iloc[1]
    want = (f"{CFG.run_id} step 20/50  train loss {r.train_loss:.3g} acc {r.train_acc:.3f}  "
            f"val loss {r.val_loss:.3g} acc {r.val_acc:.3f}  ")  # fmt: skip
    assert lines[0].startswith(want) and re.fullmatch(r".*  \d+ steps/s", lines[0])
    assert lines[2].startswith(f"{CFG.run_id} step 50/50  ")
    caplog.clear()
    tr.train(CFG, split, tmp_path / "b", progress_every_s=1e9)
    lines = [m for m in caplog.messages if "steps/s" in m]
    assert len(lines) == 1 and lines[0].startswith(f"{CFG.run_id} step 50/50  ")


def test_state_file_contents_and_rotation(split, tmp_path):
    work = tmp_path / "w"
    assert tr.train(CFG, split, work, _stop_after_step=30) is None  # stops after step 40
    state = torch_load(work / tr.STATE_FILE)
    prev = torch_load(work / tr.PREV_STATE_FILE)
    assert set(state) == {"format", "run_id", "config", "step", "streak", "log", "digests",
                          "model", "optimizer", "generator"}  # fmt: skip
    assert state["format"] == 2 and state["run_id"] == CFG.run_id
    assert state["config"] == CFG.to_dict()
    assert state["step"] == 40 and prev["step"] == 20
    assert [r["step"] for r in state["log"]] == [0, 20, 40]
    assert list(state["log"][0]) == list(tr.LOG_COLUMNS)
    assert state["streak"] == 0
    assert state["digests"] == [file_digest(tr.ckpt_path(work, s)) for s in (0, 20, 40)]
    assert state["generator"].dtype == torch.uint8
    want_log, want_w = reference(CFG, split)
    assert [tuple(r.values()) for r in state["log"]] == [
        tuple(row) for row in want_log.iloc[:3].itertuples(index=False)
    ]
    for name, value in want_w[2].items():
        assert torch.equal(state["model"][name], value)
        assert torch.equal(torch_load(tr.ckpt_path(work, 40))[name], value)
    assert state["optimizer"]["param_groups"][0]["lr"] == CFG.lr
    # resuming from it ends with the uninterrupted numbers
    assert_matches_reference(tr.train(CFG, split, work), CFG, split)


def test_fault_hook_sees_every_boundary_in_order(split, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(tr, "_FAULT_HOOK", lambda point, step: seen.append((point, step)))
    c = cfg(max_steps=20)
    tr.train_run(c, split, log_path=tmp_path / "log.parquet",
                 checkpoints_path=tmp_path / "ck.pt", work_dir=tmp_path / "partial")  # fmt: skip
    per = ["ckpt_written", "state_rotated", "state_written"]
    assert seen == (
        [("start", -1)] + [(p, 0) for p in per] + [(p, 20) for p in per]
        + [("trained", 20), ("checkpoints_written", -1), ("outputs_written", -1),
           ("partial_renamed", -1)]
        + [("cleanup_file", -1)] * 4  # two weights files, the state and the previous state
    )  # fmt: skip


# ------------------------------------------------------------------ small pieces


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


# ------------------------------------------------------------------ the state checks


@pytest.fixture
def stopped(split, tmp_path):
    """A work dir stopped after the checkpoint at step 20, and its state."""
    work = tmp_path / "w"
    tr.train(CFG, split, work, _stop_after_step=20)
    return work, torch_load(work / tr.STATE_FILE)


def test_state_problems_each_named(stopped):
    work, state = stopped
    assert tr._state_problem(state, CFG, work) is None

    def problem(**changes):
        return tr._state_problem({**state, **changes}, CFG, work)

    assert tr._state_problem([], CFG, work) == "not a training state of this format"
    for key in tr._STATE_KEYS:
        broken = {k: v for k, v in state.items() if k != key}
        assert tr._state_problem(broken, CFG, work) == "not a training state of this format"
    with pytest.raises(RuntimeError, match=f"^{re.escape(str(work))} holds a state that belongs "
                       f"to run other, not {CFG.run_id}$"):  # fmt: skip
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
    got = tr._resume_state(CFG, work)
    assert got["step"] == 20
    assert not list(work.glob(".*.tmp")) and not stray.exists()
    assert (work / tr.PREV_STATE_FILE).exists()  # the previous state is kept, unread
    assert f"discarding {stray}: not a checkpoint of the state resumed from (step 20)" in (
        caplog.messages
    )
    assert sorted(p.name for p in work.iterdir()) == [
        "ckpt_0000000.pt", "ckpt_0000020.pt", "state.prev.pt", "state.pt",
    ]  # fmt: skip


def test_resume_falls_back_to_the_previous_state(stopped, split, caplog):
    work, state = stopped
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    (work / tr.STATE_FILE).write_bytes(b"garbage")
    with pytest.raises(CorruptFileError) as err:
        torch_load(work / tr.STATE_FILE)
    got = tr._resume_state(CFG, work)
    assert got["step"] == 0
    assert not (work / tr.PREV_STATE_FILE).exists() and (work / tr.STATE_FILE).exists()
    assert torch_load(work / tr.STATE_FILE)["step"] == 0
    assert not tr.ckpt_path(work, 20).exists() and tr.ckpt_path(work, 0).exists()
    assert f"discarding {work / tr.STATE_FILE}: {err.value}" in caplog.messages
    assert f"resuming {CFG.run_id} from the previous state {work / tr.PREV_STATE_FILE}" in (
        caplog.messages
    )
    assert_matches_reference(tr.train(CFG, split, work), CFG, split)


def test_resume_names_a_malformed_state(stopped, caplog):
    work, state = stopped
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    torch_save({**state, "log": [{"val_acc": 1.0}], "digests": ["d"], "step": None},
               work / tr.STATE_FILE)  # fmt: skip
    os.remove(work / tr.PREV_STATE_FILE)
    assert tr._resume_state(CFG, work) is None
    assert (
        f"discarding {work / tr.STATE_FILE}: its log, digests and step disagree" in caplog.messages
    )
    torch_save({**state, "log": [{"step": 0}], "digests": ["d"], "step": 0},
               work / tr.STATE_FILE)  # fmt: skip
    caplog.clear()
    assert tr._resume_state(CFG, work) is None
    assert caplog.messages[0] == (
        f"discarding {work / tr.STATE_FILE}: malformed state (KeyError: 'val_acc')"
    )


def test_without_a_usable_state_everything_is_discarded(stopped, caplog):
    work, state = stopped
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    for name in (tr.STATE_FILE, tr.PREV_STATE_FILE):
        (work / name).write_bytes(b"")
    assert tr._resume_state(CFG, work) is None
    assert list(work.iterdir()) == []
    assert (f"{work}: no consistent training state; discarding 2 checkpoint file(s) and "
            f"starting {CFG.run_id} over") in caplog.messages  # fmt: skip
    # an empty dir: nothing to say
    caplog.clear()
    assert tr._resume_state(CFG, work) is None
    assert caplog.messages == []
    # a previous state of another format is removed too
    torch_save({"format": 1}, work / tr.PREV_STATE_FILE)
    assert tr._resume_state(CFG, work) is None and not (work / tr.PREV_STATE_FILE).exists()


def test_a_resumed_run_logs_where_it_starts(stopped, split, caplog):
    work, _ = stopped
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    tr.train(CFG, split, work)
    assert f"resuming {CFG.run_id} from step 20 (2 checkpoints)" in caplog.messages


# ------------------------------------------------------------------ outputs


def test_collect_checkpoints_by_glob_or_by_steps(split, tmp_path):
    work = tmp_path / "w"
    res = tr.train(CFG, split, work)
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


def test_train_run_outputs_and_a_leftover_discard_folder(split, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    work = tmp_path / "partial"
    trash = tmp_path / "partial.discard"
    (trash / "sub").mkdir(parents=True)
    (trash / "sub" / "f").write_bytes(b"x")
    res = tr.train_run(CFG, split, log_path=tmp_path / "log.parquet",
                       checkpoints_path=tmp_path / "ck.pt", work_dir=work)  # fmt: skip
    assert f"removing {trash}, left by a clean-up that was interrupted" in caplog.messages
    # the outputs and their digest records (grokking_llc.core.io); the work dir and the trash gone
    assert sorted(p.name for p in tmp_path.iterdir()) == [".digests", "ck.pt", "log.parquet"]
    assert sorted(p.name for p in (tmp_path / ".digests").iterdir()) == [
        "ck.pt.json", "log.parquet.json",
    ]  # fmt: skip
    ck = torch_load(tmp_path / "ck.pt")
    assert set(ck) == {"steps", "params", "config", "run_id", "provenance"}
    assert ck["steps"].tolist() == [0, 20, 40, 50] and ck["run_id"] == CFG.run_id
    assert ck["config"] == CFG.to_dict()
    assert ck["provenance"] == {"run_id": CFG.run_id, "settings": settings_hash(CFG.to_dict())}
    assert parquet_provenance(tmp_path / "log.parquet") == ck["provenance"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "log.parquet"), res.log)
    assert_matches_reference(res, CFG, split)


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


def test_train_run_refuses_a_log_that_differs_from_its_checkpoints(split, tmp_path, monkeypatch):
    fake = tr.TrainResult(pd.DataFrame({"step": [0, 20]}),
                          {"steps": torch.tensor([0, 40]), "params": {}})  # fmt: skip
    monkeypatch.setattr(tr, "train", lambda *a, **k: fake)
    with pytest.raises(ck_mod.CheckpointMismatchError, match="partial: checkpoint steps differ"):
        tr.train_run(CFG, split, log_path=tmp_path / "l.parquet",
                     checkpoints_path=tmp_path / "c.pt", work_dir=tmp_path / "partial")  # fmt: skip
    assert not (tmp_path / "c.pt").exists()
    assert issubclass(ck_mod.CheckpointMismatchError, CheckpointFileError)


def good_ckpts():
    return {"steps": torch.tensor([0, 20, 40]), "params": {"W": torch.zeros(3, 2)}}


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


class Clock:
    """A stand-in for the time module whose perf_counter advances 1 s per call."""

    def __init__(self, tick=1.0):
        self.now, self.tick = 0.0, tick

    def perf_counter(self):
        self.now += self.tick
        return self.now


def progress(messages):
    return [m.split("  ")[0] + " " + m.rsplit("  ", 1)[1] for m in messages if "steps/s" in m]


def test_progress_every_and_the_rate_on_a_fake_clock(split, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    monkeypatch.setattr(tr, "time", Clock())
    # t0 = 1, last report 2, checkpoints read 3, 4, 5: each 1 s after the last report
    tr.train(CFG, split, tmp_path / "a", progress_every_s=1.0)
    rid = CFG.run_id
    assert progress(caplog.messages) == [f"{rid} step 20/50 10 steps/s",  # 20 / (3 - 1)
                                         f"{rid} step 40/50 13 steps/s",  # 40 / 3
                                         f"{rid} step 50/50 12 steps/s"]  # 50 / 4  # fmt: skip
    caplog.clear()
    monkeypatch.setattr(tr, "time", Clock())
    tr.train(CFG, split, tmp_path / "b", progress_every_s=1.5)  # step 20 is only 1 s after
    assert progress(caplog.messages) == [f"{rid} step 40/50 13 steps/s",
                                         f"{rid} step 50/50 12 steps/s"]  # fmt: skip
    # resumed at step 20: the rate counts the steps of this call only
    tr.train(CFG, split, tmp_path / "c", _stop_after_step=20)
    caplog.clear()
    monkeypatch.setattr(tr, "time", Clock())
    tr.train(CFG, split, tmp_path / "c", progress_every_s=1.0)
    assert progress(caplog.messages) == [f"{rid} step 40/50 10 steps/s",  # 20 / 2
                                         f"{rid} step 50/50 10 steps/s"]  # 30 / 3  # fmt: skip


def test_progress_defaults_to_ten_seconds_and_a_fast_rate(split, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    rid = CFG.run_id
    # 5 s per reading: t0 = 5, last report 10, checkpoints at 15 (5 s: no), 20 (10 s), 25 (last)
    monkeypatch.setattr(tr, "time", Clock(5.0))
    tr.train(CFG, split, tmp_path / "a")
    assert progress(caplog.messages) == [f"{rid} step 40/50 3 steps/s",  # 40 / 15
                                         f"{rid} step 50/50 2 steps/s"]  # 50 / 20  # fmt: skip
    # under a second since the start: 20 steps in 0.5 s
    caplog.clear()
    monkeypatch.setattr(tr, "time", Clock(0.25))
    tr.train(CFG, split, tmp_path / "b", progress_every_s=0.25)
    assert progress(caplog.messages)[0] == f"{rid} step 20/50 40 steps/s"


def test_progress_lines_show_the_latest_checkpoint(split, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="grokking_llc.training.train")
    res = tr.train(CFG, split, tmp_path / "a", progress_every_s=0.0)
    lines = [m for m in caplog.messages if "steps/s" in m]
    for line, r in zip(lines, res.log.iloc[1:].itertuples(), strict=True):
        assert line.startswith(
            f"{CFG.run_id} step {r.step}/50  train loss {r.train_loss:.3g} acc {r.train_acc:.3f}"
            f"  val loss {r.val_loss:.3g} acc {r.val_acc:.3f}  "
        )


def test_initial_state_passes_the_model_options():
    c = cfg(model="transformer", width=8, loss="cross_entropy",
            model_options={"ff_dim": 4, "num_layers": 1, "num_heads": 2})  # fmt: skip
    _, model, _ = tr._initial_state(c, torch.device("cpu"))
    assert (model.num_layers, model.num_heads, model.ff_dim) == (1, 2, 4)
    _, model, _ = tr._initial_state(CFG, torch.device("meta"))  # moved to the device
    assert all(p.is_meta for p in model.parameters())


def test_tensors_and_model_go_to_the_resolved_device(split, tmp_path, monkeypatch):
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
    tr.train(cfg(max_steps=1), split, tmp_path / "w", device="cpu")
    cpu = torch.device("cpu")
    assert seen == [("split", ("train", cpu), {}), ("split", ("val", cpu), {}),
                    ("init", (cpu,), {})]  # fmt: skip


def test_train_run_passes_the_device(split, tmp_path, monkeypatch):
    seen = []
    real = tr.train

    def spy(*a, **kw):
        seen.append(kw.get("device"))
        return real(*a, **{**kw, "device": "cpu"})

    monkeypatch.setattr(tr, "train", spy)
    tr.train_run(cfg(max_steps=1), split, log_path=tmp_path / "l.parquet",
                 checkpoints_path=tmp_path / "c.pt", work_dir=tmp_path / "w",
                 device="sentinel")  # fmt: skip
    assert seen == ["sentinel"]


def test_only_the_logged_and_unchanged_checkpoints_are_collected(split, tmp_path, monkeypatch):
    c = cfg(max_steps=20)
    work = tmp_path / "w"

    def stray(point, step):  # a file appearing after the training, not in the log
        if point == "trained":
            torch_save(torch_load(tr.ckpt_path(work, 0)), tr.ckpt_path(work, 30))

    monkeypatch.setattr(tr, "_FAULT_HOOK", stray)
    assert tr.train(c, split, work).checkpoints["steps"].tolist() == [0, 20]

    def tamper(point, step):  # a logged file changed after it was written
        if point == "trained":
            torch_save(torch_load(tr.ckpt_path(work, 0)), tr.ckpt_path(work, 20))

    monkeypatch.setattr(tr, "_FAULT_HOOK", tamper)
    work = tmp_path / "w2"
    with pytest.raises(CheckpointFileError, match="ckpt_0000020.pt is missing or differs"):
        tr.train(c, split, work)


def test_discard_of_a_missing_file_is_fine(tmp_path):
    tr._discard(tmp_path / "gone.pt", "already removed")
    assert not (tmp_path / "gone.pt").exists()


def test_resume_from_the_previous_state_when_the_state_is_missing(stopped):
    work, _ = stopped
    (work / tr.STATE_FILE).unlink()
    got = tr._resume_state(CFG, work)
    assert got["step"] == 0 and (work / tr.STATE_FILE).exists()
