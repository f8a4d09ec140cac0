"""When an LLC estimate is valid: the thresholds, in one place (SPEC section 10).

Per estimate (:func:`assess`, used by :func:`grokking_llc.sampling.llc.llc_from_traces`). Each
criterion
below is written so that NaN (unknown) fails it; the reasons are listed in ``invalid_reason``.

* ``at_minimum`` (SPEC section 10, "Not a minimum"): the LLC is defined at a local minimum of
  the loss. Where the full-batch gradient at w* is not small against the curvature, the
  localised posterior's mean moves downhill and the estimate takes a negative term of size
  :func:`gradient_bias` (``B``). w* counts as a minimum *at the sampler's resolution* when
  ``B <= MINIMUM_TOL * (llc + B)`` (the gradient changes the estimate by at most 10%) and the
  chains did not find lower loss than w* on average (``llc > 0``). A checkpoint that fails this
  is reported with status ``not_a_minimum``, apart from sampler failures: the LLC is not
  defined there, which is a finding about the checkpoint, not about the sampler. Chains that
  are still running downhill after the burn-in (:func:`descending`) are the other sign of it.
* ``below_bound``: an estimate cannot exceed ``llc_bound``
(:func:`grokking_llc.sampling.llc.llc_bound`:
  d/2, and half the dimension of the predictions the loss sees, e.g. ``p (n - 1) / 2`` for the
  centred loss; SPEC section 10). One above it by more than :data:`BOUND_TOL` (the step-size
  bias the calibration accepts: a regular model's estimate at a sound step reads 3.09 for
  d/2 = 3) is not the LLC.
* ``stationary``: at least :data:`MIN_CHAINS` chains that did not diverge; ArviZ's
  rank-normalised split-R-hat of the loss below :data:`R_HAT_MAX` on the draws and on the tail
  window (the last half of the draws); bulk and tail ESS of at least :data:`ESS_MIN` (Vehtari et
  al. 2021: 100 per chain); the drift of the mean loss between the first and last quarter of
  the draws within :data:`DRIFT_Z_MAX` standard errors (or below :data:`DRIFT_REL_MAX` of the
  estimate: with 10^4 effective draws a 1% drift is 10 SEs, and irrelevant against the
  calibration's 5-10% tolerances; at the K=256 calibration the estimate of a run stopped at a
  2% drift was 0.8% above that of a run three times as long) *and resolved*: the standard
  error of that drift, in LLC units, at most :data:`DRIFT_SE_MAX` of the estimate, so a drift
  of ~10% could not hide in the noise. The distance ``|w - w*|`` and its R-hat are reported, not
  required: on singular known answers (reduced-rank regressions, deep linear networks) the
  distance R-hat stays at 1.9-2.5 while a Metropolis-adjusted reference sampler's estimate is
  within 2% of the closed form (the flat directions of a singular posterior relax on the time
  scale ``nbeta / gamma^2``), and at the quadratic net's K=256 final checkpoint the distance
  crept up by 4% over 10,000 steps while the estimate moved by 1% (benchmarks/RESULTS.md). The
  loss itself, resolved to 3%, is the direct test.
* ``step_ok``: mean MALA acceptance probability of the SGLD step at least :data:`MALA_MIN`
  (devinterp's calibration guidance; SPEC section 10 gives the formula). Unknown (NaN) is not
  ok. An exact (Metropolis-adjusted) sampler has no step error: ``exact=True`` passes it.
  The acceptance is a per-step measure; the accumulated step-size bias is the calibration's
  step-size check (below), which is the one that binds in practice.
* ``localisation_dominated``: the mean norm of the loss force ``nbeta grad L`` over the draws
  below :data:`GRAD_LOC_RATIO_MIN` times that of the localisation force ``gamma (w - w*)``.
  Why 1: on an isotropic quadratic loss ``L = h |u|^2 / 2`` the two forces are proportional,
  their ratio is ``r = nbeta h / gamma``, the estimate is ``(d/2) r / (1 + r)`` and its
  elasticity in nbeta is ``1 / (1 + r)``. Below r = 1 the estimate is off by more than half.
* ``valid``: all of the above, a finite positive estimate and no diverged chain.

``status`` sums it up for figures and tables: ``"valid"``, ``"not_a_minimum"`` (whatever else
failed) or ``"invalid"``.

Across estimates (:mod:`grokking_llc.sampling.calibrate`, the setting-level checks; each a
:func:`compare` of two estimates): the estimate must not move by more than :data:`SENSITIVITY_TOL`
as gamma keeps halving (it still counts directions the localisation hides: the rest of the
ladder's geometric series, :func:`remaining_bias`), when nbeta halves at the
same resolution nbeta/gamma (a temperature effect), or under a function-preserving rescaling
run at the same fraction of its own stability edge (the true LLC is invariant); and the step
size must be small enough that halving it moves the estimate by at most :data:`EPS_TOL` (the
step's bias grows about linearly in eps, so the chosen step's bias is about twice that). When
the estimate converges geometrically (its bias halves with gamma or with 1/nbeta, as on a
quadratic loss), a change of 10% between gamma and 2 gamma means a bias of about 10% left at
gamma. A comparison is decided only when it is precise: the combined standard error at most
half the tolerance; otherwise it fails as too noisy to tell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

R_HAT_MAX = 1.1  # rank-normalised split-R-hat on the draws and on the tail window (SPEC 10)
MIN_CHAINS = 4  # chains needed before R-hat means anything (SPEC section 10)
DRIFT_Z_MAX = 3.0  # |first-vs-last-quarter drift| in standard errors ("a few", SPEC 10)
DRIFT_SE_MAX = 0.03  # standard error of that drift, as a fraction of the estimate
DRIFT_REL_MAX = 0.02  # ... or a drift this small against the estimate, however precise
ESS_MIN = 400.0  # bulk and tail ESS of the loss, all chains together (100 per chain)
MALA_MIN = 0.9  # mean MALA acceptance probability of a step (SPEC section 10)
GRAD_LOC_RATIO_MIN = 1.0  # |nbeta grad L| / |gamma (w - w*)|; below: dominated (docstring)
MINIMUM_TOL = 0.1  # gradient bias as a fraction of the estimate it would change
DOWNHILL_REL = 0.05  # a significant fall of the loss after the burn-in beyond this: downhill
SENSITIVITY_TOL = 0.1  # relative change when nbeta halves, or under rescaling
GAMMA_TOL = 0.05  # bias left along the localisation ladder (remaining_bias)
EPS_TOL = 0.05  # relative change when the step size halves
BOUND_TOL = EPS_TOL  # an estimate may exceed its bound by the step-size bias accepted

VALID, NOT_A_MINIMUM, INVALID = "valid", "not_a_minimum", "invalid"
STATUSES = (VALID, NOT_A_MINIMUM, INVALID)


@dataclass(frozen=True)
class Validity:
    stationary: bool
    step_ok: bool
    localisation_dominated: bool
    at_minimum: bool
    below_bound: bool
    valid: bool
    status: str
    invalid_reason: str


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def gradient_bias(grad_norm: float, curvature: float, nbeta: float, gamma: float) -> float:
    """The term a non-zero gradient adds (with a minus sign) to the estimate (SPEC section 10).

    Along the gradient's direction u = g/|g| the loss is ``L* - |g| t + h t^2 / 2`` (``h`` the
    curvature along u, clipped at 0, which makes the bias larger), so the localised tempered
    posterior along u is Gaussian with mean ``mu = nbeta |g| / (nbeta h + gamma)`` and
    ``nbeta (E[L] - L*)`` takes, besides the usual ``nbeta h var / 2``, the term
    ``-nbeta |g| mu + nbeta h mu^2 / 2 = -(nbeta |g|)^2 / (nbeta h + gamma)
    * (1 - nbeta h / (2 (nbeta h + gamma)))``. Returned without the sign; 0 at a stationary
    point, NaN when unknown."""
    if not (math.isfinite(grad_norm) and math.isfinite(curvature)):
        return math.nan
    h = max(float(curvature), 0.0)
    force = float(nbeta) * float(grad_norm)
    stiff = float(nbeta) * h + float(gamma)
    if stiff <= 0:
        return math.inf if force > 0 else 0.0
    return force**2 / stiff * (1.0 - float(nbeta) * h / (2.0 * stiff))


def is_minimum(llc_mean: float, bias: float) -> bool:
    """w* is a minimum at the sampler's resolution (module docstring): the chains stayed above
    L(w*) on average and the gradient's term is at most :data:`MINIMUM_TOL` of the estimate it
    would change. NaN fails."""
    if not (math.isfinite(llc_mean) and llc_mean > 0 and bias >= 0):
        return False
    return bias <= MINIMUM_TOL * (llc_mean + bias)


def descending(llc_mean: float, drift_z: float, drift_se: float) -> bool:
    """The chains are running downhill (SPEC section 10, "Not a minimum"): after the burn-in the
    loss still falls, significantly (beyond :data:`DRIFT_Z_MAX` SEs) and by more than
    :data:`DOWNHILL_REL` of the estimate between the first and last quarter of the draws. At a
    minimum a chain started at w* climbs to its plateau and stays; a slow settling after that
    climb reads at most ~2.5% at the K=256 final checkpoint, while a checkpoint in mid-training
    falls by far more (w* + a descent direction has lower loss)."""
    if not (math.isfinite(llc_mean) and math.isfinite(drift_z) and math.isfinite(drift_se)):
        return False
    return drift_z < -DRIFT_Z_MAX and drift_z * drift_se < -DOWNHILL_REL * abs(llc_mean)


def stationarity_problems(
    *,
    llc_mean: float,
    num_good_chains: int,
    r_hat: float,
    r_hat_tail: float,
    drift_z: float,
    drift_se: float,
    ess: float,
    ess_tail: float,
    ess_min: float = ESS_MIN,
) -> list[str]:
    """Why the draws are not stationary (module docstring; empty when they are): the part of
    :func:`assess` an adaptive run's stop rule also asks (with its own ``ess_min``)."""
    why = []
    if num_good_chains < MIN_CHAINS:
        why.append(f"{num_good_chains} chains < {MIN_CHAINS}")
    if not r_hat < R_HAT_MAX:
        why.append(f"r_hat {_fmt(r_hat)} >= {R_HAT_MAX}")
    if not r_hat_tail < R_HAT_MAX:
        why.append(f"tail r_hat {_fmt(r_hat_tail)} >= {R_HAT_MAX}")
    drift_llc = abs(drift_z * drift_se) if drift_se > 0 else 0.0  # the drift in LLC units
    if not (abs(drift_z) <= DRIFT_Z_MAX or drift_llc <= DRIFT_REL_MAX * abs(llc_mean)):
        why.append(f"drift {_fmt(drift_z)} SE")
    rel_se = drift_se / abs(llc_mean) if math.isfinite(llc_mean) and llc_mean != 0 else math.nan
    if not rel_se <= DRIFT_SE_MAX:
        why.append(f"drift unresolved (SE {_fmt(100 * rel_se)}% of the estimate)")
    if not ess >= ess_min:
        why.append(f"ess {_fmt(ess)} < {ess_min:g}")
    if not ess_tail >= ess_min:
        why.append(f"tail ess {_fmt(ess_tail)} < {ess_min:g}")
    return why


