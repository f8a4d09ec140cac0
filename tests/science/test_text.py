"""grokking_llc.science.text: numbers in sentences (SPEC sections 6-7), against values computed
by hand or independently."""

from __future__ import annotations

import math

from grokking_llc.science.text import describe_exponential, fmt

NAN = math.nan


def test_fmt():
    assert fmt(1 / 3) == "0.3333"
    assert fmt(1 / 3, 2) == "0.33"
    assert fmt(math.inf) == "inf" and fmt(-math.inf) == "-inf"
    assert fmt(NAN) == "nan" and fmt("abc") == "abc" and fmt(None) == "None"


def test_describe_exponential_lines():
    fit = {"a": 2.0, "b": 0.5, "c": 1.0, "r2": 0.98765, "status": "ok"}
    assert describe_exponential(fit) == "a = 2, b = 0.5, c = 1, R² = 0.988"
    odd = {**fit, "status": "weird"}
    assert describe_exponential(odd) == (
        "exponential fit not usable: weird (a = 2, b = 0.5, c = 1); curve not drawn"
    )
    skipped = {"status": "skipped", "skipped": "2 distinct lr value(s)"}
    assert describe_exponential(skipped) == ("exponential fit skipped: 2 distinct lr value(s)")


def test_describe_unusable_fits():
    fit = {"a": 1.0, "b": 2.0, "c": 3.0}
    for status, why in [
        ("no_curvature", "no exponential curvature resolved (within 1.25% of a straight line)"),
        ("too_fast", "the fall happens within the first x spacing (rate not resolved)"),
        ("absurd", "absurd parameters"),
    ]:
        assert describe_exponential({**fit, "status": status}) == (
            f"exponential fit not usable: {why} (a = 1, b = 2, c = 3); curve not drawn"
        )
