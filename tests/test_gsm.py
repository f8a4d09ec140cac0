"""Tests of grokking_llc.science.gsm on hand-made accuracy curves (SPEC section 6)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from grokking_llc.science import gsm
from grokking_llc.science.gsm import (
    GROKKING,
    IMMEDIATE_GENERALISATION,
    NO_GENERALISATION,
    classify_regime,
    generalisation_delay,
    grokking_severity,
)

STEPS = np.arange(1, 11) * 100.0  # checkpoints every 100 steps (SPEC section 3)

# A delayed ("grokking") run of T = 10 checkpoints.
DELAYED_TRAIN = [0.1, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
DELAYED_VAL = [0.0, 0.1, 0.1, 0.1, 0.2, 0.5, 0.9, 1.0, 1.0, 1.0]


# --------------------------------------------------------------------------- GSM


def test_gsm_never_generalises_is_zero():
    train = [0.2, 0.8, 1.0, 1.0, 1.0]
    val = [0.05, 0.05, 0.06, 0.05, 0.05]  # large gap, but the run never generalises
    assert grokking_severity(train, val) == 0.0


def test_gsm_immediate_generalisation_is_about_zero():
    train = [0.2, 0.6, 0.95, 1.0]
    val = [0.18, 0.58, 0.93, 0.98]
    # gaps 0.02 at every checkpoint -> mean 0.02
    assert grokking_severity(train, val) == pytest.approx(0.02, abs=1e-12)
    assert grokking_severity(train, train) == 0.0


def test_gsm_delayed_curve_matches_hand_computation():
    # gaps train - val per checkpoint:
    #   0.1, 0.4, 0.9, 0.9, 0.8, 0.5, 0.1, 0.0, 0.0, 0.0   -> sum = 3.7
    # final val 1.0 > 0.9 and final train 1.0 > 0.9, so GSM = 3.7 / 10 = 0.37
    assert grokking_severity(DELAYED_TRAIN, DELAYED_VAL) == pytest.approx(0.37, abs=1e-12)


def test_gsm_accepts_numpy_list_and_series_alike():
    expected = grokking_severity(DELAYED_TRAIN, DELAYED_VAL)
    as_np = grokking_severity(np.array(DELAYED_TRAIN), np.array(DELAYED_VAL))
    as_pd = grokking_severity(pd.Series(DELAYED_TRAIN), pd.Series(DELAYED_VAL))
    assert as_np == pytest.approx(expected)
    assert as_pd == pytest.approx(expected)


def test_gsm_threshold_is_strict_on_final_accuracies():
    train = [0.5, 1.0, 1.0]
    # final val exactly 0.9: not > 0.9, so 0
    assert grokking_severity(train, [0.0, 0.5, 0.9]) == 0.0
    # final val just above 0.9: counted; gaps 0.5, 0.5, 0.1 - 1e-9 -> mean (1.1 - 1e-9) / 3
    assert grokking_severity(train, [0.0, 0.5, 0.9 + 1e-9]) == pytest.approx(1.1 / 3, abs=1e-8)
    # final train exactly 0.9 (val above it): 0
    assert grokking_severity([0.5, 0.9], [0.5, 0.95]) == 0.0
    # a lower threshold lets the same run count: gaps 0.5, 0.5, 0.1 -> 1.1 / 3
    assert grokking_severity(train, [0.0, 0.5, 0.9], threshold=0.5) == pytest.approx(1.1 / 3)


def test_gsm_single_checkpoint_and_signed_gap():
    assert grokking_severity([1.0], [0.95]) == pytest.approx(0.05)
    # validation leading training gives a negative GSM: gaps -0.1, -0.02 -> mean -0.06
    assert grokking_severity([0.5, 0.95], [0.6, 0.97]) == pytest.approx(-0.06)


@pytest.mark.parametrize(
    ("train", "val", "message"),
    [
        ([0.1, 1.0], [0.1, 1.0, 1.0], "equal lengths"),
        ([], [], "empty"),
        ([0.1, 1.2], [0.1, 1.0], r"\[0, 1\]"),
        ([0.1, 1.0], [-0.1, 1.0], r"\[0, 1\]"),
        ([0.1, float("nan")], [0.1, 1.0], "NaN"),
        ([[0.1, 1.0]], [[0.1, 1.0]], "1-D"),
        (["a", "b"], [0.1, 1.0], "numbers"),
    ],
)
def test_gsm_bad_inputs_raise(train, val, message):
    with pytest.raises(ValueError, match=message):
        grokking_severity(train, val)


def test_gsm_bad_threshold_raises():
    with pytest.raises(ValueError, match="threshold"):
        grokking_severity([1.0], [1.0], threshold=1.5)


# --------------------------------------------------------------------------- delays


def test_generalisation_delay_by_hand():
    train = [0.5, 0.9, 0.99, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # >= 0.99 first at step 300
    val = [0.0, 0.1, 0.2, 0.3, 0.5, 0.8, 0.95, 0.991, 1.0, 1.0]  # >= 0.99 first at step 800
    assert generalisation_delay(STEPS, train, val) == 500.0
    # at threshold 0.9: train first at 200, val first at 700 -> 500
    assert generalisation_delay(STEPS, train, val, threshold=0.9) == 500.0
    # at threshold 0.5: train at 100, val at 500 -> 400
    assert generalisation_delay(STEPS, train, val, threshold=0.5) == 400.0


def test_generalisation_delay_nan_and_negative():
    never_val = [0.1] * 10
    assert math.isnan(generalisation_delay(STEPS, DELAYED_TRAIN, never_val))
    assert math.isnan(generalisation_delay(STEPS, never_val, DELAYED_TRAIN))
    # validation first (step 200) before training (step 400): delay -200
    train = [0.0, 0.5, 0.5, 1.0] + [1.0] * 6
    val = [0.0, 1.0, 1.0, 1.0] + [1.0] * 6
    assert generalisation_delay(STEPS, train, val) == -200.0


def test_generalisation_delay_bad_steps_raise():
    with pytest.raises(ValueError, match="increasing"):
        generalisation_delay([100, 100, 200], [1.0] * 3, [1.0] * 3)
    with pytest.raises(ValueError, match="equal lengths"):
        generalisation_delay([100, 200], [1.0] * 3, [1.0] * 3)


# --------------------------------------------------------------------------- regimes


def _curves(t_train: int, t_val: int, n: int = 60, final_val: float = 1.0):
    """Step-function curves on steps 100, 200, ..., n*100 that reach 1.0 at the given steps."""
    steps = np.arange(1, n + 1) * 100.0
    train = np.where(steps >= t_train, 1.0, 0.3)
    val = np.where(steps >= t_val, final_val, 0.05)
    return steps, train, val


def test_regime_constants():
    assert gsm.REGIMES == (NO_GENERALISATION, GROKKING, IMMEDIATE_GENERALISATION)
    assert set(gsm.REGIMES) == {"no_generalisation", "grokking", "immediate_generalisation"}


def test_regime_of_three_hand_made_curves():
    # never generalises: final val 0.5
    steps, train, val = _curves(500, 1000, final_val=0.5)
    assert classify_regime(train, val, steps) == NO_GENERALISATION
    # grokking: train reaches 0.9 at 500, val at 5000; delay 4500 > max(0.5*500, 2*100) = 250
    steps, train, val = _curves(500, 5000)
    assert classify_regime(train, val, steps) == GROKKING
    # immediate: val at 700; delay 200 <= max(250, 200) = 250
    steps, train, val = _curves(500, 700)
    assert classify_regime(train, val, steps) == IMMEDIATE_GENERALISATION


def test_regime_edges_and_knobs():
    # t_train = 2000: allowed = max(0.5 * 2000, 200) = 1000
    steps, train, val = _curves(2000, 3000)  # delay 1000: on the edge -> immediate
    assert classify_regime(train, val, steps) == IMMEDIATE_GENERALISATION
    steps, train, val = _curves(2000, 3100)  # delay 1100 -> grokking
    assert classify_regime(train, val, steps) == GROKKING
    # with both allowances at 0 any positive delay is grokking, a zero delay is not
    steps, train, val = _curves(500, 600)
    kw = {"immediate_rel_delay": 0.0, "immediate_gap_checkpoints": 0.0}
    assert classify_regime(train, val, steps, **kw) == GROKKING
    steps, train, val = _curves(500, 500)
    assert classify_regime(train, val, steps, **kw) == IMMEDIATE_GENERALISATION
    # final val exactly at the threshold is not generalised (strict, as the GSM)
    steps, train, val = _curves(500, 700, final_val=0.9)
    assert classify_regime(train, val, steps) == NO_GENERALISATION
    assert grokking_severity(train, val) == 0.0


def test_regime_default_steps_are_checkpoint_numbers():
    # checkpoints 1..60; train at checkpoint 5, val at checkpoint 50 -> delay 45 > max(2.5, 2)
    _, train, val = _curves(500, 5000)
    assert classify_regime(train, val) == GROKKING
    _, train, val = _curves(500, 700)  # delay 2 <= max(2.5, 2)
    assert classify_regime(train, val) == IMMEDIATE_GENERALISATION


def test_regime_bad_inputs_raise():
    with pytest.raises(ValueError, match="equal lengths"):
        classify_regime([1.0, 1.0], [1.0, 1.0], steps=[1, 2, 3])
    with pytest.raises(ValueError, match=">= 0"):
        classify_regime([1.0], [1.0], immediate_rel_delay=-1.0)


def test_summarize_training_row():
    from grokking_llc.science.gsm import summarize_training

    log = pd.DataFrame(
        {
            "step": [0, 100, 200, 300],
            "train_loss": [1.0, 0.5, 0.1, 0.05],
            "val_loss": [1.0, 0.9, 0.5, 0.2],
            "train_acc": [0.0, 1.0, 1.0, 1.0],
            "val_acc": [0.0, 0.0, 0.5, 1.0],
        }
    )
    run = {"p": 7, "train_frac": 0.5, "lr": 1e-3, "model_options": {"a": 1}}
    row = summarize_training(run, log, run_id="r", studies=["s"])
    # GSM: final accs 1.0 > 0.9; gaps 0, 1, 0.5, 0 -> mean 0.375
    assert row["gsm"] == pytest.approx(0.375)
    assert row["delay"] == 200.0 and row["t_memorise"] == 100.0 and row["t_generalise"] == 300.0
    assert row["n_train"] == 24 and row["model_options"] == '{"a": 1}'
    # val reaches 0.9 two checkpoints (200 steps) after train: within the allowance
    # max(0.5 * 100, 2 * 100) = 200 of classify_regime, so "immediate"
    assert row["regime"] == "immediate_generalisation"
