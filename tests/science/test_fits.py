"""grokking_llc.science.fits: the line, proportional, exponential-decay and bias-reduced fits (SPEC
sections 6-7), against values computed by hand or independently."""

from __future__ import annotations

import math

import numpy as np
import pytest

from grokking_llc.science.fits import (
    bias_reduced_llc,
    exponential_curve,
    fit_exponential_decay,
    fit_linear,
    fit_proportional,
)
from grokking_llc.science.scaling import (
    theory_quadratic,
)
from grokking_llc.science.stats import (
    first_step_reaching,
    spearman,
)
from grokking_llc.science.text import describe_exponential

from .helpers import assert_dict

NAN = math.nan


def exact_decay(x, a=1.0, b=1.0, c=0.0):
    x = np.asarray(x, dtype=float)
    return x, a * np.exp(-b * x) + c


def test_fit_linear_by_hand_and_degenerate_inputs():
    fit = fit_linear([0.0, 1.0, 2.0], [0.0, 0.0, 3.0])
    assert fit["slope"] == pytest.approx(1.5) and fit["intercept"] == pytest.approx(-0.5)
    assert fit["r2"] == pytest.approx(0.75) and fit["n"] == 3
    llc = np.array([20.0, 25.0, 30.0, 41.0])
    paper = fit_linear(llc, 0.1288 * llc - 2.098)  # SPEC section 6's line
    assert paper["slope"] == pytest.approx(0.1288) and paper["intercept"] == pytest.approx(-2.098)
    flat = fit_linear([0.0, 1.0, 2.0], [2.0, 2.0, 2.0])
    assert flat["slope"] == pytest.approx(0.0, abs=1e-12) and math.isnan(flat["r2"])
    with pytest.raises(ValueError, match="at least 2 distinct"):
        fit_linear([1.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        fit_linear([0.0, 1.0, float("nan")], [0.0, 1.0, 2.0])


def test_fit_proportional_by_hand():
    # c = (1*2 + 2*4 + 3*7) / (1 + 4 + 9) = 31/14; fitted 31/14 * x; y mean 13/3
    fit = fit_proportional([1.0, 2.0, 3.0], [2.0, 4.0, 7.0])
    c = 31.0 / 14.0
    sse = (2 - c) ** 2 + (4 - 2 * c) ** 2 + (7 - 3 * c) ** 2
    sst = (2 - 13 / 3) ** 2 + (4 - 13 / 3) ** 2 + (7 - 13 / 3) ** 2
    assert fit["c"] == pytest.approx(c) and fit["r2"] == pytest.approx(1 - sse / sst)
    with pytest.raises(ValueError, match="every x is 0"):
        fit_proportional([0.0, 0.0], [1.0, 2.0])


def test_exponential_fit_recovers_parameters():
    lr = np.geomspace(1e-4, 1e-2, 9)
    fit = fit_exponential_decay(lr, 0.4 * np.exp(-300.0 * lr) + 0.02)
    assert fit["a"] == pytest.approx(0.4, rel=1e-5) and fit["b"] == pytest.approx(300.0, rel=1e-5)
    assert fit["c"] == pytest.approx(0.02, abs=1e-6) and fit["r2"] == pytest.approx(1.0, abs=1e-9)
    assert fit["status"] == "ok" and fit["usable"] is True
    grid = np.array([2e-4, 3e-3])
    expected = 0.4 * np.exp(-300.0 * grid) + 0.02
    assert exponential_curve(fit, grid) == pytest.approx(expected, rel=1e-5)
    x = np.linspace(2.0, 7.0, 6)
    nooff = fit_exponential_decay(x, 1.5 * np.exp(-0.7 * x), offset=False)
    assert nooff["a"] == pytest.approx(1.5, rel=1e-5) and nooff["b"] == pytest.approx(0.7, rel=1e-5)
    assert nooff["c"] == 0.0


def test_exponential_fit_with_noise_is_close():
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 4.0, 40)
    fit = fit_exponential_decay(x, 2.0 * np.exp(-1.3 * x) + 0.5 + rng.normal(0, 0.01, 40))
    assert fit["b"] == pytest.approx(1.3, rel=0.05) and 0.99 < fit["r2"] < 1.0
    assert fit["usable"]


def test_exponential_fit_reports_unusable_fits():
    # a straight line: no curvature, a and c trade off without bound
    line = fit_exponential_decay([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0])
    assert line["status"] == "no_curvature" and not line["usable"]
    assert line["r2"] == pytest.approx(1.0, abs=1e-6)
    # a drop within the first spacing: the rate is not resolved
    step = fit_exponential_decay([0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 0, 0, 0, 0])
    assert step["status"] == "too_fast" and not step["usable"]
    # issue 11's weight-decay-1e-5 panel: never-generalised runs (GSM 0) averaged in at the
    # smallest lr make a jump the fit can only match with a = -1e14-ish
    lr = np.repeat([1e-4, 2e-4, 5e-4, 1e-3], 3)
    y = np.array([0, 0, 0.5, 0.45, 0.44, 0.46, 0.3, 0.31, 0.29, 0.25, 0.24, 0.26])
    bad = fit_exponential_decay(lr, y)
    assert abs(bad["a"]) > 1e12 and not bad["usable"]
    assert bad["status"] in ("too_fast", "absurd")
    assert "not usable" in describe_exponential(bad)
    # far from the origin a = A exp(b x0) overflows: the curve is fine, "a" is absurd
    x = 1000.0 + np.arange(6.0)
    far = fit_exponential_decay(x, 3.0 * np.exp(-0.9 * (x - 1000.0)) + 1.0)
    assert far["a"] == math.inf and far["status"] == "absurd"
    assert far["a_at_x_min"] == pytest.approx(3.0, rel=1e-5)


def test_exponential_fit_degenerate_inputs_raise():
    with pytest.raises(ValueError, match="at least 3 distinct"):
        fit_exponential_decay([1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="at least 2 distinct"):
        fit_exponential_decay([1.0], [1.0], offset=False)
    with pytest.raises(ValueError, match="equal lengths"):
        fit_exponential_decay([1.0, 2.0, 3.0], [1.0, 0.5])


def test_bias_reduced_llc_recovers_the_intercept():
    from grokking_llc.science.fits import bias_reduced_llc

    nbeta = np.array([10.0, 20.0, 40.0, 80.0])
    llc = 3.0 + 50.0 / nbeta  # exact line in 1/nbeta: intercept 3, slope 50
    fit = bias_reduced_llc(nbeta, llc)
    assert fit["intercept"] == pytest.approx(3.0) and fit["slope"] == pytest.approx(50.0)
    assert fit["r2"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=">= 2"):
        bias_reduced_llc([10.0, 10.0], [1.0, np.nan])


def test_fits_at_the_fewest_distinct_x_values():
    assert fit_linear([0.0, 1.0], [1.0, 3.0]) == {
        "slope": 2.0, "intercept": 1.0, "r2": 1.0, "n": 2,
    }  # fmt: skip
    assert fit_proportional([1.0, 2.0], [2.0, 3.0]) == {
        "c": 8.0 / 5.0,  # (1*2 + 2*3) / (1 + 4)
        "r2": 1.0 - ((2 - 1.6) ** 2 + (3 - 3.2) ** 2) / 0.5,
        "n": 2,
    }


@pytest.mark.parametrize(
    "x, y, words",
    [
        ([0.0, NAN], [1.0, 2.0], "x contains NaN"),
        ([0.0, 1.0], [1.0, np.inf], "y contains NaN"),
        ([[0.0, 1.0]], [1.0, 2.0], "x must be 1-D"),
        ([0.0, 1.0], [[1.0, 2.0]], "y must be 1-D"),
    ],
)
def test_fit_input_errors_name_the_argument(x, y, words):
    with pytest.raises(ValueError, match=words):
        fit_linear(x, y)


def test_bias_reduced_llc_keys_and_refusal():
    # llc = 10 - 20 / nbeta exactly: intercept 10, slope -20
    out = bias_reduced_llc([10.0, 20.0, 40.0], [8.0, 9.0, 9.5])
    assert_dict(out, {"intercept": 10.0, "slope": -20.0, "r2": 1.0, "n": 3})
    with pytest.raises(ValueError) as err:
        bias_reduced_llc([10.0, 10.0, 20.0], [1.0, 2.0, NAN])
    assert str(err.value) == "the temperature sweep needs finite estimates at >= 2 values of nbeta"


def test_exponential_fit_resolves_a_gentle_curvature():
    """k = b * span = 0.5: above the no-curvature limit (0.1), fitted exactly."""
    x, y = exact_decay(np.linspace(0.0, 1.0, 9), a=2.0, b=0.5, c=1.0)
    fit = fit_exponential_decay(x, y)
    assert fit["status"] == "ok" and fit["usable"]
    assert fit["b"] == pytest.approx(0.5, rel=1e-5)
    assert fit["a"] == pytest.approx(2.0, rel=1e-4) and fit["c"] == pytest.approx(1.0, rel=1e-4)


def test_exponential_fit_rate_resolved_by_the_first_spacing():
    """x = 0..20 (first spacing 1/20 of the span), b = 3: by the second x the curve is at
    e^-3 = 5% of its amplitude, above the 1% limit: usable. Spacing x = 0, 2, 4, ... (e^-6 =
    0.25%) is not."""
    x, y = exact_decay(np.arange(0.0, 21.0), b=3.0)
    fit = fit_exponential_decay(x, y)
    assert fit["status"] == "ok"
    assert fit["b"] == pytest.approx(3.0, rel=1e-5)
    x, y = exact_decay(np.arange(0.0, 21.0, 2.0), b=3.0)
    assert fit_exponential_decay(x, y)["status"] == "too_fast"
    # the first spacing, not the second, decides: x = 0, 1, then every 2
    x, y = exact_decay(np.r_[0.0, np.arange(1.0, 21.0, 2.0)], b=3.0)
    assert fit_exponential_decay(x, y)["status"] == "ok"


@pytest.mark.parametrize("amp", [1.0, 2.0])
def test_exponential_fit_absurd_above_a_thousand_times_the_data_scale(amp):
    """y = amp exp(-(x - x0)) on x in [x0, x0 + 4]: the scale is amp and a = amp e^x0. With
    e^x0 = 1000.5 the parameter is just above 1000 times the scale (absurd), with 999.5 just
    below (ok)."""
    for factor, status in ((1000.5, "absurd"), (999.5, "ok")):
        x0 = math.log(factor)
        x = x0 + np.linspace(0.0, 4.0, 9)
        y = amp * np.exp(-(x - x0))
        fit = fit_exponential_decay(x, y, offset=False)
        assert fit["a"] == pytest.approx(amp * factor, rel=1e-6)
        assert fit["status"] == status


def test_exponential_fit_rate_search_range():
    """The scaled rate k = b * span is searched in [1e-4, 1e3]: a straight line sits at the
    lower end; a drop to 0 within the first 1/2000 of the span (which the model can only
    approach as k grows) at the upper end."""
    x = np.linspace(0.0, 2.0, 9)
    line = fit_exponential_decay(x, 5.0 - x)
    assert line["status"] == "no_curvature"
    assert line["b"] * 2.0 == pytest.approx(1e-4, rel=1e-6)
    x = np.array([0.0, 0.001, 0.5, 1.0, 2.0])
    cliff = fit_exponential_decay(x, np.array([1.0, 0.0, 0.0, 0.0, 0.0]))
    assert cliff["b"] * 2.0 == pytest.approx(1e3, rel=1e-6)


def test_input_messages_name_the_argument():
    with pytest.raises(ValueError) as err:
        fit_linear([], [])
    assert str(err.value) == "x is empty: need at least one value"
    with pytest.raises(ValueError, match=r"^steps contains NaN"):
        first_step_reaching([0, NAN], [1.0, 1.0], 0.5)
    with pytest.raises(ValueError, match=r"^values contains NaN"):
        first_step_reaching([0, 1], [1.0, NAN], 0.5)
    with pytest.raises(ValueError) as err:
        first_step_reaching([2, 1], [1.0, 1.0], 0.5)
    assert str(err.value) == "steps must be strictly increasing"
    with pytest.raises(ValueError) as err:
        fit_proportional([0.0, 0.0], [1.0, 2.0])
    assert str(err.value) == "every x is 0: no line through the origin"
    with pytest.raises(ValueError, match=r"^x contains NaN"):
        spearman([NAN, 1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"^y contains NaN"):
        spearman([0.0, 1.0, 2.0], [1.0, 2.0, NAN])
    with pytest.raises(ValueError) as err:
        spearman([0.0, 1.0, 2.0], [1.0, 2.0])
    assert str(err.value) == "inputs must have equal lengths, got x: 3, y: 2"
    with pytest.raises(ValueError):
        theory_quadratic([7, 11], [8])


def test_exponential_fit_rate_inside_the_last_grid_cell():
    """b = 980 over a span of 1 (k = 980, between the grid's last two points 967 and 1000):
    the golden-section search between them finds it."""
    x = np.r_[0.0, 0.0005 * np.arange(1, 8), 0.5, 1.0]
    fit = fit_exponential_decay(x, np.exp(-980.0 * x))
    assert fit["b"] == pytest.approx(980.0, rel=1e-4)
