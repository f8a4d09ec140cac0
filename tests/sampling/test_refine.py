"""Adaptive checkpoint selection (grokking_llc.sampling.refine), on hand-made curves with known
answers."""

from __future__ import annotations

import math
import random

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


def ref_coarse(n, coarse):
    out = []
    k = 0
    while k < n:
        out.append(k)
        k += coarse
    if n >= 1 and out[-1] != n - 1:
        out.append(n - 1)
    return out


def ref_scores(sampled, acc):
    pos = sorted(sampled)
    fin = [v for v in sampled.values() if v == v and abs(v) != float("inf")]
    spread = max(fin) - min(fin) if fin else 0.0
    out = []
    for a, b in zip(pos[:-1], pos[1:], strict=True):
        if b - a <= 1:
            continue
        la, lb = sampled[a], sampled[b]
        t = 0.0
        if la in fin and lb in fin and spread > 0:
            t = abs(lb - la) / spread
        out.append((max(t, abs(acc[b][0] - acc[a][0]), abs(acc[b][1] - acc[a][1])), a, b))
    return out


def ref_select(acc, curve, coarse, tol, frac, batch):
    """(calls made, kinds): the module docstring's procedure, written as plain loops."""
    n = len(acc)
    first = ref_coarse(n, coarse)
    cap = max(len(first), math.ceil(frac * n))
    calls = [list(first)]
    sampled = {k: curve[k] for k in first}
    kinds = {k: "coarse" for k in first}
    while len(sampled) < cap:
        room = min(batch, cap - len(sampled))
        gaps = [g for g in ref_scores(sampled, acc) if g[0] > tol]
        # highest score first, ties by the earlier gap
        gaps.sort(key=lambda g: (-g[0], g[1]))
        nxt = [(a + b) // 2 for _, a, b in gaps[:room]]
        if not nxt:
            break
        calls.append(nxt)
        for k in nxt:
            sampled[k] = curve[k]
            kinds[k] = "refined"
    return calls, dict(sorted(kinds.items()))


class Recorder_edge:
    def __init__(self, curve):
        self.curve, self.calls = list(curve), []

    def __call__(self, positions):
        self.calls.append(list(positions))
        return [self.curve[k] for k in positions]


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


def test_kind_labels_are_the_documented_words():
    assert (COARSE, REFINED) == ("coarse", "refined")


def test_default_settings_are_the_documented_ones():
    s = RefineSettings()
    assert (s.coarse, s.tolerance, s.max_fraction) == (4, 0.1, 0.5)


@pytest.mark.parametrize("n", range(0, 23))
@pytest.mark.parametrize("coarse", [2, 3, 4, 5, 7])
def test_coarse_positions_equal_the_reference(n, coarse):
    assert coarse_positions(n, coarse) == ref_coarse(n, coarse)


def test_settings_boundaries_accepted_and_refused():
    RefineSettings(coarse=2, tolerance=0.0, max_fraction=1.0)  # all at their edge: accepted
    RefineSettings(coarse=2, tolerance=0.0, max_fraction=1e-9)
    for bad in ({"coarse": 1}, {"coarse": 0}, {"tolerance": -1e-12}, {"max_fraction": 0.0},
                {"max_fraction": 1.0 + 1e-12}, {"max_fraction": -0.5}):  # fmt: skip
        with pytest.raises(ValueError) as err:
            RefineSettings(**bad)
        key, value = next(iter(bad.items()))
        assert f"refine.{key} must be" in str(err.value)
        assert str(value) in str(err.value)


def test_refused_messages_name_the_range_exactly():
    with pytest.raises(ValueError, match=r"^refine\.coarse must be >= 2, got 1$"):
        RefineSettings(coarse=1)
    with pytest.raises(ValueError, match=r"^refine\.tolerance must be >= 0, got -1$"):
        RefineSettings(tolerance=-1)
    with pytest.raises(ValueError, match=r"^refine\.max_fraction must be in \(0, 1\], got 2$"):
        RefineSettings(max_fraction=2)


def test_gap_scores_by_hand_including_width_two_gaps_and_accuracy_terms():
    # positions 0, 1, 3, 6: gap (0, 1) has nothing inside, (1, 3) holds one, (3, 6) two
    sampled = {0: 1.0, 1: 3.0, 3: 2.0, 6: 5.0}  # spread 4
    acc = [(0.0, 0.0), (0.1, 0.0), (0.0, 0.0), (0.2, 0.9), (0, 0), (0, 0), (0.5, 0.3)]
    got = gap_scores(sampled, acc)
    # (1, 3): llc |2 - 3| / 4 = 0.25, train |0.2 - 0.1| = 0.1, val 0.9 -> 0.9
    # (3, 6): llc 3 / 4 = 0.75, train 0.3, val 0.6 -> 0.75
    assert got == [(pytest.approx(0.9), 1, 3), (pytest.approx(0.75), 3, 6)]


def test_gap_scores_train_accuracy_term_alone():
    sampled = {0: 0.0, 4: 0.0}
    assert gap_scores(sampled, [(0.2, 0.5)] + [(0, 0)] * 3 + [(0.9, 0.5)]) == [
        (pytest.approx(0.7), 0, 4)
    ]


def test_gap_scores_spread_uses_the_finite_values_only():
    inf, nan = math.inf, math.nan
    sampled = {0: 2.0, 2: 4.0, 4: inf, 6: nan, 8: 0.0}
    acc = [(0.0, 0.0)] * 9
    got = gap_scores(sampled, acc)
    # spread over {2, 4, 0} = 4: (0, 2) -> 0.5; gaps touching inf/nan score by accuracy (0)
    assert got == [(0.5, 0, 2), (0.0, 2, 4), (0.0, 4, 6), (0.0, 6, 8)]
    # the sampled positions need not arrive in order
    assert gap_scores({8: 0.0, 0: 2.0, 4: 1.0}, acc) == [(0.5, 0, 4), (0.5, 4, 8)]


def test_gap_scores_no_spread_and_no_finite_values():
    acc = [(0.0, 0.0)] * 5
    assert gap_scores({0: 1.0, 4: 1.0}, acc) == [(0.0, 0, 4)]
    assert gap_scores({0: math.nan, 4: math.inf}, acc) == [(0.0, 0, 4)]
    assert gap_scores({0: -math.inf, 4: 1.0}, acc) == [(0.0, 0, 4)]


def test_next_positions_limit_tolerance_and_ties():
    acc = [(0.0, 0.0)] * 13
    sampled = {0: 0.0, 4: 1.0, 8: 2.0, 12: 2.5}  # scores 0.4, 0.4, 0.2 (spread 2.5)
    s = RefineSettings(coarse=4, tolerance=0.2, max_fraction=1.0)
    assert next_positions(sampled, acc, s, 3) == [2, 6]  # 0.2 is not above 0.2; tie: earlier
    assert next_positions(sampled, acc, s, 1) == [2]
    assert next_positions(sampled, acc, s, 0) == []
    assert next_positions(sampled, acc, s, -1) == []
    s0 = RefineSettings(coarse=4, tolerance=0.0, max_fraction=1.0)
    assert next_positions(sampled, acc, s0, 5) == [2, 6, 10]
    # highest first, not position order
    assert next_positions({0: 0.0, 4: 0.1, 8: 1.0}, acc, s0, 2) == [6, 2]


def test_budget_by_hand():
    assert budget(10, RefineSettings(coarse=4, max_fraction=0.5)) == 5  # ceil(5.0), coarse 4
    assert budget(11, RefineSettings(coarse=4, max_fraction=0.5)) == 6  # ceil(5.5)
    assert budget(20, RefineSettings(coarse=2, max_fraction=0.1)) == 11  # coarse pass: 0..18, 19
    assert budget(0, RefineSettings()) == 0
    assert budget(7, RefineSettings(coarse=3, max_fraction=1.0)) == 7


@pytest.mark.parametrize("seed", range(40))
def test_select_adaptively_equals_the_reference_call_by_call(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    coarse = rng.choice([2, 3, 4, 5])
    tol = rng.choice([0.0, 0.05, 0.1, 0.3])
    frac = rng.choice([0.3, 0.5, 0.8, 1.0])
    batch = rng.choice([1, 2, 3, 4, 6])
    # a step-like curve with noise, occasionally a diverged (non-finite) estimate
    jump = rng.randint(0, n)
    curve = [(5.0 if k >= jump else 1.0) + 0.05 * rng.random() for k in range(n)]
    if n > 3 and rng.random() < 0.3:
        curve[rng.randrange(n)] = math.nan
    acc = []
    a_jump = rng.randint(0, n)
    for k in range(n):
        up = 1.0 if k >= a_jump else rng.random() * 0.1
        acc.append((min(1.0, up + 0.05 * rng.random()), up * rng.random()))
    want_calls, want_kinds = ref_select(acc, curve, coarse, tol, frac, batch)
    est = Recorder_edge(curve)
    kinds = select_adaptively(acc, est, RefineSettings(coarse, tol, frac), batch=batch)
    assert est.calls == want_calls
    assert kinds == want_kinds
    assert list(kinds) == sorted(kinds)


def test_default_batch_is_four():
    n = 41
    curve = [float(k % 3) for k in range(n)]  # jagged: every gap wants refining
    acc = [(0.0, 0.0)] * n
    s = RefineSettings(coarse=8, tolerance=0.0, max_fraction=1.0)
    est = Recorder_edge(curve)
    select_adaptively(acc, est, s)
    assert [len(c) for c in est.calls[1:3]] == [4, 4]
    want_calls, _ = ref_select(acc, curve, 8, 0.0, 1.0, 4)
    assert est.calls == want_calls


def test_cap_reached_exactly_and_last_round_trimmed():
    n = 20  # coarse 4: 0, 4, 8, 12, 16, 19 (6); cap ceil(0.45 * 20) = 9
    curve = [float(k * k % 7) for k in range(n)]
    acc = [(0.0, 0.0)] * n
    est = Recorder_edge(curve)
    kinds = select_adaptively(acc, est, RefineSettings(4, 0.0, 0.45), batch=2)
    assert len(kinds) == 9
    assert [len(c) for c in est.calls] == [6, 2, 1]
    assert sum(v == "refined" for v in kinds.values()) == 3


def test_estimate_must_return_one_value_per_position():
    with pytest.raises(ValueError):
        select_adaptively([(0.0, 0.0)] * 9, lambda pos: [1.0] * (len(pos) + 1), RefineSettings())


def test_a_refinement_round_also_needs_one_value_per_position():
    n = 9
    acc = [(0.0, 0.0)] * n
    curve = [0.0, 0, 0, 0, 1.0, 1, 1, 1, 3.0]

    def estimate(pos):
        values = [curve[k] for k in pos]
        return values if len(pos) > 1 else values + [5.0]  # refinement rounds of one: too long

    s = RefineSettings(coarse=4, tolerance=0.0, max_fraction=1.0)
    with pytest.raises(ValueError):
        select_adaptively(acc, estimate, s, batch=1)
