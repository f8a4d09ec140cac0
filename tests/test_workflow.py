"""End-to-end: the real Snakefile on the tiny `.test` config, then config edits and dry runs.

The first test runs the whole `figures` target for real; the others edit a copy of the config
and ask a dry run which rules would execute (SPEC: a config edit touches only what depends on it).
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from grokking_llc.llc import LLC_COLUMNS
from grokking_llc.train import LOG_COLUMNS
from grokking_llc.versions import hash_files

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"


def snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(config), "--cores", "2", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=900)


def planned_jobs(workdir: Path, config: Path, target: str = "figures") -> dict[str, int]:
    """Rules a dry run would execute, with their job counts (from Snakemake's job stats)."""
    out = snakemake(workdir, config, "-n", target)
    assert out.returncode == 0, out.stderr + out.stdout
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def edit(config: Path, change) -> None:
    data = yaml.safe_load(config.read_text())
    change(data)
    config.write_text(yaml.safe_dump(data, sort_keys=True))  # reorders keys, as an editor may


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    """A finished `figures` run of the `.test` config in a scratch working directory."""
    work = tmp_path_factory.mktemp("e2e")
    config = work / "config.yaml"
    shutil.copy(TEST_CONFIG, config)
    out = snakemake(work, config, "all")
    assert out.returncode == 0, out.stderr[-4000:]
    return work, config


FIGURES = {
    "fig1_llc_vs_p", "fig2_llc_vs_width", "fig3_llc_tracks_generalisation", "fig4_lr_vs_gsm",
    "fig13_transformer", "fig14_scaling_regimes", "fig_b2_sampler_sensitivity",
    "fig_bias_reduced_llc", "fig_gsm_vs_llc", "fig_h2_panels", "fig_llc_traces",
    "fig_lr_vs_max_llc",
}  # fmt: skip


def test_outputs_have_the_documented_schemas(done_run):
    work, _ = done_run
    results = work / "results"
    for split_file in (results / "splits").glob("*.parquet"):
        split = pd.read_parquet(split_file)
        assert list(split.columns) == ["a", "b", "c", "split"]
        p = int(split_file.name.split("-")[0][1:])
        assert len(split) == p * p
    summary = pd.read_parquet(results / "tables" / "runs.parquet")
    assert len(summary) == 14 and summary["run_id"].is_unique
    assert {"gsm", "delay", "regime", "llc_final", "llc_max", "llc_max_step"} <= set(summary)
    for run_dir in (results / "runs").iterdir():
        log = pd.read_parquet(run_dir / "train_log.parquet")
        assert tuple(log.columns) == LOG_COLUMNS and log["step"].iloc[-1] == 200
        assert not (run_dir / "partial").exists()
    (baseline,) = summary.loc[summary["studies"].map(lambda s: "baseline" in s), "run_id"]
    log = pd.read_parquet(results / "runs" / baseline / "train_log.parquet")
    (llc_file,) = (results / "llc" / baseline).glob("*.parquet")
    llc = pd.read_parquet(llc_file)
    assert tuple(llc.columns) == LLC_COLUMNS
    assert llc["step"].tolist() == log["step"].tolist()  # every checkpoint (every: 1)
    assert llc["llc_mean"].notna().all() and (llc["backend"] == "fast").all()
    assert all(len(c) == 2 for c in llc["llc_per_chain"])  # 2 chains
    assert all(len(t) == 2 and len(t[0]) == 25 for t in llc["loss_trace"])  # 5 burn-in + 20
    theory = pd.read_parquet(next((results / "theory" / baseline).glob("*.parquet")))
    assert theory["step"].tolist() == llc["step"].tolist() and (theory["K_eff"] <= 16).all()
    figures = {f.stem for f in (results / "figures").glob("*.png")}
    assert figures == FIGURES
    for name in FIGURES:
        png = results / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    for rule in ("make_split", "train_model", "estimate_llc", "gather_llc", "plot_track"):
        assert list((results / "logs" / rule).rglob("*.log")), rule
        assert list((results / "benchmarks" / rule).rglob("*.tsv")), rule


def test_html_report_has_every_figure(done_run):
    work, config = done_run
    out = snakemake(work, config, "--report", str(work / "report.html"), "figures")
    assert out.returncode == 0, out.stderr[-3000:]
    html = (work / "report.html").read_text(errors="replace")
    for png in (work / "results" / "figures").glob("*.png"):
        assert png.name in html, png.name


def test_rerun_does_nothing(done_run):
    assert planned_jobs(*done_run) == {}


PLOTS = {"plot_summary", "plot_track", "plot_h2_panels", "plot_llc_traces", "plot_llc_grid"}


def edited_copy(config: Path, tmp_path: Path, change) -> Path:
    edited = tmp_path / "config.yaml"
    shutil.copy(config, edited)
    edit(edited, change)
    return edited


def test_sampler_edit_reruns_only_llc_and_plots(done_run, tmp_path):
    work, config = done_run
    edited = edited_copy(config, tmp_path, lambda c: c["llc"]["sampler"].update(lr=2.0e-4))
    jobs = planned_jobs(work, edited)
    assert set(jobs) == {
        "estimate_llc", "gather_llc", "estimate_llc_grid", "summarize_runs", *PLOTS, "figures",
    }  # fmt: skip
    # fig4 and fig14 read the training summary only: 4 of the 6 summary figures rerun
    assert jobs["plot_summary"] == 4


def test_plot_edit_reruns_only_plots(done_run, tmp_path):
    work, config = done_run
    edited = edited_copy(config, tmp_path, lambda c: c["plots"].update(dpi=61))
    assert set(planned_jobs(work, edited)) == PLOTS | {"figures"}


def test_new_sweep_value_trains_only_the_new_run(done_run, tmp_path):
    work, config = done_run
    edited = edited_copy(config, tmp_path, lambda c: c["studies"]["over_width"]["width"].append(12))
    jobs = planned_jobs(work, edited)
    assert jobs["train_model"] == 1 and "make_split" not in jobs
    assert jobs["estimate_llc"] == 2 and jobs["gather_llc"] == 1  # its 2 chunks


def test_one_runs_training_edit_retrains_that_run_only(done_run, tmp_path):
    work, config = done_run
    edited = edited_copy(config, tmp_path, lambda c: c["studies"]["transformer"].update(lr=2.0e-3))
    jobs = planned_jobs(work, edited)
    assert jobs["train_model"] == 1 and "make_split" not in jobs


def test_zz_old_and_new_sampler_results_coexist(done_run, tmp_path):
    """Runs last in this module (it changes the shared results)."""
    work, config = done_run
    edited = edited_copy(config, tmp_path, lambda c: c["llc"]["sampler"].update(num_draws=10))
    out = snakemake(work, edited, "figures")
    assert out.returncode == 0, out.stderr[-3000:]
    for run_dir in (work / "results" / "llc").iterdir():
        tables = sorted(run_dir.glob("*.parquet"))
        assert len(tables) == 2, run_dir
        lengths = {len(pd.read_parquet(t)["loss_trace"].iloc[0][0]) for t in tables}
        assert lengths == {25, 15}
    # back to the old sampler: its LLC tables are still there, so only summaries and plots rerun
    assert set(planned_jobs(work, config)) == {"summarize_runs", *PLOTS, "figures"}


def test_bad_config_stops_before_any_job(tmp_path):
    config = tmp_path / "config.yaml"
    shutil.copy(TEST_CONFIG, config)
    edit(config, lambda c: c["train"].update(p=8))
    out = snakemake(tmp_path, config, "figures")
    assert out.returncode != 0
    assert "config error at train.p: must be a prime number, got 8" in out.stderr + out.stdout
    assert not (tmp_path / "results").exists()
    assert "Traceback" not in out.stderr


def test_code_version_sees_content_not_mtime(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text("x = 1\n")
    before = hash_files(pkg, ("m.py",))
    (pkg / "m.py").touch()
    assert hash_files(pkg, ("m.py",)) == before
    (pkg / "m.py").write_text("x = 2\n")
    assert hash_files(pkg, ("m.py",)) != before
