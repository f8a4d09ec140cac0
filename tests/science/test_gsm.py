"""Tests of grokking_llc.science.gsm on hand-made accuracy curves (SPEC section 6)."""

from __future__ import annotations

import math
import warnings

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
    summarize_training,
)

STEPS = np.arange(1, 11) * 100.0  # checkpoints every 100 steps (SPEC section 3)


# A delayed ("grokking") run of T = 10 checkpoints.
DELAYED_TRAIN = [0.1, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


DELAYED_VAL = [0.0, 0.1, 0.1, 0.1, 0.2, 0.5, 0.9, 1.0, 1.0, 1.0]


def _curves(t_train: int, t_val: int, n: int = 60, final_val: float = 1.0):
    """Step-function curves on steps 100, 200, ..., n*100 that reach 1.0 at the given steps."""
    steps = np.arange(1, n + 1) * 100.0
    train = np.where(steps >= t_train, 1.0, 0.3)
    val = np.where(steps >= t_val, final_val, 0.05)
    return steps, train, val


# Curves on which the thresholds 0.99 (SPEC section 6) and 0.9 give different delays:
#   train >= 0.9 first at step 200 (0.95), >= 0.99 first at step 300 (0.995)
#   val   >= 0.9 first at step 400 (0.92), >= 0.99 first at step 800 (0.993)
TRAIN = [0.50, 0.95, 0.995, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


VAL = [0.10, 0.30, 0.50, 0.92, 0.95, 0.97, 0.985, 0.993, 1.0, 1.0]


def _run(t_train_idx: int, t_val_idx: int, n: int = 10):
    train = [0.3] * t_train_idx + [1.0] * (n - t_train_idx)
    val = [0.05] * t_val_idx + [1.0] * (n - t_val_idx)
    return train, val


def _log(steps, train_acc, val_acc):
    n = len(steps)
    return pd.DataFrame(
        {
            "step": steps,
            "train_loss": np.arange(n, 0, -1) / 10.0,  # n/10, ..., 0.1
            "val_loss": np.arange(n, 0, -1) / 5.0,  # n/5, ..., 0.2
            "train_acc": train_acc,
            "val_acc": val_acc,
        }
    )


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


def test_delay_default_threshold_is_099_not_09():
    # 0.99: 800 - 300 = 500; a threshold of 0.9 would give 400 - 200 = 200
    assert generalisation_delay(STEPS, TRAIN, VAL) == 500.0
    assert generalisation_delay(STEPS, TRAIN, VAL, threshold=0.9) == 200.0


def test_summary_row_reads_memorisation_and_generalisation_at_099():
    log = pd.DataFrame(
        {
            "step": STEPS.astype(int),
            "train_loss": np.linspace(1.0, 0.1, 10),
            "val_loss": np.linspace(2.0, 0.2, 10),
            "train_acc": TRAIN,
            "val_acc": VAL,
        }
    )
    row = summarize_training({"p": 7, "train_frac": 0.5}, log)
    # at 0.9 these would be 200, 400 and 200
    assert (row["t_memorise"], row["t_generalise"], row["delay"]) == (300.0, 800.0, 500.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: grokking_severity([0.1, 1.2], [0.1, 1.0]), r"^train_acc must hold accuracies"),
        (lambda: grokking_severity([0.1, 1.0], [0.1, -0.2]), r"^val_acc must hold accuracies"),
        (lambda: grokking_severity([], [0.5]), r"^train_acc is empty"),
        (lambda: grokking_severity([0.5], []), r"^val_acc is empty"),
        (lambda: grokking_severity([1.0], [1.0], threshold=-0.1), r"^threshold must lie in"),
        (lambda: generalisation_delay([], [], []), r"^steps is empty"),
        (lambda: generalisation_delay([1, 2], [0.5, 1.5], [0.5, 1.0]), r"^train_acc must hold"),
        (lambda: generalisation_delay([1, 2], [0.5, 1.0], [0.5, 1.5]), r"^val_acc must hold"),
        (lambda: generalisation_delay([2, 1], [0.5, 1.0], [0.5, 1.0]), r"^steps must be strictly"),
        (lambda: classify_regime([0.5, 1.5], [0.5, 1.0]), r"^train_acc must hold"),
        (lambda: classify_regime([0.5, 1.0], [-0.5, 1.0]), r"^val_acc must hold"),
        (lambda: classify_regime([1.0], [1.0], gen_threshold=1.5), r"^gen_threshold must lie in"),
        (lambda: classify_regime([1.0], [1.0], steps=[]), r"^steps is empty"),
        (
            lambda: classify_regime([1.0], [1.0], immediate_gap_checkpoints=-1.0),
            r"^immediate_rel_delay and immediate_gap_checkpoints must be >= 0$",
        ),
    ],
)
def test_error_messages_name_the_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    ("call", "shown"),
    [
        (lambda: grokking_severity([1.0] * 3, [1.0] * 2), "train_acc: 3, val_acc: 2"),
        (
            lambda: generalisation_delay([1, 2, 3], [1.0] * 2, [1.0] * 2),
            "steps: 3, train_acc: 2, val_acc: 2",
        ),
        (
            lambda: generalisation_delay([1, 2], [1.0] * 3, [1.0] * 2),
            "steps: 2, train_acc: 3, val_acc: 2",
        ),
        (
            lambda: generalisation_delay([1, 2], [1.0] * 2, [1.0] * 3),
            "steps: 2, train_acc: 2, val_acc: 3",
        ),
        (lambda: classify_regime([1.0] * 3, [1.0] * 2), "train_acc: 3, val_acc: 2"),
        (lambda: classify_regime([1.0] * 2, [1.0] * 3), "train_acc: 2, val_acc: 3"),
        (lambda: classify_regime([1.0] * 2, [1.0] * 2, [1, 2, 3]), "train_acc: 2, steps: 3"),
    ],
)
def test_every_pair_of_inputs_is_length_checked(call, shown):
    # the message lists every input of the function with its length
    with pytest.raises(ValueError, match=rf"^inputs must have equal lengths, got {shown}$"):
        call()


