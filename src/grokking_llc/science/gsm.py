"""Grokking severity, generalisation delay and regime labels (SPEC section 6).

SPEC section 6 defines the grokking severity measure (GSM) and asks for the raw delay beside it;
SPEC section 7 (Figure 9, the paper's Fig. 14) needs a per-run label "no generalisation /
grokking / immediate generalisation". Everything here works on the per-checkpoint accuracy
curves of one run (SPEC section 3: a checkpoint every 100 steps, accuracies on the full splits).
The fits drawn beside these numbers (exponential decay of GSM in lr, GSM on LLC) live in
:mod:`grokking_llc.science.generalisation`; the first-step-reaching helper used here is in
:mod:`grokking_llc.science.stats`.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from grokking_llc.science.stats import as_1d, first_step_reaching, same_length

NO_GENERALISATION = "no_generalisation"
GROKKING = "grokking"
IMMEDIATE_GENERALISATION = "immediate_generalisation"
REGIMES = (NO_GENERALISATION, GROKKING, IMMEDIATE_GENERALISATION)

GSM_THRESHOLD = 0.9  # SPEC section 6: both final accuracies must exceed 0.9
DELAY_THRESHOLD = 0.99  # SPEC section 6: raw delay from train acc >= 0.99 to val acc >= 0.99

__all__ = [
    "DELAY_THRESHOLD",
    "GROKKING",
    "GSM_THRESHOLD",
    "IMMEDIATE_GENERALISATION",
    "NO_GENERALISATION",
    "REGIMES",
    "classify_regime",
    "generalisation_delay",
    "grokking_severity",
]


# --------------------------------------------------------------------------- input checks


def _as_accuracy(values: ArrayLike, name: str) -> np.ndarray:
    arr = as_1d(values, name)
    if np.any(arr < 0.0) or np.any(arr > 1.0):
        raise ValueError(
            f"{name} must hold accuracies in [0, 1], got values in [{arr.min()}, {arr.max()}]"
        )
    return arr


def _as_steps(values: ArrayLike, name: str = "steps") -> np.ndarray:
    arr = as_1d(values, name)
    if arr.size > 1 and not np.all(np.diff(arr) > 0):
        raise ValueError(f"{name} must be strictly increasing")
    return arr


def _check_threshold(threshold: float, name: str = "threshold") -> float:
    t = float(threshold)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {threshold!r}")
    return t


# --------------------------------------------------------------------------- GSM and delays


def grokking_severity(
    train_acc: ArrayLike, val_acc: ArrayLike, threshold: float = GSM_THRESHOLD
) -> float:
    """Grokking severity measure of one run (SPEC section 6).

    Over the ``T`` checkpoints of the run::

        GSM = 1[acc_val(T) > threshold and acc_train(T) > threshold]
              * (1/T) * sum_{t=1..T} ( acc_train(t) - acc_val(t) )

    i.e. the mean train-minus-validation accuracy gap (a Riemann sum of the area between the two
    curves, in units of checkpoints), counted only when the run ends generalised; 0 when it never
    generalises. The comparisons with ``threshold`` (0.9 in the paper) are strict, as in the
    paper's code (``grokking_test3``). The gap is signed, as there: a run whose validation accuracy
    leads its training accuracy gets a (small) negative GSM. Because the mean runs over checkpoints,
    GSM depends on how long the run goes on after generalising (SPEC section 3's early stop bounds
    that); compare GSMs only between runs with the same checkpoint schedule and stopping rule.

    Args:
        train_acc, val_acc: accuracies on the full training / validation split at each
            checkpoint, in checkpoint order: 1-D array-likes of the same length ``T >= 1`` with
            values in [0, 1].
        threshold: generalisation threshold for the final accuracies, in [0, 1].

    Raises:
        ValueError: empty, non-1-D or unequal-length inputs, NaN/inf, values outside [0, 1].
    """
    train = _as_accuracy(train_acc, "train_acc")
    val = _as_accuracy(val_acc, "val_acc")
    same_length(train_acc=train, val_acc=val)
    thr = _check_threshold(threshold)
    if not (val[-1] > thr and train[-1] > thr):
        return 0.0
    return float(np.mean(train - val))


def generalisation_delay(
    steps: ArrayLike,
    train_acc: ArrayLike,
    val_acc: ArrayLike,
    threshold: float = DELAY_THRESHOLD,
) -> float:
    """Raw generalisation delay in steps (SPEC section 6, reported beside the GSM).

    ``delay = first step with val_acc >= threshold - first step with train_acc >= threshold``,
    both read off the checkpoints (so the delay is resolved to the checkpoint spacing, 100 steps
    under SPEC section 3). Returns NaN when either accuracy never reaches ``threshold`` (the run
    never memorised or never generalised within its checkpoints), so such runs drop out of means
    and fits rather than entering as a fake number. The delay is negative when validation accuracy
    reaches the threshold first.
    """
    s = _as_steps(steps)
    train = _as_accuracy(train_acc, "train_acc")
    val = _as_accuracy(val_acc, "val_acc")
    same_length(steps=s, train_acc=train, val_acc=val)
    t_train = first_step_reaching(s, train, threshold)
    t_val = first_step_reaching(s, val, threshold)
    return t_val - t_train  # NaN propagates


# --------------------------------------------------------------------------- regimes


def classify_regime(
    train_acc: ArrayLike,
    val_acc: ArrayLike,
    steps: ArrayLike | None = None,
    *,
    gen_threshold: float = GSM_THRESHOLD,
    immediate_rel_delay: float = 0.5,
    immediate_gap_checkpoints: float = 2.0,
) -> str:
    """Label a run ``"no_generalisation"``, ``"grokking"`` or ``"immediate_generalisation"``.

    Used for SPEC section 7, Figure 9 (the paper's Fig. 14), whose rule the paper does not state;
    this one is ours.
    With ``thr = gen_threshold`` (default 0.9, the GSM's threshold of SPEC section 6):

    1. **no_generalisation** if the run does not end generalised, i.e. unless both final
       accuracies exceed ``thr`` (strictly): exactly the runs whose GSM indicator is 0.
    2. Otherwise let ``t_train`` and ``t_val`` be the first checkpoint steps at which the training
       and the validation accuracy reach ``thr`` (``>=``), ``delay = t_val - t_train``, and
       ``allowed = max(immediate_rel_delay * t_train, immediate_gap_checkpoints * dt)`` with ``dt``
       the median spacing between checkpoints. The run is **immediate_generalisation** if
       ``delay <= allowed`` and **grokking** otherwise. With the defaults a run is immediate when
       validation accuracy reaches ``thr`` by step ``1.5 * t_train`` or at most two checkpoints
       after ``t_train``, whichever is later.

    ``steps`` defaults to the checkpoint numbers 1, 2, ..., T (then ``dt = 1``). The relative
    allowance makes the rule independent of the time unit; the absolute one in checkpoints keeps
    runs that memorise within a checkpoint or two from being called grokking for a one-checkpoint
    lag that the checkpoint spacing cannot resolve.

    Raises:
        ValueError: bad accuracy or step inputs (as for :func:`grokking_severity`), or a negative
            knob.
    """
    train = _as_accuracy(train_acc, "train_acc")
    val = _as_accuracy(val_acc, "val_acc")
    same_length(train_acc=train, val_acc=val)
    s = np.arange(1.0, train.size + 1.0) if steps is None else _as_steps(steps)
    same_length(train_acc=train, steps=s)
    thr = _check_threshold(gen_threshold, "gen_threshold")
    if immediate_rel_delay < 0 or immediate_gap_checkpoints < 0:
        raise ValueError("immediate_rel_delay and immediate_gap_checkpoints must be >= 0")

    if not (val[-1] > thr and train[-1] > thr):
        return NO_GENERALISATION
    # Both final accuracies exceed thr, so both first-reach steps exist.
    t_train = first_step_reaching(s, train, thr)
    t_val = first_step_reaching(s, val, thr)
    dt = float(np.median(np.diff(s))) if s.size > 1 else 0.0
    allowed = max(immediate_rel_delay * abs(t_train), immediate_gap_checkpoints * dt)
    return IMMEDIATE_GENERALISATION if t_val - t_train <= allowed else GROKKING


# --------------------------------------------------------------------------------------------
# One summary row per run (results/tables/runs.parquet)
# --------------------------------------------------------------------------------------------


def summarize_training(
    run: dict, train_log: pd.DataFrame, *, run_id: str = "", studies: list[str] | None = None
) -> dict:
    """One row of ``training_summary.parquet``: hyperparameters, GSM, delay, regime and final
    accuracies and losses of a run (SPEC section 6)."""
    from grokking_llc.core.data import n_train

    steps = train_log["step"].to_numpy()
    tr, va = train_log["train_acc"].to_numpy(), train_log["val_acc"].to_numpy()
    last = train_log.iloc[-1]
    return {
        "run_id": run_id,
        "studies": list(studies or []),
        **{k: v for k, v in run.items() if k != "model_options"},
        "model_options": json.dumps(run.get("model_options", {}), sort_keys=True),
        "n_train": n_train(run["p"], run["train_frac"]),
        "final_step": int(last["step"]),
        "final_train_acc": float(last["train_acc"]),
        "final_val_acc": float(last["val_acc"]),
        "final_train_loss": float(last["train_loss"]),
        "final_val_loss": float(last["val_loss"]),
        "gsm": grokking_severity(tr, va),
        "delay": generalisation_delay(steps, tr, va),
        "t_memorise": first_step_reaching(steps, tr, DELAY_THRESHOLD),
        "t_generalise": first_step_reaching(steps, va, DELAY_THRESHOLD),
        "regime": classify_regime(tr, va, steps),
    }
