"""Validity rules (SPEC section 10, grokking_llc.validity) at their boundaries: every R-hat is
strict (< 1.1), a zero estimate is not positive, the reasons read as documented, the tolerance
comparison is inclusive and relative to |b|, and the cross-estimate thresholds mean what the
module docstring derives (an estimate proportional to nbeta fails, a 50% change is never
flat)."""

import math

import pytest

from grokking_llc import validity as v

GOOD = dict(
    llc_mean=3.0, num_good_chains=4, num_diverged=0, r_hat=1.01, r_hat_tail=1.02,
    r_hat_distance=1.03, drift_z=0.5, ess=500.0, mala_acceptance=0.97, grad_loc_ratio=5.0,
)  # fmt: skip


@pytest.mark.parametrize("key", ["r_hat", "r_hat_tail", "r_hat_distance"])
def test_every_r_hat_at_exactly_the_threshold_fails(key):
    res = v.assess(**{**GOOD, key: 1.1})
    assert not res.stationary and not res.valid
    assert res.invalid_reason.endswith(">= 1.1")


@pytest.mark.parametrize("llc, valid", [(0.0, False), (-0.0, False), (1e-12, True), (0.5, True)])
def test_an_estimate_must_be_strictly_positive(llc, valid):
    res = v.assess(**{**GOOD, "llc_mean": llc})
    assert res.valid is valid
    assert res.stationary  # the sign is not a stationarity question


def test_reasons_read_as_documented_and_are_joined_by_semicolons():
    res = v.assess(**{**GOOD, "llc_mean": math.inf})
    assert res.invalid_reason == "no finite estimate"
    res = v.assess(**{**GOOD, "llc_mean": -0.5, "num_diverged": 2, "ess": 50.0})
    assert res.invalid_reason == (
        "estimate <= 0 (w* is not a local minimum at this temperature); "
        "2 chain(s) diverged; ess 50 < 100"
    )
    res = v.assess(**{**GOOD, "num_good_chains": 2, "drift_z": 4.0, "grad_loc_ratio": 0.5})
    assert res.invalid_reason == ("2 chains < 4; drift 4 SE; localisation-dominated (grad/loc 0.5)")


@pytest.mark.parametrize(
    "a, b, expected",
    [(0.0, 1.0, math.nan), (1.0, 0.0, math.nan), (0.5, 0.25, 1.0), (0.25, 0.5, -1.0),
     (1e-9, 1e-9, 0.0), (0.5, 0.5 * 2**-0.5, 0.5)],
)  # fmt: skip
def test_nbeta_elasticity_needs_both_estimates_positive(a, b, expected):
    e = v.nbeta_elasticity(a, b)
    if math.isnan(expected):
        assert math.isnan(e)
    else:
        assert e == pytest.approx(expected)


def test_within_is_inclusive_and_relative_to_b():
    assert v.within(1.5, 1.0, 0.0, 0.0, 0.5)  # |a - b| = 0.5 = 0.5 |b|: within
    assert v.within(3.0, 2.0, 0.0, 0.0, 0.5)  # 1 <= 0.5 * 2
    assert not v.within(3.0, 2.0, 0.0, 0.0, 0.4)  # 1 > 0.8
    assert v.within(1.75, 1.0, 0.25, 0.0, 0.0)  # 0.75 = 3 SE exactly


def test_within_refuses_non_finite_estimates_and_ignores_non_finite_errors():
    assert not v.within(1.0, math.inf, 0.0, 0.0, 0.1)  # inf - 1 <= 0.1 * inf must not pass
    assert not v.within(math.inf, 1.0, 0.0, 0.0, 0.1)
    assert not v.within(1.0, math.nan, 0.0, 0.0, 0.1)
    # an unknown standard error gives no noise allowance (not an infinite one)
    assert not v.within(2.0, 1.0, math.inf, 0.0, 0.1)
    assert not v.within(2.0, 1.0, 0.0, math.nan, 0.1)
    assert not v.within(2.0, 1.0, math.nan, math.inf, 0.1)
    assert v.within(2.0, 1.0, 0.3, 0.4, 0.1)  # 1 <= 3 * 0.5


def test_nbeta_elasticity_threshold_is_the_elasticity_at_the_dominance_boundary():
    """Module docstring: on an isotropic quadratic the estimate is (d/2) r / (1 + r) with
    r = nbeta h / gamma; its elasticity d ln llc / d ln nbeta = 1 / (1 + r) is taken here by
    a central difference at r = GRAD_LOC_RATIO_MIN, where localisation starts to dominate."""
    r = v.GRAD_LOC_RATIO_MIN

    def log_llc(log_r):
        return math.log(math.exp(log_r) / (1.0 + math.exp(log_r)))

    h = 1e-5
    slope = (log_llc(math.log(r) + h) - log_llc(math.log(r) - h)) / (2 * h)
    assert v.NBETA_ELASTICITY_MAX == pytest.approx(slope, rel=1e-6)
    # an estimate proportional to nbeta fails, one that ignores it passes
    assert v.nbeta_elasticity(2.0, 1.0) > v.NBETA_ELASTICITY_MAX
    assert v.nbeta_elasticity(1.0, 1.0) <= v.NBETA_ELASTICITY_MAX


@pytest.mark.parametrize("tol_name", ["EPS_FLAT_TOL", "RESCALE_TOL"])
def test_relative_tolerances_separate_noise_from_a_real_change(tol_name):
    """Without noise, a 5% change is the same estimate and a 50% change is not (a tolerance of
    1 or more would call an estimate that doubled 'flat')."""
    tol = getattr(v, tol_name)
    assert v.within(1.05, 1.0, 0.0, 0.0, tol)
    assert not v.within(1.5, 1.0, 0.0, 0.0, tol)
    assert not v.within(2.0, 1.0, 0.0, 0.0, tol)
    assert 0.0 < tol < 0.5
