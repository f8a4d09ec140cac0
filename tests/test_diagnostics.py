import math

import numpy as np
import pytest

from grokking_llc.diagnostics import effective_sample_size, r_hat


def ar1(phi, chains, n, seed, drift=0.0):
    rng = np.random.default_rng(seed)
    x = np.zeros((chains, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + rng.standard_normal(chains)
    return x + drift * np.arange(n)


def test_r_hat_near_one_for_stationary_chains_and_large_for_drift():
    assert r_hat(ar1(0.5, 4, 2000, 0)) == pytest.approx(1.0, abs=0.01)
    assert r_hat(ar1(0.5, 4, 2000, 0, drift=0.01)) > 1.5
    shifted = ar1(0.5, 4, 2000, 1) + np.array([[0.0], [0.0], [0.0], [5.0]])
    assert r_hat(shifted) > 1.5  # one chain stuck elsewhere


def test_ess_of_ar1_matches_its_integrated_autocorrelation_time():
    # AR(1) with coefficient phi: tau = (1 + phi) / (1 - phi) = 3 for phi = 0.5
    chains, n = 8, 5000
    ess = effective_sample_size(ar1(0.5, chains, n, 2))
    assert ess == pytest.approx(chains * n / 3.0, rel=0.15)
    iid = effective_sample_size(np.random.default_rng(3).standard_normal((4, 4000)))
    assert iid == pytest.approx(16000, rel=0.15)


def test_degenerate_inputs():
    assert math.isnan(r_hat(np.ones((2, 3))))
    assert math.isnan(effective_sample_size(np.array([[1.0, np.nan, 1.0, 1.0, 2.0]])))
    assert r_hat(np.ones((2, 10))) == 1.0
    with pytest.raises(ValueError, match="shape"):
        r_hat(np.ones(5))
