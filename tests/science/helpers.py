"""Shared helpers of the science tests: NaN-aware comparison and small tables."""

import math

import pandas as pd
import pytest


def same(a, b) -> bool:
    """Equal, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def assert_dict(got: dict, expected: dict, rel=1e-9):
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))
    for k, v in expected.items():
        if isinstance(v, float) and not math.isnan(v):
            assert got[k] == pytest.approx(v, rel=rel), k
        else:
            assert same(got[k], v), (k, got[k], v)


def small_log():
    # memorised at step 200, generalised at step 600; validation loss falls from step 200
    return pd.DataFrame({
        "step": [100, 200, 300, 400, 500, 600, 700],
        "train_acc": [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        "val_acc": [0.1, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0],
        "val_loss": [1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.2],
    })  # fmt: skip


def track(steps, values):
    return pd.DataFrame({"step": steps, "llc_mean": values, "valid": True})
