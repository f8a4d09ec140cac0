"""Adaptive checkpoint selection (grokking_llc.sampling.refine), on hand-made curves with known
answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from grokking_llc.sampling.refine import (
    COARSE,
    REFINED,
    RefineSettings,
    budget,
    coarse_positions,
    gap_scores,
    next_positions,
    select_adaptively,
)


class Recorder:
    """An ``estimate`` callback reading a fixed curve and recording every call."""

    def __init__(self, curve):
        self.curve = list(curve)
        self.calls: list[list[int]] = []

    def __call__(self, positions):
        self.calls.append(list(positions))
        return [self.curve[k] for k in positions]

    @property
    def estimated(self) -> list[int]:
        return sorted(k for call in self.calls for k in call)


FLAT_ACC = [(1.0, 1.0)] * 200


@pytest.mark.parametrize(
    ("n", "coarse", "expected"),
    [(10, 4, [0, 4, 8, 9]), (9, 4, [0, 4, 8]), (1, 4, [0]), (2, 4, [0, 1]), (0, 3, []),
     (7, 2, [0, 2, 4, 6]), (8, 3, [0, 3, 6, 7])],
)  # fmt: skip
def test_coarse_positions_by_hand(n, coarse, expected):
    assert coarse_positions(n, coarse) == expected


def test_gap_scores_by_hand():
    # LLC range 10 - 0 = 10; gap (0, 4): |5 - 0| / 10 = 0.5 vs acc changes 0.2 and 0.7 -> 0.7
    sampled = {0: 0.0, 4: 5.0, 8: 10.0, 9: 9.0}
    acc = [(0.1, 0.0)] * 4 + [(0.3, 0.7)] * 4 + [(0.3, 0.75)] * 2
    scores = gap_scores(sampled, acc)
    assert scores == [(pytest.approx(0.7), 0, 4), (pytest.approx(0.5), 4, 8)]  # (8, 9) adjacent


def test_gap_with_a_nan_end_scores_by_its_accuracies_only():
    sampled = {0: 1.0, 3: math.nan, 6: 3.0}
    acc = [(0.0, 0.0)] * 3 + [(0.4, 0.1)] * 4
    scores = gap_scores(sampled, acc)
    assert scores == [(pytest.approx(0.4), 0, 3), (pytest.approx(0.0), 3, 6)]


def test_next_positions_takes_the_highest_scores_above_tolerance_middles_first():
    sampled = {0: 0.0, 4: 1.0, 8: 1.05, 12: 4.0, 16: 4.0}
    s = RefineSettings(coarse=4, tolerance=0.1, max_fraction=1.0)
    # scores: (0,4) 0.25, (4,8) 0.0125, (12,16) 0; (8,12) 0.7375 -> middles 10 then 2
    assert next_positions(sampled, FLAT_ACC, s, limit=5) == [10, 2]
    assert next_positions(sampled, FLAT_ACC, s, limit=1) == [10]
    assert next_positions(sampled, FLAT_ACC, s, limit=0) == []


def test_budget_is_the_fraction_but_never_below_the_coarse_pass():
    assert budget(100, RefineSettings(coarse=4, max_fraction=0.5)) == 50
    assert budget(100, RefineSettings(coarse=4, max_fraction=0.1)) == 26  # 0,4,..,96 and 99
    assert budget(10, RefineSettings(coarse=2, max_fraction=0.33)) == 6  # 0,2,4,6,8,9


def test_a_linear_curve_costs_only_the_coarse_pass():
    curve = np.linspace(0.0, 50.0, 101)
    est = Recorder(curve)
    kinds = select_adaptively(FLAT_ACC[:101], est, RefineSettings(coarse=4, tolerance=0.1))
    assert sorted(kinds) == coarse_positions(101, 4)  # every gap holds 4/100 of the range
    assert set(kinds.values()) == {COARSE}
    assert len(est.calls) == 1


def test_a_jump_is_refined_down_to_neighbouring_checkpoints_and_nothing_else():
    n = 101
    curve = [10.0 if k < 42 else 30.0 for k in range(n)]  # a step between 41 and 42
    est = Recorder(curve)
    settings = RefineSettings(coarse=8, tolerance=0.1, max_fraction=0.5)
    kinds = select_adaptively(FLAT_ACC[:n], est, settings, batch=2)
    refined = sorted(k for k, v in kinds.items() if v == REFINED)
    # the coarse gap (40, 48) is bisected: 44, 42, 41 -- until the jump sits between neighbours
    assert refined == [41, 42, 44]
    assert 41 in kinds and 42 in kinds
    assert est.estimated == sorted(kinds)  # each position estimated exactly once
    assert all(len(call) <= 2 for call in est.calls[1:])
    assert len(kinds) == len(coarse_positions(n, 8)) + 3


def test_an_accuracy_jump_is_refined_even_where_the_llc_is_flat():
    n = 41
    acc = [(0.2, 0.0) if k < 23 else (1.0, 1.0) for k in range(n)]
    est = Recorder([5.0] * n)
    kinds = select_adaptively(acc, est, RefineSettings(coarse=8, tolerance=0.1))
    assert {22, 23} <= set(kinds)  # the accuracy step at 22 -> 23 is bracketed
    assert sorted(k for k, v in kinds.items() if v == REFINED) == [20, 22, 23]


def test_the_budget_stops_refinement():
    rng = np.random.default_rng(0)
    curve = rng.normal(size=100) * 100  # rough everywhere: every gap wants refining
    est = Recorder(curve)
    kinds = select_adaptively(
        FLAT_ACC[:100], est, RefineSettings(coarse=4, tolerance=0.0, max_fraction=0.4), batch=3
    )
    assert len(kinds) == 40
    assert len(set(est.estimated)) == 40


def test_tolerance_zero_and_full_fraction_estimates_every_checkpoint_once():
    curve = np.sin(np.arange(30))
    est = Recorder(curve)
    kinds = select_adaptively(
        FLAT_ACC[:30], est, RefineSettings(coarse=3, tolerance=0.0, max_fraction=1.0), batch=4
    )
    assert sorted(kinds) == list(range(30))
    assert est.estimated == list(range(30))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"coarse": 1}, "coarse"), ({"tolerance": -0.1}, "tolerance"),
     ({"tolerance": math.nan}, "tolerance"), ({"max_fraction": 0.0}, "max_fraction"),
     ({"max_fraction": 1.5}, "max_fraction")],
)  # fmt: skip
def test_settings_refused_with_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RefineSettings(**kwargs)
