"""grokking_llc.pipeline.stages: each stage's entry point on small inputs -- what it writes, the
provenance it records and checks, and checkpoint batches and adaptive tracks of the LLC stage."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from grokking_llc.core.data import make_split
from grokking_llc.core.io import (
    ProvenanceError,
    parquet_provenance,
    provenance,
    torch_load,
    torch_save,
    write_parquet,
)
from grokking_llc.core.model import build_model
from grokking_llc.core.settings import SamplerConfig, TrainConfig
from grokking_llc.pipeline.stages.gather import run_gather_llc
from grokking_llc.pipeline.stages.llc import (
    BATCH_FLOATS_PER_THREAD,
    MAX_BATCH,
    checkpoint_batch,
    estimate_run_llc,
    run_estimate_llc,
    run_estimate_llc_grid,
)
from grokking_llc.pipeline.stages.summary import (
    run_summarize_runs,
    run_summarize_training,
    summarize_track,
)
from grokking_llc.pipeline.stages.theory import run_compute_theory
from grokking_llc.sampling.refine import RefineSettings
from grokking_llc.training.checkpoints import load_checkpoints, run_provenance
from grokking_llc.training.train import train_run

RUN = TrainConfig(p=7, train_frac=0.6, width=6, batch_size=8, max_steps=20, checkpoint_every=10)


SAMPLER = SamplerConfig(
    lr=1e-4, nbeta=5.0, localization=10.0, num_chains=2, num_burnin_steps=3, num_draws=10,
    batch_size=8, num_init_loss_batches=2, seed=7,
)  # fmt: skip


def checkpoints(states, steps):
    return {
        "steps": torch.tensor(steps),
        "params": {k: torch.stack([s[k] for s in states]) for k in states[0]},
    }


@pytest.fixture(scope="module")
def split():
    return make_split(RUN.p, RUN.train_frac, 0)


def model_state(seed):
    gen = torch.Generator().manual_seed(seed)
    return build_model("quadratic", RUN.p, width=RUN.width, generator=gen).state_dict()


def traces(df):
    return {int(r.step): np.asarray([np.asarray(t) for t in r.loss_trace]) for r in df.itertuples()}


A = TrainConfig(p=7, train_frac=0.6, width=6, lr=1e-2, batch_size=8, max_steps=20,
                checkpoint_every=10, seed=0)  # fmt: skip


B = TrainConfig(**{**A.to_dict(), "seed": 1})


SAMPLER_PROV = {"lr": 1e-4, "nbeta": 5.0, "localization": 10.0, "num_chains": 2,
           "num_burnin_steps": 2, "num_draws": 4, "batch_size": 8, "num_init_loss_batches": 2,
           "seed": 7}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs A and B trained to ``<root>/runs/<run id>/``, and their split."""
    root = tmp_path_factory.mktemp("prov")
    split = make_split(A.p, A.train_frac, A.data_seed)
    split_path = root / "split.parquet"
    write_parquet(split, split_path)
    out = {"root": root, "split": split_path}
    for cfg in (A, B):
        d = root / "runs" / cfg.run_id
        train_run(cfg, split, log_path=d / "train_log.parquet",
                  checkpoints_path=d / "checkpoints.pt", work_dir=d / "partial")  # fmt: skip
        out[cfg.seed] = {"ck": d / "checkpoints.pt", "log": d / "train_log.parquet"}
    return out


def llc_params(cfg):
    return {"run": cfg.to_dict(), "backend": "fast", "sampler": SAMPLER_PROV, "every": 1}


def swapped(runs, tmp_path, what):
    """Run B's files with run A's ``what`` (``ck`` or ``log``) copied over B's, as in issue 21."""
    d = tmp_path / "runs" / B.run_id
    d.mkdir(parents=True)
    files = {k: d / runs[1][k].name for k in ("ck", "log")}
    for key, dest in files.items():
        shutil.copy(runs[0 if key == what else 1][key], dest)
    return files


def ckpts(n: int):
    """``n`` checkpoints of distinct quadratic nets at steps 0, 10, 20, ..."""
    return checkpoints([model_state(s) for s in range(n)], list(range(0, 10 * n, 10)))