@pytest.mark.parametrize("steps", [[200, 100], [100, 100]])
def test_two_steps_out_of_order_refused_even_when_the_run_never_generalises(steps):
    # the run never generalises (final val 0.1), so nothing downstream looks at the steps
    with pytest.raises(ValueError, match="steps must be strictly increasing"):
        classify_regime([0.5, 1.0], [0.1, 0.1], steps=steps)


def test_thresholds_zero_and_one_are_allowed():
    # threshold 0: both finals (1.0, 0.9) exceed 0 -> mean gap (0.3 + 0.1) / 2 = 0.2
    assert grokking_severity([0.5, 1.0], [0.2, 0.9], threshold=0.0) == pytest.approx(0.2)
    # threshold 1: nothing exceeds 1 strictly -> 0
    assert grokking_severity([1.0, 1.0], [1.0, 1.0], threshold=1.0) == 0.0
    # delay at threshold 1.0: train first == 1.0 at step 400, val at step 900
    assert generalisation_delay(STEPS, TRAIN, VAL, threshold=1.0) == 500.0
    assert classify_regime([1.0], [1.0], gen_threshold=1.0) == NO_GENERALISATION


def test_regime_gap_allowance_is_two_checkpoints():
    # train reaches 0.9 at step 100; allowed = max(0.5 * 100, 2 * 100) = 200
    train, val = _run(0, 2)  # val at step 300: delay 200 <= 200
    assert classify_regime(train, val, STEPS) == IMMEDIATE_GENERALISATION
    train, val = _run(0, 3)  # val at step 400: delay 300 > 200 (three checkpoints would allow it)
    assert classify_regime(train, val, STEPS) == GROKKING


