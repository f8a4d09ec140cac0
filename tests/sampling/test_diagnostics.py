"""Convergence diagnostics (SPEC sections 4 and 10), grokking_llc.sampling.diagnostics.

R-hat, ESS and the Monte Carlo standard error are ArviZ's: R-hat is checked against the
rank-normalised split-R-hat of Vehtari et al. (2021) written out here (ranks, normal scores,
split chains, the folded draws, the larger of the two), the ESS against the closed form of an
AR(1) process and of independent draws, the SE against sqrt(var / ESS). The drift and the MSER-5
burn-in (not in ArviZ) against references written with loops, including the edges a mutation
run found unchecked (short inputs at each length limit, float32 traces, non-finite values
outside the batches, the truncation bounds)."""

import math
import warnings
from statistics import NormalDist

import numpy as np
import pytest

from grokking_llc.sampling.diagnostics import (
    drift,
    drift_z,
    effective_sample_size,
    plateau_burn_in,
    r_hat,
    r_hat_tail,
    standard_error,
    tail_ess,
)


def ar1(phi, chains, n, seed, drift=0.0):
    rng = np.random.default_rng(seed)
    x = np.zeros((chains, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + rng.standard_normal(chains)
    return x + drift * np.arange(n)


def ref_rank_r_hat(x) -> float:
    """Vehtari et al. (2021), eqs. 14-17 with loops: split every chain in halves (an odd middle
    draw dropped), replace the draws by the normal scores of their pooled ranks
    ((r - 3/8) / (S + 1/4), ties averaged), the classic R-hat of those; the same for the
    folded draws |x - median|; the larger of the two."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[1] // 2
    halves = [row[:n] for row in x] + [row[len(row) - n :] for row in x]

    def classic(seqs):
        m = len(seqs)
        means = [sum(s) / n for s in seqs]
        grand = sum(means) / m
        b = n / (m - 1) * sum((mu - grand) ** 2 for mu in means)
        w = (
            sum(sum((v - mu) ** 2 for v in s) / (n - 1) for s, mu in zip(seqs, means, strict=True))
            / m
        )
        return math.sqrt(((n - 1) / n * w + b / n) / w)

    def z_scores(seqs):
        flat = [v for s in seqs for v in s]
        S = len(flat)
        order = sorted(range(S), key=lambda i: flat[i])
        ranks = [0.0] * S
        i = 0
        while i < S:  # average ranks of ties
            j = i
            while j + 1 < S and flat[order[j + 1]] == flat[order[i]]:
                j += 1
            for k in range(i, j + 1):
                ranks[order[k]] = (i + j) / 2 + 1
            i = j + 1
        z = [NormalDist().inv_cdf((r - 3 / 8) / (S + 1 / 4)) for r in ranks]
        return [z[k * n : (k + 1) * n] for k in range(len(seqs))]

    bulk = classic(z_scores(halves))
    med = float(np.median(np.concatenate(halves)))
    folded = classic(z_scores([[abs(v - med) for v in s] for s in halves]))
    return max(bulk, folded)


@pytest.mark.parametrize("seed", [0, 1])
def test_r_hat_is_the_rank_normalised_split_r_hat(seed):
    x = ar1(0.6, 4, 101, seed) + np.array([[0.0], [0.2], [0.0], [-0.1]])  # odd: middle dropped
    assert r_hat(x) == pytest.approx(ref_rank_r_hat(x), rel=1e-9)


def test_r_hat_sees_location_drift_and_scale():
    stationary = ar1(0.5, 4, 2000, 0)
    assert r_hat(stationary) < 1.01
    assert r_hat(stationary + np.array([[0.0], [0.0], [0.0], [3.0]])) > 1.1  # one chain apart
    assert r_hat(ar1(0.5, 4, 2000, 1, drift=0.005)) > 1.1  # still drifting
    wide = stationary * np.array([[1.0], [1.0], [1.0], [6.0]])  # same centre, not the same scale
    assert ref_rank_r_hat(wide) > 1.1 and r_hat(wide) > 1.1


def test_tail_r_hat_is_r_hat_of_the_last_half():
    x = ar1(0.3, 4, 1001, 2)
    assert r_hat_tail(x) == r_hat(x[:, -500:])
    relaxed = ar1(0.3, 4, 1000, 3) + 5 * np.exp(-np.arange(1000) / 100.0) * np.array(
        [[1.0], [-1.0], [0.5], [-0.5]]
    )
    assert r_hat(relaxed) > 1.1 > r_hat_tail(relaxed)  # relaxed during the first half only


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.8])
def test_bulk_and_tail_ess_of_an_ar1_process(phi):
    """The integrated autocorrelation time of AR(1) is (1 + phi) / (1 - phi); the bulk ESS of
    the mean is N / tau; the tail ESS is of the same order (the quantile indicators of an
    AR(1) decorrelate at least as fast, Vehtari et al. 2021)."""
    chains, n = 8, 5000
    x = ar1(phi, chains, n, 4)
    tau = (1 + phi) / (1 - phi)
    assert effective_sample_size(x) == pytest.approx(chains * n / tau, rel=0.15)
    assert chains * n / tau * 0.7 < tail_ess(x) < chains * n * 1.3


def test_standard_error_is_sqrt_var_over_ess_and_drift_uses_it():
    x = ar1(0.5, 4, 4000, 7)
    se = standard_error(x)
    assert se == pytest.approx(x.std(ddof=1) / math.sqrt(x.size / 3.0), rel=0.1)
    q = 1000
    diff, dse = drift(x)
    assert diff == pytest.approx(x[:, -q:].mean() - x[:, :q].mean(), rel=1e-12)
    assert dse == pytest.approx(math.hypot(standard_error(x[:, :q]), standard_error(x[:, -q:])))
    assert drift_z(x) == pytest.approx(diff / dse, rel=1e-12)
    assert abs(drift_z(x)) < 3
    assert drift_z(x + 0.5 * np.sqrt(4 / 3) * np.linspace(0, 1, 4000)) > 5
    assert drift_z(x - 0.0003 * np.arange(4000)) < -5


def test_degenerate_inputs():
    assert math.isnan(r_hat(np.ones((2, 3))))  # fewer than 4 draws
    assert math.isnan(r_hat(ar1(0.1, 1, 100, 0)))  # one chain: no R-hat
    assert math.isnan(effective_sample_size(np.array([[1.0, np.nan, 1.0, 1.0, 2.0]])))
    assert r_hat(np.ones((2, 10))) == 1.0  # identical constant chains agree
    assert r_hat(np.array([[1.0] * 10, [2.0] * 10])) == math.inf  # constant, apart
    assert effective_sample_size(np.ones((2, 10))) == tail_ess(np.ones((2, 10))) == 20.0
    assert standard_error(np.ones((2, 10))) == 0.0
    assert math.isnan(drift_z(np.ones((2, 10))))  # fewer than 16 draws
    assert drift_z(np.ones((2, 40))) == 0.0
    assert drift_z(np.array([[1.0] * 10 + [2.0] * 10] * 2)) == math.inf
    with pytest.raises(ValueError, match="shape"):
        r_hat(np.ones(5))


def test_non_finite_or_float32_traces():
    x = ar1(0.5, 2, 40, 9)
    x[1, 7] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(standard_error(x)) and math.isnan(r_hat(x)) and math.isnan(tail_ess(x))
        x[1, 7] = np.nan
        assert math.isnan(standard_error(x)) and math.isnan(drift_z(x))
    y = (1000.0 + 0.01 * ar1(0.5, 4, 400, 3)).astype(np.float32)
    assert r_hat(y) == pytest.approx(ref_rank_r_hat(y.astype(np.float64)), rel=1e-9)


def test_plateau_burn_in_finds_the_relaxation():
    """Exponential relaxation with time constant 100 plus noise: the plateau starts a few time
    constants in; a stationary series keeps (nearly) everything; a steady drift gets the
    largest cut; the configured minimum is respected."""
    rng = np.random.default_rng(0)
    t = np.arange(3000)
    noise = 0.3 * rng.standard_normal((4, 3000))
    relax = noise + 10.0 * np.exp(-t / 100.0)
    burn = plateau_burn_in(relax)
    assert 250 <= burn <= 900 and burn % 5 == 0
    assert plateau_burn_in(noise) <= 300
    assert plateau_burn_in(noise, minimum=123) == 123
    assert plateau_burn_in(noise + 0.01 * t) == 1500  # max_fraction 0.5
    assert plateau_burn_in(noise + 0.01 * t, minimum=2000) == 2000
    assert plateau_burn_in(relax[0]) == pytest.approx(burn, abs=200)  # one series works too
    assert plateau_burn_in(np.full((2, 50), np.nan), minimum=7) == 7


def ref_mser5(trace, minimum=0, max_fraction=0.5) -> int:
    """MSER-5 (White 1997) with a loop over truncation points d, as the docstring states it."""
    y = np.asarray(trace, dtype=np.float64)
    series = y.mean(axis=0) if y.ndim == 2 else y
    steps = len(series)
    k = steps // 5
    if not np.isfinite(series).all() or k < 4 or minimum // 5 >= k - 1:
        return min(minimum, steps)
    z = [float(series[5 * j : 5 * j + 5].mean()) for j in range(k)]
    d_min = minimum // 5
    d_max = min(max(d_min, int(k * max_fraction)), k - 2)
    best_d, best = None, math.inf
    for d in range(d_min, d_max + 1):
        rest = z[d:]
        mu = sum(rest) / len(rest)
        stat = sum((v - mu) ** 2 for v in rest) / len(rest) ** 2
        if stat < best:
            best_d, best = d, stat
    return max(minimum, 5 * best_d)


# ----------------------------------------------------------------------------- MSER-5


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("minimum, max_fraction", [(0, 0.5), (12, 0.5), (40, 0.3), (0, 0.8)])
def test_plateau_burn_in_matches_the_mser5_loop(seed, minimum, max_fraction):
    rng = np.random.default_rng(seed)
    t = np.arange(403)  # 80 batches and 3 steps left over
    trace = 2.0 * np.exp(-t / (30.0 + 20 * seed)) + 0.3 * rng.standard_normal((3, 403))
    expected = ref_mser5(trace, minimum, max_fraction)
    assert plateau_burn_in(trace, minimum, max_fraction) == expected
    assert plateau_burn_in(trace.mean(axis=0), minimum, max_fraction) == expected


@pytest.mark.parametrize("ndim", [1, 2])
def test_plateau_burn_in_of_a_float32_trace_is_computed_in_float64(ndim):
    """Offset 1000, relaxation 0.05, noise 0.01: in float32 the sums of squares lose the
    statistic (a different cut for every seed); in float64 the reference's answer."""
    rng = np.random.default_rng(4)
    t = np.arange(600)
    trace = 1000.0 + 0.05 * np.exp(-t / 50.0) + 0.01 * rng.standard_normal((4, 600))
    trace = trace.astype(np.float32)
    if ndim == 1:
        trace = trace[0]
    assert plateau_burn_in(trace) == ref_mser5(trace)


def test_plateau_burn_in_on_short_traces():
    # batch means 9, 1, 0, 1: cutting 1 batch leaves SSE 2/3 over 3 (0.074), 2 leave 1/2 over 2
    relax = np.array([9.0] * 5 + [1.0, 0.0, 2.0, 1.0, 1.0, 0.0, 1.0, -1.0, 0.0, 0.0]
                     + [2.0, 1.0, 0.0, 1.0, 1.0])  # fmt: skip
    assert ref_mser5(relax) == 5
    assert plateau_burn_in(relax) == 5
    assert plateau_burn_in(np.append(relax, [1.0, 2.0, 3.0])) == 5  # 23 steps, still k = 4
    assert plateau_burn_in(relax[:19]) == 0  # k = 3: too short, the minimum
    assert plateau_burn_in(relax[:19], minimum=7) == 7
    assert plateau_burn_in(relax[:19], minimum=30) == 19  # never more than the steps
    assert plateau_burn_in(relax, minimum=15) == 15  # minimum // 5 = k - 1: no candidate
    assert plateau_burn_in(relax, minimum=10) == 10  # minimum // 5 = k - 2: one candidate
    assert plateau_burn_in(relax, minimum=40) == 20
    assert plateau_burn_in(np.zeros(0)) == 0


def test_plateau_burn_in_never_leaves_fewer_than_two_batches():
    """A steady rise: MSER-5 prefers the shortest tail, but at least two batches stay even when
    max_fraction allows everything."""
    ramp = np.arange(60, dtype=np.float64)  # k = 12
    assert plateau_burn_in(ramp, max_fraction=1.0) == 50 == ref_mser5(ramp, 0, 1.0)
    assert plateau_burn_in(ramp) == 30


def test_plateau_burn_in_with_a_non_finite_step_outside_the_batches():
    """A NaN in the 3 steps past the last full batch still marks the trace as unusable."""
    relax = np.array([9.0] * 5 + [1.0, 0.0, 2.0, 1.0, 0.0] * 3 + [1.0, 2.0, np.nan])
    assert ref_mser5(relax[:-3]) > 0
    assert plateau_burn_in(relax) == 0
    assert plateau_burn_in(relax, minimum=4) == 4
    relax[-1] = np.inf
    assert plateau_burn_in(np.vstack([relax, relax]), minimum=3) == 3