def test_each_checkpoint_is_sampled_with_seed_plus_its_step(split):
    """Two checkpoints with identical weights at steps 0 and 10 get different noise (seed + step),
    and the checkpoint at step 10 gives the same trace whichever position it holds."""
    same = model_state(0)
    df = estimate_run_llc(
        checkpoints([same, same], [0, 10]), split, RUN, SAMPLER, backend="fast", every=1
    )
    t = traces(df)
    assert not np.allclose(t[0], t[10])
    alone = estimate_run_llc(
        checkpoints([same], [10]), split, RUN, SAMPLER, backend="fast", every=1
    )
    np.testing.assert_array_equal(traces(alone)[10], t[10])


def test_results_do_not_depend_on_chunking(split):
    ckpts = checkpoints([model_state(s) for s in range(5)], [0, 10, 20, 30, 40])
    whole = estimate_run_llc(ckpts, split, RUN, SAMPLER, backend="fast", every=2)
    assert whole["step"].tolist() == [0, 20, 40]
    parts = [
        estimate_run_llc(ckpts, split, RUN, SAMPLER, backend="fast", every=2, chunk=c, chunks=2)
        for c in range(2)
    ]
    merged = pd.concat(parts).sort_values("step", ignore_index=True)
    np.testing.assert_array_equal(merged["llc_mean"], whole["llc_mean"])
    assert {"valid", "stationary", "r_hat"} <= set(whole.columns)


