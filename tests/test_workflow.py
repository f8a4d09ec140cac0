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
    config.write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    """A finished `figures` run of the `.test` config in a scratch working directory."""
    work = tmp_path_factory.mktemp("e2e")
    config = work / "config.yaml"
    shutil.copy(TEST_CONFIG, config)
    out = snakemake(work, config, "figures")
    assert out.returncode == 0, out.stderr[-4000:]
    return work, config


def test_outputs_have_the_documented_schemas(done_run):
    work, _ = done_run
    results = work / "results"
    split = pd.read_parquet(next((results / "splits").glob("*.parquet")))
    assert list(split.columns) == ["a", "b", "c", "split"] and len(split) == 49
    (run_dir,) = (results / "runs").iterdir()
    log = pd.read_parquet(run_dir / "train_log.parquet")
    assert tuple(log.columns) == LOG_COLUMNS and log["step"].iloc[-1] == 200
    assert not (run_dir / "partial").exists()
    llc_files = list((results / "llc" / run_dir.name).glob("*.parquet"))
    assert len(llc_files) == 1
    llc = pd.read_parquet(llc_files[0])
    assert tuple(llc.columns) == LLC_COLUMNS
    assert llc["step"].tolist() == log["step"].tolist()  # every checkpoint (every: 1)
    assert llc["llc_mean"].notna().all()
    assert all(len(c) == 2 for c in llc["llc_per_chain"])  # 2 chains
    assert all(len(t) == 2 and len(t[0]) == 25 for t in llc["loss_trace"])  # 5 burn-in + 20
    png = results / "figures" / "fig3_llc_tracks_generalisation.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    for rule in ("make_split", "train_model", "estimate_llc", "gather_llc", "plot_fig3"):
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


def test_sampler_edit_reruns_only_llc_and_plots(done_run, tmp_path):
    work, config = done_run
    edited = tmp_path / "config.yaml"
    shutil.copy(config, edited)
    edit(edited, lambda c: c["llc"]["sampler"].update(lr=2.0e-4))
    assert planned_jobs(work, edited) == {
        "estimate_llc": 2, "gather_llc": 1, "plot_fig3": 1, "figures": 1,
    }  # fmt: skip


def test_plot_edit_reruns_only_plots(done_run, tmp_path):
    work, config = done_run
    edited = tmp_path / "config.yaml"
    shutil.copy(config, edited)
    edit(edited, lambda c: c["plots"].update(dpi=61))
    assert planned_jobs(work, edited) == {"plot_fig3": 1, "figures": 1}


def test_training_edit_retrains_that_run_only(done_run, tmp_path):
    work, config = done_run
    edited = tmp_path / "config.yaml"
    shutil.copy(config, edited)
    edit(edited, lambda c: c["train"].update(lr=5.0e-3))
    jobs = planned_jobs(work, edited)
    assert jobs.get("train_model") == 1 and "make_split" not in jobs


def test_old_and_new_sampler_results_coexist(done_run, tmp_path):
    work, config = done_run
    edited = tmp_path / "config.yaml"
    shutil.copy(config, edited)
    edit(edited, lambda c: c["llc"]["sampler"].update(num_draws=10))
    out = snakemake(work, edited, "figures")
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = (work / "results" / "llc").iterdir()
    tables = sorted(run_dir.glob("*.parquet"))
    assert len(tables) == 2
    lengths = {len(pd.read_parquet(t)["loss_trace"].iloc[0][0]) for t in tables}
    assert lengths == {25, 15}
    assert planned_jobs(work, config) == {"plot_fig3": 1, "figures": 1}  # back: only the plot


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
