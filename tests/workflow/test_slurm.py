"""SLURM end-to-end test: runs .ci/slurm/run_slurm_test.sh (see profiles/README.md).

It installs and starts a one-node SLURM cluster on localhost (needs root and apt), runs the .test
config locally and through `--profile profiles/slurm`, and compares the results. It takes minutes,
so the suite deselects it unless GROKKING_SLURM_TEST=1 (tests/conftest.py); CI runs the script
itself after the suite (.ci/run). Where it runs, it is required: a machine that cannot set up the
cluster (no root, no apt, daemons not coming up) fails it, it is never skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


SCRIPT = ROOT / ".ci" / "slurm" / "run_slurm_test.sh"


pytestmark = pytest.mark.slurm


def test_slurm_profile_matches_local_run():
    env = dict(os.environ)
    env.pop("SLURM_TEST_ALLOW_SKIP", None)  # required: a machine that cannot run it fails
    # Run the workflow with the interpreter running the tests (its venv has snakemake).
    snakemake = Path(sys.executable).with_name("snakemake")
    if "SNAKEMAKE" not in env and snakemake.exists():
        env["SNAKEMAKE"] = str(snakemake)
    proc = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=int(env.get("GROKKING_SLURM_TEST_TIMEOUT", "3600")),
    )
    output = proc.stdout + proc.stderr
    assert "SKIPPED" not in proc.stdout, output[-8000:]
    if proc.returncode != 0 or "PASSED" not in proc.stdout:
        pytest.fail(f"{SCRIPT.name} exited {proc.returncode}:\n{output[-8000:]}", pytrace=False)