def test_gather_refuses_overlapping_chunks(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pd.DataFrame({"step": [0, 20], "llc_mean": [1.0, 2.0]}).to_parquet(a)
    pd.DataFrame({"step": [10], "llc_mean": [3.0]}).to_parquet(b)
    out = run_gather_llc([str(b), str(a)], str(tmp_path / "out.parquet"))
    assert out["step"].tolist() == [0, 10, 20] and out["llc_mean"].tolist() == [1.0, 3.0, 2.0]
    pd.DataFrame({"step": [20], "llc_mean": [9.0]}).to_parquet(b)
    with pytest.raises(ValueError, match="overlap"):
        run_gather_llc([str(a), str(b)], str(tmp_path / "out2.parquet"))


def test_summarize_track_final_max_and_validity():
    track = pd.DataFrame(
        {
            "step": [30, 0, 10, 20],
            "llc_mean": [5.0, 1.0, np.nan, 7.0],
            "llc_std": [0.5, 0.1, np.nan, 0.7],
            "valid": [True, False, False, False],
        }
    )
    s = summarize_track(track)
    assert (s["final_llc"], s["final_llc_std"], s["final_llc_valid"]) == (5.0, 0.5, True)
    # the maximum is over valid estimates when there are any: 7.0 at step 20 is not valid
    assert (s["max_llc"], s["max_llc_step"], s["max_llc_valid"]) == (5.0, 30.0, True)
    assert (s["n_llc"], s["n_llc_valid"], s["final_step_llc"]) == (4, 1, 30)
    # a table without validity columns is "not validated", never valid
    legacy = summarize_track(track.drop(columns="valid"))
    assert legacy["n_llc_valid"] == 0 and legacy["final_llc_valid"] is False
    assert (legacy["max_llc"], legacy["max_llc_step"], legacy["max_llc_valid"]) == (
        7.0,
        20.0,
        False,
    )


def test_runs_table_has_one_row_per_run_and_sampler(tmp_path):
    training = pd.DataFrame({"run_id": ["r1", "r2"], "gsm": [0.1, 0.2], "studies": [["a"], ["a"]]})
    training.to_parquet(tmp_path / "training.parquet")
    for name, values in {"t1": [1.0, 2.0], "t2": [3.0, 4.0], "t3": [5.0, 6.0]}.items():
        pd.DataFrame(
            {"step": [0, 10], "llc_mean": values, "llc_std": [0.0, 0.0], "valid": [True, True]}
        ).to_parquet(tmp_path / f"{name}.parquet")
    tracks = [
        {
            "run_id": "r1",
            "sampler": "paper",
            "sampler_id": "x",
            "path": str(tmp_path / "t1.parquet"),
        },
        {
            "run_id": "r2",
            "sampler": "paper",
            "sampler_id": "x",
            "path": str(tmp_path / "t2.parquet"),
        },
        {"run_id": "r1", "sampler": "cal", "sampler_id": "y", "path": str(tmp_path / "t3.parquet")},
    ]
    df = run_summarize_runs(
        str(tmp_path / "training.parquet"), tracks, str(tmp_path / "runs.parquet")
    )
    assert len(df) == 3
    row = df[(df.run_id == "r1") & (df.sampler == "cal")].iloc[0]
    assert row.final_llc == 6.0 and row.gsm == 0.1 and row.sampler_id == "y"
    assert df[(df.run_id == "r2")].iloc[0].final_llc == 4.0


def test_a_chunk_without_checkpoints_is_an_empty_table_with_every_column(split):
    ckpts = checkpoints([model_state(0)], [0])
    empty = estimate_run_llc(ckpts, split, RUN, SAMPLER, backend="fast", every=1, chunk=1, chunks=2)
    full = estimate_run_llc(ckpts, split, RUN, SAMPLER, backend="fast", every=1, chunk=0, chunks=2)
    assert len(empty) == 0 and len(full) == 1
    assert list(empty.columns) == list(full.columns)


def test_a_setting_that_failed_calibration_makes_every_estimate_invalid(split):
    """An estimate's own checks cannot make up for a setting whose calibration failed."""
    ckpts = checkpoints([model_state(0), model_state(1)], [0, 10])
    kw = dict(backend="fast", every=1)
    free = estimate_run_llc(ckpts, split, RUN, SAMPLER, **kw)
    passed = estimate_run_llc(ckpts, split, RUN, SAMPLER, setting_valid=True, **kw)
    failed = estimate_run_llc(ckpts, split, RUN, SAMPLER, setting_valid=False, **kw)
    assert free["setting_valid"].isna().all() and passed["setting_valid"].all()
    np.testing.assert_array_equal(passed["valid"], free["valid"])
    np.testing.assert_array_equal(failed["llc_mean"], free["llc_mean"])  # same numbers
    assert not failed["valid"].any() and (failed["setting_valid"] == False).all()  # noqa: E712
    assert failed["invalid_reason"].str.endswith("failed its calibration checks").all()


def test_a_group_job_writes_each_runs_outputs_as_training_it_alone(tmp_path, split):
    """train_group_<id> (stages.train.run_train_group) against train_model for each run: the
    same checkpoints and logs, bitwise, in each run's own files; work dirs removed."""
    from grokking_llc.core.io import torch_load
    from grokking_llc.pipeline.stages.train import run_train_group, run_train_model

    split_path = tmp_path / "split.parquet"
    split.to_parquet(split_path)
    runs = [RUN.to_dict() | {"seed": s, "lr": 1e-2} for s in (0, 3)]
    out = {}
    for mode in ("group", "alone"):
        d = tmp_path / mode
        paths = [(d / f"r{i}" / "train_log.parquet", d / f"r{i}" / "checkpoints.pt",
                  d / f"r{i}" / "partial") for i in range(2)]  # fmt: skip
        for log_p, _, _ in paths:
            log_p.parent.mkdir(parents=True)
        if mode == "group":
            run_train_group({"runs": runs}, [str(split_path)] * 2,
                            train_logs=[str(p[0]) for p in paths],
                            checkpoints=[str(p[1]) for p in paths],
                            work_dirs=[str(p[2]) for p in paths], device="cpu")  # fmt: skip
        else:
            for run, (log_p, ck, wd) in zip(runs, paths, strict=True):
                run_train_model(run, str(split_path), train_log=str(log_p), checkpoints=str(ck),
                                work_dir=str(wd), device="cpu")  # fmt: skip
        assert not any(p[2].exists() for p in paths)
        out[mode] = [(pd.read_parquet(p[0]), torch_load(p[1])) for p in paths]
    for (log_g, ck_g), (log_a, ck_a) in zip(out["group"], out["alone"], strict=True):
        pd.testing.assert_frame_equal(log_g, log_a)
        assert ck_g["steps"].tolist() == [0, 10, 20]
        for name in ck_a["params"]:
            assert torch.equal(ck_g["params"][name], ck_a["params"][name])
    # two seeds, two different runs
    assert not torch.equal(out["group"][0][1]["params"]["W"], out["group"][1][1]["params"]["W"])


def test_llc_rows_carry_a_status_and_what_was_measured_at_w_star(split):
    """Issue 19's columns of an LLC row: ``status`` (valid / invalid / not_a_minimum), the
    gradient test at w* (``at_minimum``, ``grad_norm``, ``gradient_bias``), the bound an LLC
    cannot exceed (``llc_bound``: d/2 and the data's dimension, SPEC section 10), ``ess_tail``
    and ``drift_se``."""
    from grokking_llc.core.data import n_train

    ckpts = checkpoints([model_state(0), model_state(1)], [0, 10])
    df = estimate_run_llc(ckpts, split, RUN, SAMPLER, backend="fast", every=1)
    new = ("status", "at_minimum", "llc_bound", "grad_norm", "gradient_bias", "ess_tail",
           "drift_se")  # fmt: skip
    assert set(new) <= set(df.columns)
    assert set(df["status"]) <= {"valid", "invalid", "not_a_minimum"}
    assert (df["valid"] == (df["status"] == "valid")).all()
    nam = df["status"] == "not_a_minimum"
    assert nam.any()  # random initial weights: no minimum
    assert not df.loc[nam, "at_minimum"].any()
    assert df.loc[nam, "invalid_reason"].str.startswith("not_a_minimum").all()
    # QuadraticNet: 3pK parameters; the centred loss sees (n - 1) p numbers of the predictions
    d, n = 3 * RUN.p * RUN.width, n_train(RUN.p, RUN.train_frac)
    assert (df["llc_bound"] == 0.5 * min(d, (n - 1) * RUN.p)).all()
    assert (df["grad_norm"] > 0).all() and np.isfinite(df["grad_norm"]).all()


def test_a_failed_setting_leaves_no_estimate_with_status_valid():
    """``status`` is what figures and the scorecard read first
    (:func:`grokking_llc.science.tables.estimate_status`): an estimate that would be valid under a
    setting that failed its calibration must not keep status ``valid``."""
    from grokking_llc.pipeline.stages.llc import _with_setting
    from grokking_llc.science.tables import estimate_status

    row = {"valid": True, "status": "valid", "invalid_reason": ""}
    out = _with_setting(row, False)
    assert out["valid"] is False
    assert estimate_status(pd.DataFrame([out]))[0] != "valid"


def test_summarize_track_statuses_reasons_and_the_maximum_over_every_estimate():
    """The runs table's issue-19 columns: the final and maximum estimates' status and reason,
    ``max_llc_all`` (over every finite estimate, valid or not: the paper's statistic) and how
    many estimates are at no minimum."""
    track = pd.DataFrame(
        {
            "step": [0, 10, 20, 30],
            "llc_mean": [-3.0, 9.0, 4.0, 5.0],
            "llc_std": [1.0, 0.9, 0.4, 0.5],
            "valid": [False, False, True, False],
            "status": ["not_a_minimum", "invalid", "valid", "not_a_minimum"],
            "invalid_reason": ["not_a_minimum: estimate <= 0", "ess 12 < 400", "",
                               "not_a_minimum: gradient term 0.2 > 0.1 of the estimate"],
        }
    )  # fmt: skip
    s = summarize_track(track)
    assert (s["final_llc"], s["final_llc_valid"], s["final_llc_status"]) == (
        5.0,
        False,
        "not_a_minimum",
    )
    assert s["final_llc_invalid_reason"].startswith("not_a_minimum: gradient term")
    # the maximum over the valid estimates (4.0 at 20), the maximum over all (9.0 at 10)
    assert (s["max_llc"], s["max_llc_step"], s["max_llc_status"]) == (4.0, 20.0, "valid")
    assert s["max_llc_invalid_reason"] == ""
    assert (s["max_llc_all"], s["max_llc_all_step"]) == (9.0, 10.0)
    assert (s["n_llc"], s["n_llc_valid"], s["n_llc_not_a_minimum"]) == (4, 1, 2)
    # none valid: the maximum over every finite one, with its status and reason
    none = summarize_track(track.assign(valid=False, status="invalid"))
    assert (none["max_llc"], none["max_llc_status"], none["max_llc_valid"]) == (
        9.0,
        "invalid",
        False,
    )
    assert none["max_llc_invalid_reason"] == "ess 12 < 400" and none["n_llc_not_a_minimum"] == 0
    # a table without the status column: statuses from the flag
    legacy = summarize_track(track.drop(columns=["status", "invalid_reason"]))
    assert (legacy["final_llc_status"], legacy["max_llc_status"]) == ("invalid", "valid")
    assert legacy["final_llc_invalid_reason"] == "" and legacy["n_llc_not_a_minimum"] == 0


def test_run_outputs_carry_their_run(runs):
    prov = run_provenance(A)
    assert prov["run_id"] == A.run_id and len(prov["settings"]) == 16
    assert torch_load(runs[0]["ck"])["provenance"] == prov
    assert parquet_provenance(runs[0]["log"]) == prov
    assert run_provenance(B) != prov
    load_checkpoints(runs[0]["ck"], train_log=runs[0]["log"], expect=A)


@pytest.mark.parametrize("what", ["ck", "log"])
def test_another_runs_file_is_refused_by_every_reader(runs, tmp_path, what):
    """A's checkpoints.pt (or log) in B's folder: the LLC, grid, theory and summary stages all
    refuse it, naming the file and both run ids (main used A's numbers as B's)."""
    files = swapped(runs, tmp_path, what)
    bad = str(files[what])
    calls = [
        lambda: load_checkpoints(files["ck"], train_log=files["log"], expect=B),
        lambda: run_estimate_llc(
            str(files["ck"]), str(runs["split"]), str(files["log"]), str(tmp_path / "o.parquet"),
            llc_params(B), chunk=0, chunks=1, device="cpu", run_id=B.run_id, sampler_id="fast-x",
        ),
        lambda: run_estimate_llc_grid(
            str(files["ck"]), str(runs["split"]), str(files["log"]), str(tmp_path / "g.parquet"),
            {**llc_params(B), "grid": [{"localization": 1.0}]}, device="cpu",
        ),
        lambda: run_compute_theory(str(files["ck"]), str(files["log"]),
                                   str(tmp_path / "t.parquet"), {"run": B.to_dict(), "every": 1}),
    ]  # fmt: skip
    if what == "log":
        calls.append(lambda: run_summarize_training(
            [bad], str(tmp_path / "s.parquet"), {B.run_id: {"run": B.to_dict(), "studies": []}}
        ))  # fmt: skip
    for call in calls:
        with pytest.raises(ProvenanceError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and bad in msg, msg
        assert f"run {A.run_id}" in msg and f"run {B.run_id}" in msg, msg
    assert not list(tmp_path.glob("*.parquet"))  # nothing written


def test_a_checkpoints_file_without_provenance_is_refused_with_advice(runs, tmp_path):
    """Written before this change (or by another tool): refused, with what to do."""
    ck = torch_load(runs[1]["ck"])
    del ck["provenance"]
    old = tmp_path / "checkpoints.pt"
    torch_save(ck, old)
    with pytest.raises(ProvenanceError, match="does not say whose it is.*moves such files aside"):
        load_checkpoints(old, expect=B)
    load_checkpoints(old)  # nothing expected (a direct call): read as before


def test_llc_tables_carry_run_sampler_and_settings_and_gather_checks_them(runs, tmp_path):
    params = llc_params(A)
    chunks = []
    for c in range(2):
        out = tmp_path / f"every1-chunk{c}of2.parquet"
        run_estimate_llc(str(runs[0]["ck"]), str(runs["split"]), str(runs[0]["log"]), str(out),
                         params, chunk=c, chunks=2, device="cpu", run_id=A.run_id,
                         sampler_id="fast-s1")  # fmt: skip
        chunks.append(str(out))
    prov = provenance(A.run_id, params, sampler_id="fast-s1")
    assert all(parquet_provenance(c) == prov for c in chunks)
    track = tmp_path / "every1.parquet"
    run_gather_llc(chunks, str(track), provenance=prov)
    assert parquet_provenance(track) == prov
    # a chunk of another sampler setting among them
    other = tmp_path / "other.parquet"
    write_parquet(pd.read_parquet(chunks[1]), other, provenance={**prov, "sampler_id": "fast-s2"})
    with pytest.raises(ProvenanceError, match=r"sampler fast-s2.*sampler fast-s1"):
        run_gather_llc([chunks[0], str(other)], str(tmp_path / "x.parquet"), provenance=prov)
    with pytest.raises(ProvenanceError, match="disagree"):
        run_gather_llc([chunks[0], str(other)], str(tmp_path / "x.parquet"))
    # the runs table refuses a track of another run
    training = tmp_path / "training.parquet"
    pd.DataFrame({"run_id": [B.run_id], "studies": [["s"]]}).to_parquet(training)
    entry = {"run_id": B.run_id, "sampler": "paper", "sampler_id": "fast-s1", "path": str(track)}
    with pytest.raises(ProvenanceError, match=f"run {A.run_id}.*run {B.run_id}"):
        run_summarize_runs(str(training), [entry], str(tmp_path / "runs.parquet"))


def test_a_calibration_table_of_another_calibration_is_refused(runs, tmp_path):
    cal = tmp_path / "calibration.parquet"
    write_parquet(pd.DataFrame({"x": [1]}), cal, provenance=provenance([A.run_id], {"grid": 1}))
    expected = provenance([A.run_id], {"grid": 2})
    with pytest.raises(ProvenanceError, match=f"{cal} was made for run {A.run_id}"):
        run_estimate_llc(str(runs[0]["ck"]), str(runs["split"]), str(runs[0]["log"]),
                         str(tmp_path / "o.parquet"), {**llc_params(A), "sampler": None},
                         chunk=0, chunks=1, device="cpu", run_id=A.run_id, sampler_id="fast-c",
                         calibration_path=str(cal), calibration_provenance=expected)  # fmt: skip


def test_the_figure_stage_refuses_a_log_its_path_does_not_name(runs, tmp_path):
    from grokking_llc.pipeline.stages.figures import run_plot_figure

    files = swapped(runs, tmp_path, "log")
    params = {"key": "fig3", "plots": {"dpi": 50}}
    with pytest.raises(ProvenanceError, match=f"run {A.run_id}, which its path"):
        run_plot_figure({"train_log": str(files["log"]), "llc": []}, params,
                        str(tmp_path / "f.png"))  # fmt: skip
    assert not (tmp_path / "f.png").exists()


def test_checkpoint_provenance_is_checked_before_any_tensor_is_used(runs, tmp_path):
    """A file whose weights were edited but provenance kept is a digest matter (heal_outputs);
    a file whose provenance was edited to B's settings but is A's run id still fails."""
    ck = torch_load(runs[0]["ck"])
    ck["provenance"] = {**ck["provenance"], "settings": run_provenance(B)["settings"]}
    path = tmp_path / "checkpoints.pt"
    torch_save(ck, path)
    with pytest.raises(ProvenanceError, match="settings"):
        load_checkpoints(path, expect=A)
    assert torch.equal(load_checkpoints(runs[0]["ck"], expect=A)["steps"], ck["steps"])


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


def test_a_checkpoint_whose_chains_diverge_is_estimated_again_at_its_own_edge(split):
    """SPEC 10: a calibrated step is absolute; where a chain diverges at it, the checkpoint is
    estimated again at the calibration's fraction of that checkpoint's own stability edge
    (sampling.edge), and ``sampler_lr`` records the step; where nothing diverges the fraction
    changes nothing."""
    from grokking_llc.core.data import split_tensors
    from grokking_llc.core.model import get_loss
    from grokking_llc.sampling.edge import edge_scale, step_at_edge

    ckpts = checkpoints([model_state(0), model_state(1)], [0, 10])
    kw = dict(backend="fast", every=1)
    big = SamplerConfig.from_mapping({**SAMPLER.to_dict(), "lr": 50.0, "nbeta": 50.0})
    diverged = estimate_run_llc(ckpts, split, RUN, big, **kw)
    assert diverged["num_diverged"].gt(0).all() and diverged["llc_mean"].isna().all()
    assert (diverged["sampler_lr"] == 50.0).all()
    again = estimate_run_llc(ckpts, split, RUN, big, edge_fraction=0.1, **kw)
    assert (again["num_diverged"] == 0).all() and np.isfinite(again["llc_mean"]).all()
    x, y = split_tensors(split, "train", torch.device("cpu"))
    model = build_model("quadratic", RUN.p, width=RUN.width)
    for row, seed in zip(again.itertuples(), (0, 1), strict=True):
        params = {k: v for k, v in model_state(seed).items()}
        lam, gmax = edge_scale(model, params, x, y, get_loss(RUN.loss), big, seed=7 + row.step)
        assert row.sampler_lr == step_at_edge(0.1, 50.0, big.localization, lam, gmax) < 50.0
    calm = estimate_run_llc(ckpts, split, RUN, SAMPLER, **kw)
    same = estimate_run_llc(ckpts, split, RUN, SAMPLER, edge_fraction=0.1, **kw)
    np.testing.assert_array_equal(same["llc_mean"], calm["llc_mean"])
    assert (same["sampler_lr"] == SAMPLER.lr).all()
