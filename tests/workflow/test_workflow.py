"""End-to-end: the real Snakefile, run the way a user runs it, on the tiny `.test` config.

Every test works in a fresh copy of the repository (the workflow files, not results), runs
Snakemake from that copy's root with the target first and the user's own config after it
(`snakemake --cores 2 all --configfile my.yaml`, as the README shows), and then edits the config
and asks a dry run which rules would execute (a config edit touches only what depends on it).
Tests share one finished run but never change it: a test that runs more jobs copies it first.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from grokking_llc.pipeline.config import load_workflow_config
from grokking_llc.pipeline.plan import build_plan, shape_of
from grokking_llc.science.claims import NO_SAMPLER
from grokking_llc.training.train import (
    LOG_COLUMNS,
)

from .helpers import REPO, snakemake, workspace

pytestmark = pytest.mark.e2e


TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"


def planned_jobs(ws: Path, config: str = "my.yaml", target: str = "figures") -> dict[str, int]:
    """Rules a dry run would execute, with their job counts (from Snakemake's job stats)."""
    out = snakemake(ws, "-n", target, config=config)
    assert out.returncode == 0, out.stderr + out.stdout
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1].split("total")[0]
    jobs: dict[str, int] = {}
    for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M):
        # one rule per batched training group (train_group_<id>): counted together
        name = "train_group" if m[1].startswith("train_group_") else m[1]
        jobs[name] = jobs.get(name, 0) + int(m[2])
    return jobs


def write_config(ws: Path, change=None, name: str = "edited.yaml") -> str:
    data = yaml.safe_load((ws / "my.yaml").read_text())
    if change is not None:
        change(data)
    (ws / name).write_text(yaml.safe_dump(data, sort_keys=True))  # reorders keys, as a tool may
    return name


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    """A finished `all` run of the `.test` config, from a user's checkout."""
    ws = workspace(tmp_path_factory.mktemp("e2e") / "repo")
    shutil.copy(TEST_CONFIG, ws / "my.yaml")
    out = snakemake(ws, "all")
    assert out.returncode == 0, out.stderr[-6000:]
    return ws


def copy_of(ws: Path, tmp_path: Path) -> Path:
    """A copy of a finished workspace (results and Snakemake's metadata included)."""
    dest = tmp_path / "repo"
    shutil.copytree(ws, dest, symlinks=True)
    return dest


LLC_PLOTS = {"plot_figure", "summarize_runs", "score_claims", "figures"}


STATUSES = {"valid", "invalid", "not_a_minimum"}


# issue 19: what each LLC row says beyond valid/invalid
LLC_CHECK_COLUMNS = ("status", "invalid_reason", "at_minimum", "llc_bound", "grad_norm",
                     "gradient_bias", "ess_tail", "drift_se")  # fmt: skip


