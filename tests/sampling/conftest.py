"""Fixtures of the sampling tests."""

import pytest

from .helpers import train_small_quadratic


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A small quadratic net (p=11, K=16) trained 400 steps: model, x, y (read, don't modify:
    tests that change the parameters work on a copy)."""
    return train_small_quadratic(tmp_path_factory.mktemp("train"))
