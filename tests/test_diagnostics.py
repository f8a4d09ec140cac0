"""Convergence diagnostics (SPEC sections 4 and 10) against reference values computed here
independently: explicit loops for split-R-hat and the autocorrelation time, closed forms for
AR(1) processes."""

import math

import numpy as np
import pytest

from grokking_llc.diagnostics import (
    drift_z,
    effective_sample_size,
    plateau_burn_in,
    r_hat,
    r_hat_tail,
    standard_error,
)


def ar1(phi, chains, n, seed, drift=0.0):
    rng = np.random.default_rng(seed)
    x = np.zeros((chains, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + rng.standard_normal(chains)
    return x + drift * np.arange(n)


def split_r_hat_by_hand(x):
    """BDA3 11.4 written out with loops: halves, B, W, var+, sqrt(var+ / W)."""
    n = x.shape[1] // 2
    seqs = [list(row[:n]) for row in x] + [list(row[-n:]) for row in x]
    m = len(seqs)
    means = [sum(s) / n for s in seqs]
    grand = sum(means) / m
    b = n / (m - 1) * sum((mu - grand) ** 2 for mu in means)
    w = sum(sum((v - mu) ** 2 for v in s) / (n - 1) for s, mu in zip(seqs, means, strict=True)) / m
    return math.sqrt(((n - 1) / n * w + b / n) / w)


def ess_by_hand(x):
    """Geyer initial positive sequence on the chain-averaged autocorrelation, direct sums."""
    chains, n = x.shape
    rho = np.zeros(n)
    for row in x:
        c = row - row.mean()
        var = (c * c).sum() / n
        for k in range(n):
            rho[k] += ((c[: n - k] * c[k:]).sum() / n) / var / chains
    tau = -1.0
    for k in range(0, n - 1, 2):
        if rho[k] + rho[k + 1] <= 0:
            break
        tau += 2 * (rho[k] + rho[k + 1])
    return chains * n / tau


def test_r_hat_matches_the_formula_written_out():
    """A small hand-checkable case: (n-1)/n and the square root both matter at n = 4."""
    x = np.array([[1.0, 2.0, 0.5, 1.5, 3.0, 2.5, 2.0, 4.0],
                  [0.0, 1.0, 1.0, 0.5, 1.5, 2.0, 1.0, 2.5]])  # fmt: skip
    expected = split_r_hat_by_hand(x)
    assert r_hat(x) == pytest.approx(expected, rel=1e-12)
    # Mutations this pins: no square root, no (n-1)/n factor.
    n = 4
    halves = np.concatenate([x[:, :n], x[:, -n:]])
    w = halves.var(axis=1, ddof=1).mean()
    b = n * halves.mean(axis=1).var(ddof=1)
    assert abs(expected - (w + b / n) / w) > 0.05  # var+/W without the sqrt
    assert abs(expected - math.sqrt((w + b / n) / w)) > 0.05  # without (n-1)/n
    # odd length: the middle draw is dropped
    odd = np.hstack([x[:, :4], np.full((2, 1), 99.0), x[:, 4:]])
    assert r_hat(odd) == pytest.approx(expected, rel=1e-12)


def test_r_hat_near_one_for_stationary_chains_and_large_for_drift():
    assert r_hat(ar1(0.5, 4, 2000, 0)) == pytest.approx(1.0, abs=0.01)
    assert r_hat(ar1(0.5, 4, 2000, 0, drift=0.01)) > 1.5
    shifted = ar1(0.5, 4, 2000, 1) + np.array([[0.0], [0.0], [0.0], [5.0]])
    assert r_hat(shifted) > 1.5  # one chain stuck elsewhere


def test_tail_r_hat_is_r_hat_of_the_last_half():
    x = ar1(0.5, 4, 2001, 5)
    assert r_hat_tail(x) == r_hat(x[:, -1000:])
    # relaxes during the first half, then stationary: R-hat fails, the tail window passes
    relax = x + 20.0 * np.exp(-np.arange(2001) / 150.0)
    assert r_hat(relax) > 1.1 and r_hat_tail(relax) < 1.05


def test_ess_matches_direct_sums_with_chains_of_different_memory():
    """Chains with AR coefficients 0 and 0.8: the pooled autocorrelation averages them, so
    an ESS taken from one chain only (8x larger or ~0.5x) is far from this value."""
    x = np.vstack([ar1(0.0, 1, 400, 11), ar1(0.8, 1, 400, 12)])
    assert effective_sample_size(x) == pytest.approx(ess_by_hand(x), rel=1e-9)
    assert effective_sample_size(x[:1]) / 1 != pytest.approx(ess_by_hand(x), rel=0.2)


def test_ess_of_ar1_matches_its_integrated_autocorrelation_time():
    # AR(1) with coefficient phi: tau = (1 + phi) / (1 - phi) = 3 for phi = 0.5
    chains, n = 8, 5000
    ess = effective_sample_size(ar1(0.5, chains, n, 2))
    assert ess == pytest.approx(chains * n / 3.0, rel=0.15)
    iid = effective_sample_size(np.random.default_rng(3).standard_normal((4, 4000)))
    assert iid == pytest.approx(16000, rel=0.15)


def test_standard_error_and_drift_z():
    x = ar1(0.5, 4, 4000, 7)
    assert standard_error(x) == pytest.approx(
        math.sqrt(x.var(ddof=1) / effective_sample_size(x)), rel=1e-12
    )
    q = 1000
    se = math.hypot(standard_error(x[:, :q]), standard_error(x[:, -q:]))
    assert drift_z(x) == pytest.approx((x[:, -q:].mean() - x[:, :q].mean()) / se, rel=1e-12)
    assert abs(drift_z(x)) < 3
    # a slow rise of 0.5 standard deviations over the run: many SEs, positive
    assert drift_z(x + 0.5 * np.sqrt(4 / 3) * np.linspace(0, 1, 4000)) > 5
    assert drift_z(x - 0.0003 * np.arange(4000)) < -5


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


def test_degenerate_inputs():
    assert math.isnan(r_hat(np.ones((2, 3))))
    assert math.isnan(effective_sample_size(np.array([[1.0, np.nan, 1.0, 1.0, 2.0]])))
    assert r_hat(np.ones((2, 10))) == 1.0
    assert math.isnan(drift_z(np.ones((2, 10))))
    assert drift_z(np.ones((2, 40))) == 0.0
    assert plateau_burn_in(np.full((2, 50), np.nan), minimum=7) == 7
    with pytest.raises(ValueError, match="shape"):
        r_hat(np.ones(5))
