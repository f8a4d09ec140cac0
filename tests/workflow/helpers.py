"""What the end-to-end tests share: a user's checkout of the workflow in a scratch directory and
Snakemake run from its root, as the README shows."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["REPO", "SNAKEMAKE", "WORKFLOW_FILES", "snakemake", "workspace"]

REPO = Path(__file__).resolve().parents[2]


SNAKEMAKE = Path(sys.executable).with_name("snakemake")


WORKFLOW_FILES = ("Snakefile", "workflow", "src", "config", "profiles", "environment.yml")


def workspace(root: Path) -> Path:
    """A copy of the repository's workflow files, as a user's checkout would have them."""
    root.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, root / name)
    return root


def snakemake(ws: Path, *args: str, config: str | None = "my.yaml") -> subprocess.CompletedProcess:
    """``snakemake --cores 2 <args> [--configfile <config>]`` from the workspace root."""
    cmd = [str(SNAKEMAKE), "--cores", "2", *args]
    if config is not None:
        cmd += ["--configfile", config]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ws, timeout=1200)
