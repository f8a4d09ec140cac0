"""grokking_llc.science.notes: the sentences about invalid estimates and mixed hyperparameters
(SPEC sections 6-7), against values computed by hand or independently."""

from __future__ import annotations

import numpy as np
import pandas as pd

from grokking_llc.science.notes import invalid_note, varying_note


def test_invalid_note_text():
    assert invalid_note(0, 5) is None
    assert invalid_note(2, 5, "runs") == (
        "2 of 5 runs not valid: drawn hollow, left out of means and fits"
    )
    assert invalid_note(1, 3, fitted=False) == "1 of 3 estimates not valid: drawn hollow"


def test_varying_note_lists_every_varying_hyperparameter():
    df = pd.DataFrame({"lr": [1e-3, 1e-2, 1e-3], "model": ["quadratic"] * 3, "p": [7, 7, 7]})
    assert varying_note(df, exclude=()) == "mixed: lr in {0.001, 0.01}"
    assert varying_note(df, exclude=("lr",)) is None
    df["loss"] = ["a", "b", "a"]
    assert varying_note(df, exclude=()) == "mixed: loss in {a, b}; lr in {0.001, 0.01}"
    many = pd.DataFrame({"seed": range(6), "lr": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3]})
    assert varying_note(many, exclude=()) == ("mixed: lr in {0.001, 0.002, 0.003, 0.004, ...}")
    assert varying_note(pd.DataFrame({"lr": [1e-3, np.nan]}), exclude=()) is None


def test_varying_note_shows_three_significant_digits():
    df = pd.DataFrame({"lr": [0.0012345, 0.0023456]})
    assert varying_note(df, exclude=()) == "mixed: lr in {0.00123, 0.00235}"
