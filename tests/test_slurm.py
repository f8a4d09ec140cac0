"""SLURM end-to-end test: runs .ci/slurm/run_slurm_test.sh (see profiles/README.md).

It installs and starts a one-node SLURM cluster on localhost (needs root and apt), runs the .test
config locally and through `--profile profiles/slurm`, and compares the results. It takes minutes,
so it runs only when GROKKING_SLURM_TEST=1; the script's "SKIPPED: <reason>" (no root, no apt, the
daemons not coming up) becomes a pytest skip with that reason.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "slurm" / "run_slurm_test.sh"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        os.environ.get("GROKKING_SLURM_TEST") != "1",
        reason="SLURM end-to-end test: set GROKKING_SLURM_TEST=1 to run it (needs root and apt; "
        "installs and starts a local SLURM cluster)",
    ),
]


def test_slurm_profile_matches_local_run():
    env = dict(os.environ)
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
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED:")]
    if proc.returncode == 0 and skipped:
        pytest.skip(skipped[-1].removeprefix("SKIPPED:").strip())
    if proc.returncode != 0 or "PASSED" not in proc.stdout:
        pytest.fail(f"{SCRIPT.name} exited {proc.returncode}:\n{output[-8000:]}", pytrace=False)
