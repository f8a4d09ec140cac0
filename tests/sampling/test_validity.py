"""The validity rules of SPEC section 10 (grokking_llc.sampling.validity): each criterion on its
own, at
its threshold and just either side, NaN (unknown) never counting as ok; the gradient term
against a direct numerical integral; the ladder's remaining bias against geometric series."""

import math

import numpy as np
import pytest

from grokking_llc.sampling import validity as v

GOOD = dict(
    llc_mean=300.0, num_good_chains=4, num_diverged=0, r_hat=1.01, r_hat_tail=1.02,
    drift_z=0.5, drift_se=1.0, ess=500.0, ess_tail=450.0, mala_acceptance=0.97,
    grad_loc_ratio=5.0, gradient_bias=1.0, llc_bound=1000.0,
)  # fmt: skip


def test_a_good_estimate_is_valid():
    res = v.assess(**GOOD)
    assert (res.valid, res.stationary, res.step_ok, res.localisation_dominated) == (
        True, True, True, False,
    )  # fmt: skip
    assert res.at_minimum and res.below_bound
    assert res.status == v.VALID and res.invalid_reason == ""


@pytest.mark.parametrize(
    "change, flag, words",
    [
        ({"num_good_chains": 3}, "stationary", "3 chains < 4"),
        ({"r_hat": v.R_HAT_MAX}, "stationary", "r_hat 1.1 >= 1.1"),
        ({"r_hat": math.nan}, "stationary", "r_hat nan"),
        ({"r_hat_tail": 1.5}, "stationary", "tail r_hat 1.5"),
        ({"drift_z": 3.01, "drift_se": 5.0}, "stationary", "drift 3.01 SE"),
        ({"drift_se": 0.031 * 300}, "stationary", "drift unresolved"),
        ({"drift_se": math.nan}, "stationary", "drift unresolved"),
        ({"ess": 399.0}, "stationary", "ess 399 < 400"),
        ({"ess_tail": 10.0}, "stationary", "tail ess 10 < 400"),
        ({"mala_acceptance": 0.89}, "step_ok", "mala 0.89"),
        ({"mala_acceptance": math.nan}, "step_ok", "mala nan"),
        ({"grad_loc_ratio": 0.99}, "localisation_dominated", "localisation-dominated"),
        ({"grad_loc_ratio": math.nan}, "localisation_dominated", "localisation-dominated"),
        ({"num_diverged": 1}, None, "1 chain(s) diverged"),
        ({"llc_mean": math.nan}, None, "no finite estimate"),  # a sampler failure
        ({"llc_bound": 250.0}, None, "above the bound 250"),
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
    assert res.status == (v.NOT_A_MINIMUM if flag == "minimum" else v.INVALID)


def test_thresholds_are_inclusive_where_spec_says_within():
    at = v.assess(**{**GOOD, "drift_z": 3.0, "ess": 400.0, "ess_tail": 400.0,
                     "mala_acceptance": 0.9, "grad_loc_ratio": 1.0,
                     "drift_se": v.DRIFT_SE_MAX * 300})  # fmt: skip
    assert at.valid, at.invalid_reason
    assert v.assess(**{**GOOD, "r_hat": 1.0999, "r_hat_tail": 1.0999}).stationary


def test_a_significant_but_negligible_drift_passes_and_a_real_one_does_not():
    """|drift| <= 2% of the estimate passes however many SEs it is (a very precise loss); a
    drift above 2% and above 3 SE does not."""
    small = v.assess(**{**GOOD, "drift_z": -10.0, "drift_se": 0.6})  # 6 = 2% of 300
    assert small.stationary
    real = v.assess(**{**GOOD, "drift_z": -10.0, "drift_se": 0.61})  # 6.1 > 2%
    assert not real.stationary and "drift -10 SE" in real.invalid_reason


def test_the_bound_allows_the_step_size_bias_and_no_more():
    at = v.assess(**{**GOOD, "llc_mean": 300.0, "llc_bound": 300.0 / (1 + v.BOUND_TOL)})
    assert at.below_bound and at.valid
    above = v.assess(**{**GOOD, "llc_mean": 300.0, "llc_bound": 300.0 / (1 + v.BOUND_TOL) - 1})
    assert not above.below_bound and not above.valid and above.status == v.INVALID
    assert v.assess(**{**GOOD, "llc_bound": math.inf}).valid  # no bound known


@pytest.mark.parametrize(
    "llc, bias, minimum",
    [
        (300.0, 300.0 * v.MINIMUM_TOL / (1 - v.MINIMUM_TOL), True),  # exactly 10% of llc + B
        (300.0, 300.0 * v.MINIMUM_TOL / (1 - v.MINIMUM_TOL) * 1.01, False),
        (300.0, 0.0, True),
        (0.0, 0.0, False),  # the chains found no higher loss: not a minimum here
        (-50.0, 1.0, False),
        (300.0, math.nan, False),  # not measured
    ],
)
def test_not_a_minimum_is_its_own_status(llc, bias, minimum):
    assert v.is_minimum(llc, bias) is minimum
    res = v.assess(**{**GOOD, "llc_mean": llc, "gradient_bias": bias})
    assert res.at_minimum is minimum
    if not minimum:
        assert res.status == v.NOT_A_MINIMUM and not res.valid
        assert res.invalid_reason.startswith("not_a_minimum")


def test_without_a_finite_estimate_the_minimum_question_is_not_asked():
    res = v.assess(**{**GOOD, "llc_mean": math.nan, "gradient_bias": 1e9})
    assert not v.is_minimum(math.nan, 1.0) and not res.at_minimum
    assert res.status == v.INVALID and not res.invalid_reason.startswith("not_a_minimum")


def test_chains_still_running_downhill_mean_no_minimum():
    """A significant fall of more than 5% of the estimate after the burn-in: downhill; a slow
    settling of 2.5% (the K=256 final checkpoint) or a rise is not."""
    down = dict(GOOD, drift_z=-10.0, drift_se=0.051 * 300 / 10)  # falls by 5.1%
    assert v.descending(300.0, -10.0, 0.051 * 300 / 10)
    res = v.assess(**down)
    assert res.status == v.NOT_A_MINIMUM and "still descend" in res.invalid_reason
    assert not v.descending(300.0, -10.0, 0.049 * 300 / 10)  # 4.9%
    assert not v.descending(300.0, -2.9, 10.0)  # not significant
    assert not v.descending(300.0, 10.0, 10.0)  # rising
    assert not v.descending(math.nan, -10.0, 10.0)


def test_not_a_minimum_wins_over_other_failures_and_lists_them_after():
    res = v.assess(**{**GOOD, "llc_mean": -5.0, "r_hat": 2.0})
    assert res.status == v.NOT_A_MINIMUM
    assert res.invalid_reason.startswith("not_a_minimum: the chains found lower loss")
    assert "r_hat 2 >= 1.1" in res.invalid_reason


def test_an_exact_sampler_has_no_step_check_and_a_note_replaces_the_number():
    assert v.assess(**{**GOOD, "mala_acceptance": math.nan}, exact=True).valid
    res = v.assess(**{**GOOD, "mala_acceptance": math.nan}, mala_note="no MALA from devinterp")
    assert "no MALA from devinterp" in res.invalid_reason


@pytest.mark.parametrize(
    "g, h, nbeta, gamma",
    [
        (0.01, 0.02, 1e5, 25.0),
        (0.003, 0.0, 1e4, 10.0),
        (0.02, -0.01, 500.0, 3.0),
        (0.0, 0.5, 1e3, 1.0),
    ],
)
def test_gradient_bias_against_a_direct_integral(g, h, nbeta, gamma):
    """Along the gradient, L(t) = L* - g t + h t^2 / 2 (h clipped at 0, SPEC section 10's
    first-order picture); the localised tempered posterior is ~ exp(-nbeta L(t) - gamma t^2 / 2).
    nbeta (E[L] - L*) from a quadrature, less the usual curvature term
    nbeta h var / 2 = nbeta h / (2 (nbeta h + gamma)), is minus gradient_bias."""
    hp = max(h, 0.0)
    stiff = nbeta * hp + gamma
    mu, sd = nbeta * g / stiff, 1 / math.sqrt(stiff)
    t = np.linspace(mu - 12 * sd, mu + 12 * sd, 200_001)
    u = -nbeta * g * t + 0.5 * stiff * t**2
    w = np.exp(-(u - u.min()))
    expected = float(np.sum(nbeta * (-g * t + 0.5 * hp * t**2) * w) / np.sum(w))
    curvature_term = 0.5 * nbeta * hp / stiff
    assert v.gradient_bias(g, h, nbeta, gamma) == pytest.approx(
        curvature_term - expected, rel=1e-6, abs=1e-9
    )


def test_gradient_bias_edges():
    assert math.isnan(v.gradient_bias(math.nan, 1.0, 1.0, 1.0))
    assert v.gradient_bias(1.0, 0.0, 10.0, 0.0) == math.inf  # no restoring force at all
    assert v.gradient_bias(0.0, 0.0, 10.0, 0.0) == 0.0


@pytest.mark.parametrize("q", [0.5, 0.7, 0.9])
def test_remaining_bias_is_exact_on_a_geometric_ladder(q):
    """Estimates 10 - 4 q^k (k = 0, 1, 2) approach 10; the rest beyond the third is 4 q^2,
    relative to the third estimate."""
    values = [10 - 4 * q**k for k in range(3)]
    bias, ratio = v.remaining_bias(values, [0.0, 0.0, 0.0])
    assert ratio == pytest.approx(q)
    assert bias == pytest.approx(4 * q**2 / values[2])


def test_remaining_bias_noise_divergence_and_missing_values():
    # the last change within 2 SE of zero: converged, at most that change and the noise
    bias, ratio = v.remaining_bias([9.0, 9.9, 9.95], [0.0, 0.1, 0.1])
    assert math.isnan(ratio) and bias == pytest.approx((0.05 + 2 * math.hypot(0.1, 0.1)) / 9.95)
    assert v.remaining_bias([1.0, 2.0, 3.5], [0.0] * 3)[0] == math.inf  # growing changes
    assert v.remaining_bias([1.0, 2.0, 1.5], [0.0] * 3)[0] == math.inf  # a real sign change
    assert math.isnan(v.remaining_bias([1.0, math.nan, 2.0], [0.0] * 3)[0])
    assert math.isnan(v.remaining_bias([1.0, 2.0], [0.0] * 2)[0])


@pytest.mark.parametrize(
    "ref, other, se, tol, ok, words",
    [
        (100.0, 110.0, 0.0, 0.1, True, ""),  # exactly 10%: inclusive
        (100.0, 110.01, 0.0, 0.1, False, "moves +10.0%"),
        (100.0, 89.0, 0.0, 0.1, False, "moves -11.0%"),
        (100.0, 101.0, 5.0 / math.sqrt(2), 0.1, True, ""),  # combined SE exactly tol/2
        (100.0, 101.0, 5.01 / math.sqrt(2), 0.1, False, "too noisy to tell"),
        (math.nan, 1.0, 0.0, 0.1, False, "no finite estimate"),
        (0.0, 1.0, 0.0, 0.1, False, "no finite estimate"),
    ],
)
def test_compare_needs_agreement_and_precision(ref, other, se, tol, ok, words):
    cmp = v.compare(ref, other, se, se, tol)
    assert cmp.ok is ok and words in cmp.why
    if math.isfinite(ref) and ref:
        assert cmp.change == pytest.approx((other - ref) / abs(ref))


def test_stationarity_problems_take_the_stop_rules_own_ess():
    stats = {k: GOOD[k] for k in ("llc_mean", "num_good_chains", "r_hat", "r_hat_tail",
                                  "drift_z", "drift_se", "ess", "ess_tail")}  # fmt: skip
    assert v.stationarity_problems(**stats) == []
    assert v.stationarity_problems(**stats, ess_min=1000.0) == [
        "ess 500 < 1000", "tail ess 450 < 1000",
    ]  # fmt: skip


def test_tolerances_are_ordered_as_the_docstring_derives():
    """The step's bias is about twice the change at a halved step, so its tolerance is half
    the others'; the ladder's remaining bias is held to the step's level."""
    assert v.EPS_TOL == v.SENSITIVITY_TOL / 2 == v.GAMMA_TOL
    assert v.BOUND_TOL == v.EPS_TOL
    assert 0 < v.DRIFT_REL_MAX < v.EPS_TOL and v.DRIFT_SE_MAX < v.SENSITIVITY_TOL / 3
