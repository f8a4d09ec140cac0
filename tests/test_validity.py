"""The validity rules of SPEC section 10 (grokking_llc.validity): each criterion on its own, at
its threshold, and NaN (unknown) never counting as ok."""

import math

import pytest

from grokking_llc import validity as v

GOOD = dict(
    llc_mean=3.0, num_good_chains=4, num_diverged=0, r_hat=1.01, r_hat_tail=1.02,
    r_hat_distance=1.03, drift_z=0.5, ess=500.0, mala_acceptance=0.97, grad_loc_ratio=5.0,
)  # fmt: skip


def test_a_good_estimate_is_valid():
    res = v.assess(**GOOD)
    assert (res.valid, res.stationary, res.step_ok, res.localisation_dominated) == (
        True, True, True, False,
    )  # fmt: skip
    assert res.invalid_reason == ""


@pytest.mark.parametrize(
    "change, flag, words",
    [
        ({"num_good_chains": 3}, "stationary", "3 chains"),
        ({"r_hat": v.R_HAT_MAX}, "stationary", "r_hat 1.1"),
        ({"r_hat_tail": 1.5}, "stationary", "tail r_hat"),
        ({"r_hat_distance": 1.2}, "stationary", "distance r_hat"),
        ({"drift_z": -3.01}, "stationary", "drift"),
        ({"ess": 99.0}, "stationary", "ess 99"),
        ({"r_hat": math.nan}, "stationary", "r_hat nan"),
        ({"mala_acceptance": 0.89}, "step_ok", "mala 0.89"),
        ({"mala_acceptance": math.nan}, "step_ok", "mala nan"),
        ({"grad_loc_ratio": 0.99}, "localisation_dominated", "localisation-dominated"),
        ({"grad_loc_ratio": math.nan}, "localisation_dominated", "localisation-dominated"),
        ({"num_diverged": 1}, None, "1 chain(s) diverged"),
        ({"llc_mean": math.nan}, None, "no finite estimate"),
        ({"llc_mean": -0.5}, None, "estimate <= 0"),
    ],
)
def test_each_failure_makes_the_estimate_invalid_and_says_why(change, flag, words):
    res = v.assess(**{**GOOD, **change})
    assert not res.valid and words in res.invalid_reason
    if flag == "stationary":
        assert not res.stationary and res.step_ok and not res.localisation_dominated
    elif flag == "step_ok":
        assert res.stationary and not res.step_ok
    elif flag == "localisation_dominated":
        assert res.stationary and res.localisation_dominated


def test_thresholds_are_inclusive_where_spec_says_within():
    at = v.assess(**{**GOOD, "drift_z": 3.0, "ess": 100.0, "mala_acceptance": 0.9,
                     "grad_loc_ratio": 1.0})  # fmt: skip
    assert at.valid
    just = v.assess(**{**GOOD, "r_hat": 1.0999})
    assert just.stationary


def test_mala_note_replaces_the_number_when_given():
    res = v.assess(**{**GOOD, "mala_acceptance": math.nan}, mala_note="no MALA from devinterp")
    assert "no MALA from devinterp" in res.invalid_reason


def test_nbeta_elasticity_and_within():
    assert v.nbeta_elasticity(8.0, 4.0) == pytest.approx(1.0)  # proportional to nbeta
    assert v.nbeta_elasticity(3.0, 3.0) == 0.0
    assert v.nbeta_elasticity(3.0, 3.0 / 2**0.25) == pytest.approx(0.25)
    assert math.isnan(v.nbeta_elasticity(3.0, -1.0))
    assert v.within(1.05, 1.0, 0.0, 0.0, 0.1) and not v.within(1.2, 1.0, 0.0, 0.0, 0.1)
    # noise allowance: 3 combined SEs
    assert v.within(1.2, 1.0, 0.05, 0.05, 0.1)  # 0.2 <= 3 * 0.0707
    assert not v.within(1.25, 1.0, 0.05, 0.05, 0.1)
    assert not v.within(math.nan, 1.0, 0.0, 0.0, 0.1)
