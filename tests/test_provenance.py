"""Files prove whose they are (issue 21, item 1): every checkpoints file, training log, LLC
table and calibration table carries the run id and the hash of the settings that made it (and
the sampler id for LLC tables); every reader refuses one made for another run, sampler or
setting, in one line naming the file and both ids. Issue 21's case: one run's checkpoints.pt
copied over another's was used without a word."""

import shutil

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
from grokking_llc.core.settings import TrainConfig
from grokking_llc.pipeline.stages.gather import run_gather_llc
from grokking_llc.pipeline.stages.llc import run_estimate_llc, run_estimate_llc_grid
from grokking_llc.pipeline.stages.summary import run_summarize_runs, run_summarize_training
from grokking_llc.pipeline.stages.theory import run_compute_theory
from grokking_llc.training.checkpoints import load_checkpoints, run_provenance
from grokking_llc.training.train import train_run

A = TrainConfig(p=7, train_frac=0.6, width=6, lr=1e-2, batch_size=8, max_steps=20,
                checkpoint_every=10, seed=0)  # fmt: skip
B = TrainConfig(**{**A.to_dict(), "seed": 1})
SAMPLER = {"lr": 1e-4, "nbeta": 5.0, "localization": 10.0, "num_chains": 2,
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
    return {"run": cfg.to_dict(), "backend": "fast", "sampler": SAMPLER, "every": 1}


def swapped(runs, tmp_path, what):
    """Run B's files with run A's ``what`` (``ck`` or ``log``) copied over B's, as in issue 21."""
    d = tmp_path / "runs" / B.run_id
    d.mkdir(parents=True)
    files = {k: d / runs[1][k].name for k in ("ck", "log")}
    for key, dest in files.items():
        shutil.copy(runs[0 if key == what else 1][key], dest)
    return files


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