def assess(
    *,
    llc_mean: float,
    num_good_chains: int,
    num_diverged: int,
    mala_acceptance: float,
    grad_loc_ratio: float,
    gradient_bias: float,
    llc_bound: float,
    exact: bool = False,
    mala_note: str = "",
    **stats: float,
) -> Validity:
    """The booleans of one estimate, its status and, when not valid, why (short,
    ``; ``-separated; a not-a-minimum reason comes first, prefixed ``not_a_minimum``).

    ``stats``: the draws' statistics that :func:`stationarity_problems` takes (``r_hat``,
    ``r_hat_tail``, ``drift_z``, ``drift_se``, ``ess``, ``ess_tail``), passed on to it;
    ``drift_se`` is the standard error of the first-to-last-quarter drift in LLC units.
    ``llc_bound`` is the largest LLC the model can have (inf: no bound known), ``gradient_bias``
    :func:`gradient_bias` at w* (NaN: not measured, which fails). Every comparison is written
    so that NaN fails it (unknown is never ok)."""
    why_not_stationary = stationarity_problems(
        llc_mean=llc_mean, num_good_chains=num_good_chains, **stats
    )
    drift_z = stats["drift_z"]
    stationary = not why_not_stationary
    step_ok = bool(exact or mala_acceptance >= MALA_MIN)
    dominated = not grad_loc_ratio >= GRAD_LOC_RATIO_MIN
    downhill = descending(llc_mean, drift_z, stats["drift_se"])
    at_minimum = is_minimum(llc_mean, gradient_bias) and not downhill
    # without a finite estimate (diverged chains) the question is not asked: a sampler failure
    judged = math.isfinite(llc_mean) and num_good_chains > 0
    below_bound = (
        bool(llc_mean <= (1 + BOUND_TOL) * llc_bound) if math.isfinite(llc_mean) else False
    )
    why = []
    if judged and not at_minimum:
        if not llc_mean > 0:
            detail = "the chains found lower loss than w* (estimate <= 0)"
        elif downhill:
            detail = f"the chains still descend ({_fmt(drift_z)} SE after the burn-in)"
        elif not math.isfinite(gradient_bias):
            detail = "gradient at w* not measured"
        else:
            detail = f"gradient term {_fmt(gradient_bias)} > {MINIMUM_TOL:g} of the estimate"
        why.append(f"not_a_minimum: {detail}")
    if not math.isfinite(llc_mean):
        why.append("no finite estimate")
    elif not below_bound:
        why.append(f"above the bound {_fmt(llc_bound)} an LLC cannot exceed")
    if num_diverged:
        why.append(f"{num_diverged} chain(s) diverged")
    why += why_not_stationary
    if not step_ok:
        why.append(mala_note or f"mala {_fmt(mala_acceptance)} < {MALA_MIN}")
    if dominated:
        why.append(f"localisation-dominated (grad/loc {_fmt(grad_loc_ratio)})")
    valid = not why
    return Validity(
        stationary=stationary,
        step_ok=step_ok,
        localisation_dominated=bool(dominated),
        at_minimum=at_minimum,
        below_bound=below_bound,
        valid=valid,
        status=VALID if valid else (NOT_A_MINIMUM if judged and not at_minimum else INVALID),
        invalid_reason="; ".join(why),
    )


