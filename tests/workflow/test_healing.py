"""Damage heals, end to end (issue 21, item 3): the real Snakefile in a scratch copy of the
repository, run as a user runs it. A damaged LLC chunk, training log, checkpoints file,
calibration table and figure, one run's log copied (with its digest record) over another's, and
an output without a digest record are each reported in one line by the next `figures` run,
moved to results/.damaged/<time>/ and rebuilt; nothing good is lost on the way. A dry run and
`--unlock` report or do nothing and move nothing. (Main failed with a pyarrow traceback, deleted
the outputs of the failing jobs, and failed again until the user deleted the file by hand.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .helpers import snakemake, workspace

pytestmark = pytest.mark.e2e


# Two runs of one setting (seeds 0 and 1: one batched training job), both samplers, Figure 3
# and the calibration figure. About a minute on 2 cores.
CONFIG = {
    "device": "cpu",
    "train": {"p": 7, "train_frac": 0.6, "width": 8, "lr": 1.0e-2, "weight_decay": 1.0e-4,
              "batch_size": 16, "max_steps": 100, "checkpoint_every": 50},
    "studies": {"baseline": {"seed": [0, 1]}},
    "llc": {
        "samplers": {
            "paper": {"backend": "fast", "lr": 1.0e-4, "num_chains": 2, "num_burnin_steps": 2,
                      "num_draws": 5, "batch_size": 16, "num_init_loss_batches": 2},
            "calibrated": {"backend": "fast", "calibration": "per_shape", "num_chains": 4,
                           "num_burnin_steps": 2, "num_draws": 5, "batch_size": 16,
                           "num_init_loss_batches": 2},
        },
        "calibration": {"checkpoints": [1.0], "num_steps": 20, "max_steps": 40,
                        "grid": {"kind": ["sgld"], "nbeta": [5.0], "resolution": [8.0],
                                 "lr_scaled": [0.2, 0.1]}},
    },
    "figures": {"fig3": {"study": "baseline"}, "traces": {"study": None}},
    "plots": {"dpi": 50},
}  # fmt: skip


def outputs(results: Path) -> dict[str, bytes]:
    """Every output of a run by path within results (not logs, benchmarks, records)."""
    skip = ("logs", "benchmarks", ".damaged")
    return {
        str(p.relative_to(results)): p.read_bytes()
        for p in results.rglob("*")
        if p.is_file() and p.parts[len(results.parts)] not in skip and ".digests" not in p.parts
    }


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    ws = workspace(tmp_path_factory.mktemp("heal") / "repo")
    (ws / "my.yaml").write_text(yaml.safe_dump(CONFIG))
    out = snakemake(ws, "figures")
    assert out.returncode == 0, out.stderr[-6000:]
    return ws


def test_damage_is_reported_moved_aside_and_rebuilt(done):
    results = done / "results"
    good = outputs(results)
    run0, run1 = sorted(p.name for p in (results / "runs").iterdir())
    chunk = next((results / "llc" / run1).glob("*/every1-chunk0of1.parquet"))
    damaged = {
        "checkpoints": results / "runs" / run0 / "checkpoints.pt",  # one byte flipped
        "log": results / "runs" / run1 / "train_log.parquet",  # run0's log, record and all
        "chunk": chunk,  # truncated
        "calibration": next((results / "calibration").glob("*.parquet")),  # garbage
        "figure": results / "figures" / "fig3_llc_tracks_generalisation.png",  # appended to
        "unrecorded": next((results / "splits").glob("*.parquet")),  # its record deleted
    }
    data = bytearray(damaged["checkpoints"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged["checkpoints"].write_bytes(bytes(data))
    shutil.copy(results / "runs" / run0 / "train_log.parquet", damaged["log"])
    rec = lambda p: p.parent / ".digests" / f"{p.name}.json"  # noqa: E731
    shutil.copy(rec(results / "runs" / run0 / "train_log.parquet"), rec(damaged["log"]))
    chunk.write_bytes(chunk.read_bytes()[:200])
    damaged["calibration"].write_bytes(b"not a table")
    with open(damaged["figure"], "ab") as fh:
        fh.write(b"\0")
    rec(damaged["unrecorded"]).unlink()
    before = {k: p.read_bytes() for k, p in damaged.items()}

    # --unlock runs no job: nothing is checked or moved; a dry run reports and moves nothing
    assert snakemake(done, "--unlock").returncode == 0
    dry = snakemake(done, "-n", "figures")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert {k: p.read_bytes() for k, p in damaged.items()} == before
    assert not (results / ".damaged").exists()
    for path in damaged.values():
        rel = str(path.relative_to(done))
        assert rel in dry.stderr and "would be moved aside" in dry.stderr

    out = snakemake(done, "figures")
    assert out.returncode == 0, out.stderr[-6000:]
    lines = [line for line in out.stderr.splitlines() if "moved to results/.damaged/" in line]
    assert len(lines) == 6, lines  # one line each: five damaged, one with no record
    said = "\n".join(lines)
    assert "checkpoints.pt: its content differs from what its job wrote" in said
    assert f"made for run {run0}" in said and f"the plan expects run {run1}" in said
    assert "200 bytes, its job wrote" in said and "no digest record" in said
    assert "Traceback" not in out.stderr

    (stamp,) = (results / ".damaged").iterdir()
    for key, path in damaged.items():
        kept = stamp / path.relative_to(results)
        assert kept.read_bytes() == before[key], key  # the damaged bytes kept, not deleted
    after = outputs(results)
    assert set(after) == set(good)  # every output there again
    for key in ("checkpoints", "log", "unrecorded"):  # training and splits are deterministic
        rel = str(damaged[key].relative_to(results))
        assert after[rel] == good[rel], key
    rebuilt = pd.read_parquet(chunk)
    assert rebuilt["run_id"].eq(run1).all() and len(rebuilt) == 3
    assert pd.read_parquet(damaged["calibration"])["chosen"].any()
    assert damaged["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = snakemake(done, "figures")  # healed: nothing to report, nothing to do
    assert again.returncode == 0 and "damaged" not in again.stderr
    assert "Nothing to be done" in again.stdout + again.stderr
