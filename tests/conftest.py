"""Shared test settings: one thread per test process, fixed seeds everywhere.

Tests marked ``slurm`` (tests/workflow/test_slurm.py: installs and starts a SLURM cluster,
~10 minutes) are deselected, not skipped, unless GROKKING_SLURM_TEST=1: CI runs that comparison
itself, as a required step of .ci/run, and no test of the suite is ever skipped in silence.
"""

import os

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")  # figures drawn off screen, before pyplot is imported
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("GROKKING_SLURM_TEST") == "1":
        return
    slurm = [item for item in items if item.get_closest_marker("slurm")]
    if slurm:
        config.hook.pytest_deselected(items=slurm)
        items[:] = [item for item in items if not item.get_closest_marker("slurm")]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)  # tests pass explicit generators; this only guards stray global draws
    yield
