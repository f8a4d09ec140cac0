"""When an LLC estimate is valid: the thresholds, in one place (SPEC section 10).

Per estimate (:func:`assess`, used by :func:`grokking_llc.llc.llc_from_traces`):

* ``stationary``: at least :data:`MIN_CHAINS` chains that did not diverge; split-R-hat of the
  loss below :data:`R_HAT_MAX` on the draws and on the tail window (the last half of the
  draws); split-R-hat of the distance ``|w - w*|`` over the draws below :data:`R_HAT_MAX` too
  (the loss misses near-flat directions that relax slowly, on the time scale
  ``2 / (eps gamma)`` of SPEC section 10: on a reduced-rank regression the loss R-hat was 1.02
  while the distance's was 1.25 and the estimate still rose by 20%); the drift
  of the mean loss between the first and last quarter of the draws within :data:`DRIFT_Z_MAX`
  standard errors; and an effective sample size of at least :data:`ESS_MIN` (with fewer, R-hat
  and the drift test have no power: Vehtari et al. 2021 ask for ~100 per chain).
* ``step_ok``: mean MALA acceptance probability of the SGLD step at least :data:`MALA_MIN`
  (devinterp's calibration guidance; SPEC section 10 gives the formula). Unknown (NaN) is not ok.
* ``localisation_dominated``: the mean norm of the loss force ``nbeta grad L`` over the draws is
  below :data:`GRAD_LOC_RATIO_MIN` times that of the localisation force ``gamma (w - w*)``.
  Why 1: on an isotropic quadratic loss ``L = h |u|^2 / 2`` the two forces are proportional,
  their ratio is ``r = nbeta h / gamma``, the estimate is ``(d/2) r / (1 + r)`` and its
  elasticity in nbeta is ``d ln llc / d ln nbeta = 1 / (1 + r)``. Below r = 1 the estimate is
  off by more than half and grows faster than ``nbeta^(1/2)``: it measures the prior more than
  the loss. Unknown (NaN) counts as dominated.
* ``valid``: a finite, positive estimate (a negative one means the chains found lower loss
  than at w*, which is then not a local minimum at this temperature), no chain diverged,
  stationary, step ok, not dominated.

Across estimates (:mod:`grokking_llc.calibrate`): the estimate must not scale with nbeta (its
elasticity between nbeta/2 and nbeta at most :data:`NBETA_ELASTICITY_MAX`, the value at r = 1
above), must be flat in the step size (within :data:`EPS_FLAT_TOL` relative or
:data:`SE_MULT` standard errors of the adjacent step on the grid), and must not move under a
function-preserving rescaling (within :data:`RESCALE_TOL` relative or :data:`SE_MULT` SEs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

R_HAT_MAX = 1.1  # split-R-hat on the draws and on the tail window (SPEC section 10)
MIN_CHAINS = 4  # chains needed before R-hat means anything (SPEC section 10)
DRIFT_Z_MAX = 3.0  # |first-vs-last-quarter drift| in standard errors ("a few", SPEC 10)
ESS_MIN = 100.0  # effective draws of the mean loss, all chains together
MALA_MIN = 0.9  # mean MALA acceptance probability of a step (SPEC section 10)
GRAD_LOC_RATIO_MIN = 1.0  # |nbeta grad L| / |gamma (w - w*)|; below: dominated (docstring)
NBETA_ELASTICITY_MAX = 0.5  # log2(llc(nbeta) / llc(nbeta / 2)); above: measures the prior
EPS_FLAT_TOL = 0.1  # relative change to the adjacent step size on the grid
RESCALE_TOL = 0.1  # relative change under W -> cW, V -> V / c^2 (SPEC section 10)
SE_MULT = 3.0  # changes within this many combined standard errors are noise


@dataclass(frozen=True)
class Validity:
    stationary: bool
    step_ok: bool
    localisation_dominated: bool
    valid: bool
    invalid_reason: str


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def assess(
    *,
    llc_mean: float,
    num_good_chains: int,
    num_diverged: int,
    r_hat: float,
    r_hat_tail: float,
    r_hat_distance: float,
    drift_z: float,
    ess: float,
    mala_acceptance: float,
    grad_loc_ratio: float,
    mala_note: str = "",
) -> Validity:
    """The booleans of one estimate and, when not valid, why (short, ``; ``-separated).

    Every comparison is written so that NaN fails it (unknown is never ok).
    """
    why_not_stationary = []
    if num_good_chains < MIN_CHAINS:
        why_not_stationary.append(f"{num_good_chains} chains < {MIN_CHAINS}")
    if not r_hat < R_HAT_MAX:
        why_not_stationary.append(f"r_hat {_fmt(r_hat)} >= {R_HAT_MAX}")
    if not r_hat_tail < R_HAT_MAX:
        why_not_stationary.append(f"tail r_hat {_fmt(r_hat_tail)} >= {R_HAT_MAX}")
    if not r_hat_distance < R_HAT_MAX:
        why_not_stationary.append(f"distance r_hat {_fmt(r_hat_distance)} >= {R_HAT_MAX}")
    if not abs(drift_z) <= DRIFT_Z_MAX:
        why_not_stationary.append(f"drift {_fmt(drift_z)} SE")
    if not ess >= ESS_MIN:
        why_not_stationary.append(f"ess {_fmt(ess)} < {ESS_MIN:g}")
    stationary = not why_not_stationary
    step_ok = mala_acceptance >= MALA_MIN
    dominated = not grad_loc_ratio >= GRAD_LOC_RATIO_MIN
    why = []
    if not math.isfinite(llc_mean):
        why.append("no finite estimate")
    elif not llc_mean > 0:
        why.append("estimate <= 0 (w* is not a local minimum at this temperature)")
    if num_diverged:
        why.append(f"{num_diverged} chain(s) diverged")
    why += why_not_stationary
    if not step_ok:
        why.append(mala_note or f"mala {_fmt(mala_acceptance)} < {MALA_MIN}")
    if dominated:
        why.append(f"localisation-dominated (grad/loc {_fmt(grad_loc_ratio)})")
    return Validity(
        stationary=stationary,
        step_ok=bool(step_ok),
        localisation_dominated=bool(dominated),
        valid=not why,
        invalid_reason="; ".join(why),
    )


def nbeta_elasticity(llc_at_nbeta: float, llc_at_half: float) -> float:
    """``log2(llc(nbeta) / llc(nbeta / 2))``: 0 for an estimate that ignores nbeta, 1 for one
    proportional to it (a prior-dominated estimate, SPEC section 10). NaN unless both > 0."""
    if not (llc_at_nbeta > 0 and llc_at_half > 0):
        return math.nan
    return math.log2(llc_at_nbeta / llc_at_half)


def within(a: float, b: float, se_a: float, se_b: float, rel_tol: float) -> bool:
    """``|a - b|`` within ``rel_tol * |b|`` or :data:`SE_MULT` combined standard errors."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    diff = abs(a - b)
    se = math.hypot(se_a, se_b) if math.isfinite(se_a) and math.isfinite(se_b) else 0.0
    return diff <= max(rel_tol * abs(b), SE_MULT * se)