def _make_unlock(workdir, fakebin):
    return subprocess.run(
        ["make", "--no-print-directory", "-s", "-f", str(REPO / "Makefile"), "-C", str(workdir),
         "unlock", f"BIN={fakebin}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_outputs_have_the_documented_schemas(done_run):
    results = done_run / "results"
    plan_cfg = yaml.safe_load((done_run / "my.yaml").read_text())
    for split_file in (results / "splits").glob("*.parquet"):
        split = pd.read_parquet(split_file)
        assert list(split.columns) == ["a", "b", "c", "split"]
        assert len(split) == int(split_file.name.split("-")[0][1:]) ** 2
    training = pd.read_parquet(results / "tables" / "training_summary.parquet")
    assert len(training) == 14 and training["run_id"].is_unique
    runs = pd.read_parquet(results / "tables" / "runs.parquet")
    assert set(runs["sampler"]) == set(plan_cfg["llc"]["samplers"])
    assert not runs.duplicated(["run_id", "sampler"]).any()
    assert {"gsm", "final_llc", "final_llc_valid", "max_llc", "n_llc_valid"} <= set(runs)
    assert {"final_llc_status", "final_llc_invalid_reason", "max_llc_status",
            "max_llc_invalid_reason", "max_llc_all", "max_llc_all_step",
            "n_llc_not_a_minimum"} <= set(runs)  # fmt: skip
    assert set(runs["final_llc_status"]) <= STATUSES and set(runs["max_llc_status"]) <= STATUSES
    assert (runs["max_llc_all"] >= runs["max_llc"]).all()
    for run_dir in (results / "runs").iterdir():
        log = pd.read_parquet(run_dir / "train_log.parquet")
        assert tuple(log.columns) == LOG_COLUMNS and log["step"].iloc[-1] == 200
        assert not (run_dir / "partial").exists()
    (baseline,) = training.loc[training["studies"].map(lambda s: "baseline" in s), "run_id"]
    log = pd.read_parquet(results / "runs" / baseline / "train_log.parquet")
    (full,) = (results / "llc" / baseline).glob("*/every1.parquet")  # paper: every checkpoint
    # calibrated: adaptive selection (.test: refine coarse 2, max_fraction 0.8)
    (adaptive,) = (results / "llc" / baseline).glob("*/every1-refine2-0.1-0.8.parquet")
    for track in (full, adaptive):
        llc = pd.read_parquet(track)
        assert {"valid", "stationary", "localisation_dominated", "r_hat", "ess"} <= set(llc)
        assert set(LLC_CHECK_COLUMNS) <= set(llc)
        assert llc["valid"].dtype == bool and set(llc["status"]) <= STATUSES
        assert (llc["valid"] == (llc["status"] == "valid")).all()
    llc = pd.read_parquet(full)
    assert llc["step"].tolist() == log["step"].tolist() and (llc["selection"] == "all").all()
    llc = pd.read_parquet(adaptive)
    coarse = llc.loc[llc["selection"] == "coarse", "step"].tolist()
    assert coarse == [0, 100, 200]  # every 2nd of the 5 checkpoints and the last
    assert 3 <= len(llc) <= 4 and set(llc["selection"]) <= {"coarse", "refined"}
    # calibrated sampler: final checkpoint only for over_p
    over_p = training.loc[training["studies"].map(lambda s: "over_p" in s), "run_id"]
    finals = [f for r in over_p for f in (results / "llc" / r).glob("*/final.parquet")]
    assert len(finals) == len(over_p) - 1  # baseline's run is also in over_p: full track there
    theory = pd.read_parquet(results / "theory" / f"{baseline}.parquet")
    assert theory["step"].tolist() == log["step"].tolist() and (theory["K_eff"] <= 16).all()
    claims = pd.read_parquet(results / "tables" / "claims.parquet")
    assert set(claims["sampler"]) <= set(plan_cfg["llc"]["samplers"]) | {NO_SAMPLER}
    assert set(claims["verdict"]) <= {"holds", "fails", "inconclusive"}
    assert set(claims["verdict_as_published"]) <= {"reproduced", "not_reproduced", "n/a"}
    # the calibrated sampler: one calibration per model shape (p 7, 11 and 13 at width 16), at
    # the shape's most typical run, each with a chosen setting and its figure
    plan = build_plan(load_workflow_config([done_run / "my.yaml"]))
    cals = plan.calibrations
    assert sorted(c.shape for c in cals.values()) == [
        "quadratic-p11-K16", "quadratic-p13-K16", "quadratic-p7-K16",
    ]  # fmt: skip
    assert sorted(p.name for p in (results / "calibration").glob("*.parquet")) == sorted(
        f"{name}.parquet" for name in cals
    )
    for name, cal in cals.items():
        table = pd.read_parquet(results / "calibration" / f"{name}.parquet")
        assert table["chosen"].sum() >= 1 and set(table["run_id"]) == {cal.runs[0].run_id}
        assert shape_of(cal.runs[0].train) == cal.shape
    pngs = list((results / "figures").rglob("*.png"))
    names = {str(p.relative_to(results / "figures").with_suffix("")) for p in pngs}
    for expected in (
        "paper/fig1_llc_vs_p", "calibrated/fig1_llc_vs_p", "fig3_llc_tracks_generalisation",
        "fig4_lr_vs_gsm", "fig14_scaling_regimes", "paper/fig_h2_panels",
        "fig13_transformer", "fig_b2_sampler_sensitivity",
        *[f"fig_calibration_{name}" for name in cals],
    ):  # fmt: skip
        assert expected in names, (expected, names)
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    for rule in ("make_split", "train_model", "estimate_llc", "calibrate_sampler", "plot_figure"):
        assert list((results / "logs" / rule).rglob("*.log")), rule
        assert list((results / "benchmarks" / rule).rglob("*.tsv")), rule


def test_html_report_has_every_figure(done_run, tmp_path):
    out = snakemake(done_run, "figures", "--report", str(tmp_path / "report.html"))
    assert out.returncode == 0, out.stderr[-3000:]
    html = (tmp_path / "report.html").read_text(errors="replace")
    for png in (done_run / "results" / "figures").rglob("*.png"):
        assert png.name in html, png.name


def test_rerun_does_nothing(done_run):
    assert planned_jobs(done_run, target="all") == {}


def test_paper_sampler_edit_reruns_its_tracks_grids_and_plots_only(done_run):
    name = write_config(done_run, lambda c: c["llc"]["samplers"]["paper"].update(lr=2.0e-4))
    jobs = planned_jobs(done_run, name)
    assert set(jobs) == {"estimate_llc", "gather_llc", "estimate_llc_grid"} | LLC_PLOTS
    assert "calibrate_sampler" not in jobs and "train_model" not in jobs
    assert "train_group" not in jobs


@pytest.mark.parametrize(
    "edit",
    [
        lambda cal: cal["grid"].update(nbeta=[2.5]),
        lambda cal: cal.update(max_steps=80),
    ],
    ids=["grid", "max_steps"],
)
def test_calibration_edit_reruns_calibration_and_calibrated_tracks_only(done_run, edit):
    name = write_config(done_run, lambda c: edit(c["llc"]["calibration"]))
    jobs = planned_jobs(done_run, name)
    assert set(jobs) == {"calibrate_sampler", "estimate_llc", "gather_llc"} | LLC_PLOTS
    cfg = yaml.safe_load((done_run / "my.yaml").read_text())
    # one calibration per model shape of the calibrated sampler (p 7, 11, 13): 3 jobs. It
    # covers baseline (1 run, every checkpoint, in llc.chunks jobs) and over_p (3 runs,
    # baseline's among them; the 2 others final-only, one job each): 3 tracks
    assert jobs["calibrate_sampler"] == 3
    assert jobs["gather_llc"] == 3 and jobs["estimate_llc"] == cfg["llc"]["chunks"] + 2


def test_calibrating_at_more_runs_than_a_shape_has_reruns_nothing(done_run):
    """.test: each shape of the calibrated sampler has one run, so `runs: 2` calibrates at the
    same run: no job changes."""
    name = write_config(done_run, lambda c: c["llc"]["calibration"].update(runs=2))
    assert planned_jobs(done_run, name) == {}


def test_plot_edit_reruns_only_plots(done_run):
    name = write_config(done_run, lambda c: c.setdefault("plots", {}).update(dpi=61))
    assert set(planned_jobs(done_run, name)) == {"plot_figure", "figures"}


def test_stride_entry_for_another_study_reruns_nothing(done_run):
    name = write_config(
        done_run, lambda c: c["llc"].setdefault("every_by_study", {}).update(scaling=3)
    )
    assert planned_jobs(done_run, name) == {}


def test_changing_every_leaves_grids_and_calibration_alone(done_run):
    name = write_config(done_run, lambda c: c["llc"].update(every=2))
    jobs = planned_jobs(done_run, name)
    assert "estimate_llc_grid" not in jobs and "calibrate_sampler" not in jobs
    assert "estimate_llc" in jobs and "train_model" not in jobs and "train_group" not in jobs


def test_config_override_from_the_command_line(done_run):
    out = snakemake(done_run, "-n", "figures", "--config", "plots={dpi: 61}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "plot_figure" in out.stdout and "train_model" not in out.stdout
    assert "train_group" not in out.stdout


def test_new_sweep_value_trains_only_the_new_run(done_run):
    name = write_config(done_run, lambda c: c["studies"]["over_width"]["width"].append(12))
    jobs = planned_jobs(done_run, name)
    assert jobs["train_model"] == 1 and "make_split" not in jobs and "train_group" not in jobs
    chunks = yaml.safe_load((done_run / "my.yaml").read_text())["llc"]["chunks"]
    assert jobs["estimate_llc"] == chunks and jobs["gather_llc"] == 1  # paper only


def test_a_new_shape_gets_its_own_calibration_and_leaves_the_others(done_run):
    """A p added to over_p is a new model shape: its run is trained, calibrated and estimated
    by both samplers (final only); no other shape's calibration reruns."""
    name = write_config(done_run, lambda c: c["studies"]["over_p"]["p"].append(17))
    jobs = planned_jobs(done_run, name)
    assert jobs["train_model"] == 1 and jobs["make_split"] == 1 and "train_group" not in jobs
    assert jobs["calibrate_sampler"] == 1
    chunks = yaml.safe_load((done_run / "my.yaml").read_text())["llc"]["chunks"]
    assert jobs["estimate_llc"] == chunks + 1 and jobs["gather_llc"] == 2  # paper + calibrated


def test_more_runs_of_a_calibrated_shape_rerun_no_calibration(done_run):
    """lr_wd (2 lr x 2 weight decay x 2 seeds, all p 7 at width 16, trained already) given to
    the calibrated sampler: its runs are of the shape p 7 already calibrated, whose most typical
    run (the baseline's: the config's lr and weight decay, seed 0) is still the one calibrated,
    so they are estimated under that calibration; no training, no calibration reruns."""
    name = write_config(
        done_run, lambda c: c["llc"]["samplers"]["calibrated"]["studies"].append("lr_wd")
    )
    jobs = planned_jobs(done_run, name)
    assert "calibrate_sampler" not in jobs and "train_model" not in jobs
    assert "train_group" not in jobs and "estimate_llc_grid" not in jobs
    # the 7 lr_wd runs the calibrated sampler had not estimated (the 8th is the baseline's)
    assert jobs["gather_llc"] == 7


def test_one_runs_training_edit_retrains_that_run_only(done_run):
    name = write_config(done_run, lambda c: c["studies"]["transformer"].update(lr=2.0e-3))
    jobs = planned_jobs(done_run, name)
    assert jobs["train_model"] == 1 and "make_split" not in jobs and "train_group" not in jobs


def test_a_new_seed_trains_one_new_group_and_leaves_the_others(done_run):
    """lr_wd sweeps 2 seeds per setting (trained in pairs); a third seed makes new groups of
    three, whose runs 0 and 1 are bitwise those already trained -- but a new group is a new job,
    so the study's runs are trained again (the cost of batching, stated in the README)."""
    name = write_config(done_run, lambda c: c["studies"]["lr_wd"].update(seed=[0, 1, 2]))
    jobs = planned_jobs(done_run, name)
    assert jobs["train_group"] == 4 and "train_model" not in jobs  # 2 lr x 2 wd settings


def test_a_small_config_of_ones_own_runs_exactly_that(done_run, tmp_path):
    """Only what the user's file names: no study of config/config.yaml is merged in."""
    ws = workspace(tmp_path / "repo")
    small = {
        "train": {"p": 7, "train_frac": 0.6, "width": 8, "batch_size": 16, "lr": 1.0e-2,
                  "max_steps": 100, "checkpoint_every": 50},
        "studies": {"mine": {}},
        "llc": {"samplers": {"paper": {"lr": 1.0e-4, "num_chains": 2, "num_burnin_steps": 2,
                                       "num_draws": 5, "batch_size": 16,
                                       "num_init_loss_batches": 2}}},
        "figures": {"fig3": {"study": "mine"}, "traces": {"study": None}},
    }  # fmt: skip
    (ws / "mine.yaml").write_text(yaml.safe_dump(small))
    jobs = planned_jobs(ws, "mine.yaml")
    assert jobs["train_model"] == 1 and jobs["estimate_llc"] == 1
    out = snakemake(ws, "figures", config="mine.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (ws / "results" / "figures" / "fig3_llc_tracks_generalisation.png").exists()


def test_old_and_new_sampler_results_coexist(done_run, tmp_path):
    ws = copy_of(done_run, tmp_path)
    name = write_config(ws, lambda c: c["llc"]["samplers"]["paper"].update(num_draws=10))
    out = snakemake(ws, "figures", config=name)
    assert out.returncode == 0, out.stderr[-3000:]
    for run_dir in (ws / "results" / "llc").iterdir():
        paper_tracks = [
            t for t in run_dir.glob("*/*.parquet") if "chunk" not in t.name
            and len(pd.read_parquet(t)["loss_trace"].iloc[0][0]) in (25, 15)
        ]  # fmt: skip
        lengths = {len(pd.read_parquet(t)["loss_trace"].iloc[0][0]) for t in paper_tracks}
        assert lengths == {25, 15}, run_dir
    # back to the old sampler: its tables are still there, so only summaries and plots rerun
    assert set(planned_jobs(ws)) <= {"summarize_runs", "score_claims", "plot_figure", "figures"}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["train"].update(p=8), "train.p: must be a prime number, got 8"),
        (lambda c: c["figures"]["fig1"].update(study="nope"), "figures.fig1.study"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, change, message):
    ws = workspace(tmp_path / "repo")
    shutil.copy(TEST_CONFIG, ws / "my.yaml")
    name = write_config(ws, change)
    out = snakemake(ws, "figures", config=name)
    assert out.returncode != 0
    assert message in out.stderr + out.stdout
    assert not (ws / "results").exists()
    assert "Traceback" not in out.stderr


def test_a_deleted_intermediate_is_rebuilt(done_run, tmp_path):
    """Issue 13: deleting a split, a training log or an LLC chunk and running `figures` again
    rebuilds it (every intermediate is an input of the targets), rather than "Nothing to be
    done"."""
    ws = copy_of(done_run, tmp_path)
    results = ws / "results"
    next((results / "splits").glob("*.parquet")).unlink()
    next((results / "runs").glob("*/train_log.parquet")).unlink()
    next((results / "llc").glob("*/*/*-chunk0of*.parquet")).unlink()
    jobs = planned_jobs(ws)
    assert jobs.get("make_split") == 1 and jobs.get("train_model", 0) >= 1
    assert jobs.get("estimate_llc", 0) >= 1


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


# Issue 22: code versions follow the layers. Each case edits the package in a copy of a finished
# run (the Snakefile puts the workspace's src/ first on sys.path) and asks a dry run what reruns.
CODE_EDITS = {
    # a figure module: what a figure draws
    "figure_module": ("src/grokking_llc/figures/traces.py", None, "plot"),
    # the figure part of the plan: what each figure job is handed
    "figure_plan": (
        "src/grokking_llc/pipeline/figure_plan.py",
        ('return {"key": self.key, ', 'return {"key": self.key, "edited": 1, '),
        "plot",
    ),
    # a claim's verdict rule
    "verdict_rule": (
        "src/grokking_llc/science/claims.py",
        ("TRACKING_RHO = 0.5", "TRACKING_RHO = 0.6"),
        "claims",
    ),
    # the sampler
    "sampler": ("src/grokking_llc/sampling/sgld.py", None, "sampler"),
}


@pytest.mark.parametrize("edit", sorted(CODE_EDITS))
def test_a_code_edit_reruns_only_the_stages_that_run_that_code(done_run, tmp_path, edit):
    ws = copy_of(done_run, tmp_path)
    rel, swap, kind = CODE_EDITS[edit]
    path = ws / rel
    text = path.read_text()
    if swap is None:  # a real change of the module's content (a new module-level name)
        text += "\nEDITED_BY_TEST = True\n"
    else:
        assert text.count(swap[0]) == 1, f"{rel} no longer has {swap[0]!r}"
        text = text.replace(swap[0], swap[1])
    path.write_text(text)
    jobs = planned_jobs(ws)
    if kind == "plot":
        assert set(jobs) == {"plot_figure", "figures"}, jobs
    elif kind == "claims":
        assert set(jobs) == {"score_claims", "figures"}, jobs
    else:
        assert {"estimate_llc", "calibrate_sampler"} <= set(jobs), jobs
        assert not {"make_split", "train_model", "train_group"} & set(jobs), jobs