def test_regime_relative_allowance_is_half_of_t_train():
    # train at step 600: allowed = max(0.5 * 600, 200) = 300
    train, val = _run(5, 8)  # val at 900: delay 300 -> immediate
    assert classify_regime(train, val, STEPS) == IMMEDIATE_GENERALISATION
    train, val = _run(5, 9)  # val at 1000: delay 400 -> grokking
    assert classify_regime(train, val, STEPS) == GROKKING
    # knobs are used as given: rel 1.0 allows 600
    assert classify_regime(train, val, STEPS, immediate_rel_delay=1.0) == IMMEDIATE_GENERALISATION


def test_regime_needs_the_final_training_accuracy_above_threshold():
    # training accuracy collapses at the last checkpoint: not generalised, whatever came before
    train = [0.3, 1.0, 1.0, 0.5]
    val = [0.0, 0.2, 1.0, 1.0]
    assert classify_regime(train, val) == NO_GENERALISATION
    # exactly at the threshold is not above it (strict, as the GSM)
    assert classify_regime([0.3, 0.9], [0.95, 0.95]) == NO_GENERALISATION
    assert grokking_severity([0.3, 0.9], [0.95, 0.95]) == 0.0


def test_regime_with_two_checkpoints_uses_their_spacing():
    # t_train = 100, t_val = 200: delay 100 <= max(50, 2 * 100) = 200 -> immediate
    assert classify_regime([1.0, 1.0], [0.5, 1.0], [100, 200]) == IMMEDIATE_GENERALISATION


def test_regime_of_a_single_checkpoint_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no median of an empty spacing list
        assert classify_regime([1.0], [1.0], [500]) == IMMEDIATE_GENERALISATION
        assert classify_regime([1.0], [0.5], [500]) == NO_GENERALISATION


def test_summary_row_exact_contents():
    log = _log([0, 100, 200, 300], [0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.95])
    run = {"p": 7, "train_frac": 0.5, "lr": 1e-3, "model_options": {"b": 1, "a": 2}}
    row = summarize_training(run, log, run_id="r1", studies=["s1", "s2"])
    expected = {
        "run_id": "r1",
        "studies": ["s1", "s2"],
        "p": 7,
        "train_frac": 0.5,
        "lr": 1e-3,
        "model_options": '{"a": 2, "b": 1}',  # sorted keys: one text per options dict
        "n_train": 24,  # round(0.5 * 49) = round(24.5) = 24 (banker's rounding)
        "final_step": 300,
        "final_train_acc": 1.0,
        "final_val_acc": 0.95,
        "final_train_loss": 0.1,
        "final_val_loss": 0.2,
        # gaps 0, 1, 0.5, 0.05 -> mean 1.55 / 4
        "gsm": pytest.approx(1.55 / 4),
        # train >= 0.99 at 100, val never reaches 0.99 -> NaN
        "t_memorise": 100.0,
        # regime at 0.9: train at 100, val at 300: delay 200 <= max(50, 200) -> immediate
        "regime": IMMEDIATE_GENERALISATION,
    }
    nan_keys = {"delay", "t_generalise"}
    assert set(row) == set(expected) | nan_keys
    assert all(math.isnan(row[k]) for k in nan_keys)
    assert {k: row[k] for k in expected} == expected
    assert isinstance(row["final_step"], int)


def test_summary_row_defaults_and_missing_options():
    log = _log([0, 100], [1.0, 1.0], [1.0, 1.0])
    row = summarize_training({"p": 7, "train_frac": 0.5}, log)
    assert row["run_id"] == "" and row["studies"] == [] and row["model_options"] == "{}"


def test_summary_regime_uses_the_logged_steps():
    # a log that starts at step 10000 (checkpoints every 100): train at 10000, val at 11000:
    # delay 1000 <= max(0.5 * 10000, 200) -> immediate. Counting checkpoints 1, 2, ... instead
    # would give delay 10 > max(0.5, 2) -> grokking.
    steps = 10000 + 100 * np.arange(12)
    log = _log(steps, [1.0] * 12, [0.1] * 10 + [1.0, 1.0])
    row = summarize_training({"p": 7, "train_frac": 0.5}, log)
    assert row["regime"] == IMMEDIATE_GENERALISATION
    assert classify_regime(log["train_acc"], log["val_acc"]) == GROKKING