@dataclass(frozen=True)
class Comparison:
    """One setting-level check: ``change`` = (other - reference) / |reference|, its standard
    error ``se`` (relative), whether it passes ``tol`` and, if not, why."""

    change: float
    se: float
    ok: bool
    why: str


def compare(ref: float, other: float, se_ref: float, se_other: float, tol: float) -> Comparison:
    """Does ``other`` agree with ``ref`` within ``tol`` (relative), precisely enough to tell?
    Passes when ``|other - ref| <= tol |ref|`` and the combined standard error is at most
    ``tol |ref| / 2`` (module docstring). NaN fails."""
    if not (math.isfinite(ref) and math.isfinite(other) and ref != 0):
        return Comparison(math.nan, math.nan, False, "no finite estimate to compare")
    change = (other - ref) / abs(ref)
    se = math.hypot(se_ref, se_other) / abs(ref)
    if not se <= tol / 2:
        return Comparison(change, se, False, f"too noisy to tell (SE {_fmt(100 * se)}%)")
    if not abs(change) <= tol:
        return Comparison(change, se, False, f"moves {100 * change:+.1f}% (> {100 * tol:g}%)")
    return Comparison(change, se, True, "")


def remaining_bias(values: list[float], ses: list[float]) -> tuple[float, float]:
    """``(bias, ratio)``: how far the last of three estimates along a geometric ladder (gamma
    halved at each rung) still is from the ladder's limit, relative to it, and the ratio of
    the last change to the one before (Aitken's extrapolation: with changes ``d1, d2`` and
    ``q = d2 / d1`` in [0, 1), the rest of the series adds ``d2 q / (1 - q)``). A last change
    within two standard errors of zero counts as converged, its bias at most that change plus
    two SEs. inf when the ladder does not converge (q >= 1, or a significant change of sign);
    NaN when an estimate is missing. On a quadratic loss q = 1/2 (the bias halves with gamma);
    the singular known answers converge more slowly (q ~ 0.7, measured), which a single
    comparison at a fixed tolerance misses."""
    if len(values) != 3 or not all(math.isfinite(v) for v in [*values, *ses]) or values[2] == 0:
        return math.nan, math.nan
    (l0, l1, l2), (_, s1, s2) = values, ses
    d1, d2 = l1 - l0, l2 - l1
    noise = 2.0 * math.hypot(s1, s2)
    if abs(d2) <= noise:
        return (abs(d2) + noise) / abs(l2), math.nan
    q = d2 / d1 if d1 != 0 else math.inf
    if not 0 <= q < 1:
        return math.inf, q
    return abs(d2) * q / (1 - q) / abs(l2), q
