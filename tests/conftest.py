"""Shared test settings: one thread per test process, fixed seeds everywhere."""

import os

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)  # tests pass explicit generators; this only guards stray global draws
    yield
