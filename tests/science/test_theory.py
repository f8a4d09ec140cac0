"""Tests of grokking_llc.science.theory: closed forms (SPEC §5) against independent numerical ranks.

Expected values come from hand computation (written out next to each assert) or from an
independent numerical computation (ranks of Jacobians built analytically or by torch.func).
Where a closed form and the numerical rank disagree, the disagreement is pinned here with the
observed value and the reason (see the docstring of ``jacobian_rank_llc``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import theory_checks as C
import torch
from theory_checks import (
    data_restricted_llc,
    jacobian_rank_llc,
    jacobian_rank_llc_single_output,
    ntk_llc,
    numerical_rank,
    quadratic_forms_jacobian,
    rank_gap,
)
from torch import nn
from torch.func import jacrev

from grokking_llc.science import theory as T
from grokking_llc.science.theory import (
    data_restricted_bound,
    effective_width,
    llc_feature_stage,
    llc_lazy_bounds,
    llc_quadratic,
    llc_single_output,
    training_pairs,
)


def _closed_form(d: int, q: int, K: int) -> float:
    """(1/2) min(K(d+q-1), q d(d+1)/2), written out independently of llc_quadratic."""
    return 0.5 * min(K * (d + q - 1), q * d * (d + 1) // 2)


def _k_max(d: int, q: int) -> int:
    """Two widths past both transitions (Thm 4.2 vs 4.1 at qD/(d+q-1); q = 1 rank at K = d)."""
    D = d * (d + 1) // 2
    return max(d, -(-q * D // (d + q - 1))) + 2


# --------------------------------------------------------------------------------------------
# effective width (eq. 5)
# --------------------------------------------------------------------------------------------
def _hand_example():
    # columns w_j: |w|^2 = 1, 4, 1e-4, 2 ; rows v_j: |v| = 1, 0.5, 1, 0
    W = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.01, 0.0]])
    V = np.array([[1.0, 0.0], [0.0, 0.5], [0.6, 0.8], [0.0, 0.0]])
    return W, V  # scores 1, 2, 1e-4, 0; max 2


# --------------------------------------------------------------------------------------------
# Q-level Jacobian rank vs Thm 4.1 / 4.2
# --------------------------------------------------------------------------------------------
# Disagreements between the closed form and the numerical rank on d = 3..6, q = 1..3,
# K = 1.._k_max(d, q), each with the observed value (see jacobian_rank_llc's docstring):
#   q = 1, 2 <= K < d: (K d - K(K-1)/2) / 2 (extra O(K) rotation symmetry of a single output);
#   q = 3, d even, K = 3d/2 - 1: (q D - 1) / 2 (a defective width at the transition).
PINNED_DISAGREEMENTS = {  # (d, q, K): observed value; one line per (d, q)
    (3, 1, 2): 2.5,
    (4, 1, 2): 3.5, (4, 1, 3): 4.5,
    (5, 1, 2): 4.5, (5, 1, 3): 6.0, (5, 1, 4): 7.0,
    (6, 1, 2): 5.5, (6, 1, 3): 7.5, (6, 1, 4): 9.0, (6, 1, 5): 10.0,
    (4, 3, 5): 14.5,
    (6, 3, 8): 31.0,
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# NTK / Fisher count (Thm 5.1)
# --------------------------------------------------------------------------------------------
class _TinyQuadratic(nn.Module):
    """Yhat = (x W)^2 V with W (d, K), V (K, q); float inputs or one-hot pairs."""

    def __init__(self, W: np.ndarray, V: np.ndarray, p: int | None = None):
        super().__init__()
        self.W = nn.Parameter(torch.tensor(W, dtype=torch.float32))
        self.V = nn.Parameter(torch.tensor(V, dtype=torch.float32))
        self.p = p

    def forward(self, x):
        h = self.W[x[:, 0]] + self.W[x[:, 1] + self.p] if self.p else x @ self.W
        return (h * h) @ self.V


def _one_hot(pairs: np.ndarray, p: int) -> np.ndarray:
    X = np.zeros((len(pairs), 2 * p))
    X[np.arange(len(pairs)), pairs[:, 0]] = 1
    X[np.arange(len(pairs)), p + pairs[:, 1]] = 1
    return X


def _blocks_and_direct(W, V, pairs, p, rtol=T.RANK_RTOL):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero, no deprecated numpy call
        r, info = C._data_restricted_rank_blocks(W, V, pairs, p, rtol)
    X = _one_hot(pairs, p)
    return r, info, numerical_rank(C.data_restricted_jacobian(W, V, X), rtol)


def _m_singular_values(W, V, pairs, p, r_F):
    """Reference for the blocks' M (independent construction): an orthonormal basis B of
    range(P) minus col(P F) from an SVD, M[(k, a), (c, j)] = V[j, k] (B^T G_j)[a, c]."""
    n = len(pairs)
    X = _one_hot(pairs, p)
    H = X @ W
    F = H * H
    PF = F - F.mean(axis=0)
    A = np.column_stack([np.ones(n), PF])
    U, s, _ = np.linalg.svd(A)
    B = U[:, 1 + r_F :]  # the complement of span(1, P F)
    q, K = V.shape[1], W.shape[1]
    M = np.zeros((q * B.shape[1], X.shape[1] * K))
    for j in range(K):
        C = B.T @ (2.0 * H[:, j : j + 1] * X)  # (r_c, d)
        for k in range(q):
            M[k * B.shape[1] : (k + 1) * B.shape[1], j::K] = V[j, k] * C
    return np.linalg.svd(M, compute_uv=False)


def _ckpt(Ws, Vs, steps):
    return {
        "steps": torch.tensor(steps),
        "params": {"W": torch.tensor(np.stack(Ws)), "V": torch.tensor(np.stack(Vs))},
    }


# --------------------------------------------------------------------------------------------
# closed forms on hand computations
# --------------------------------------------------------------------------------------------
def test_llc_quadratic_hand_values():
    # baseline p = 53, K = 1024: d + p - 1 = 158, K * 158 = 161792 < p D = 53 * 5671 = 300563
    assert llc_quadratic(53, 1024) == 80896.0
    # p = 2, K = 100: D = 4*5/2 = 10, p D = 20 < 100 * 5 -> 10
    assert llc_quadratic(2, 100) == 10.0
    # p = 3, K = 2: 2 * (6 + 3 - 1) = 16 < 3 * 21 = 63 -> 8
    assert llc_quadratic(3, 2) == 8.0
    # explicit d: d = 4, p = 3, K = 5: min(5 * 6, 3 * 10) = 30 -> 15
    assert llc_quadratic(3, 5, d=4) == 15.0
    # the over-parametrised value of Thm 4.1 is p^2 (2p + 1) / 2
    for p in (2, 3, 5, 7):
        assert llc_quadratic(p, 10**6) == p * p * (2 * p + 1) / 2


def test_llc_single_output_hand_values():
    assert llc_single_output(3, 3) == 5.0  # (4 * 5) / 4, G.1
    assert llc_single_output(3, 7) == 5.0
    assert llc_single_output(4, 2) == 5.0  # (2*4 - 1 + 2 + 1) / 2, G.2
    assert llc_single_output(5, 1) == 3.5  # (5 - 0 + 1 + 1) / 2
    # the two branches meet at K = d: (d^2 - d(d-1)/2 + d + 1)/2 = (d+1)(d+2)/4
    for d in range(2, 9):
        g2_at_d = (d * d - d * (d - 1) / 2 + d + 1) / 2
        assert g2_at_d == (d + 1) * (d + 2) / 4 == llc_single_output(d, d)


def test_llc_feature_stage_hand_values():
    assert llc_feature_stage(53, 10) == 790.0  # 10 * 158 / 2
    assert llc_feature_stage(5, 3) == 21.0  # 3 * 14 / 2
    assert llc_feature_stage(7, 0) == 0.0
    # Thm 5.5 is Thm 4.2's count for the active subnetwork
    assert llc_feature_stage(11, 4) == llc_quadratic(11, 4)


def test_llc_lazy_bounds_hand_values():
    # K = 1024 < m = p^2 = 2809: (53/2)(1023), (53/2)(1024)
    assert llc_lazy_bounds(53, 1024) == (27109.5, 27136.0)
    # K = 20 > m = 9: (3/2) * 8, (3/2) * 9
    assert llc_lazy_bounds(3, 20) == (12.0, 13.5)
    assert llc_lazy_bounds(3, 20, m=5) == (6.0, 7.5)
    assert llc_lazy_bounds(53, 1024, m=1124) == (27109.5, 27136.0)


@pytest.mark.parametrize("p", [3, 5])
def test_lazy_feature_dimension_is_p_squared_on_the_grid(p):
    """Cor 5.3's m: the span of the features (X w)^2 over the full grid has dimension p^2
    (< the paper's bound p(2p-1)); on a split of n pairs it is n. Checked by a rank."""
    rng = np.random.default_rng(3)
    K = 3 * p * p
    W = rng.standard_normal((2 * p, K))
    grid = training_pairs(p)
    F = (W[grid[:, 0]] + W[p + grid[:, 1]]) ** 2
    m = numerical_rank(F)
    assert m == p * p < p * (2 * p - 1)
    assert llc_lazy_bounds(p, K) == llc_lazy_bounds(p, K, m=m)
    split = training_pairs(p, n=p * p // 2, seed=1)
    Fs = (W[split[:, 0]] + W[p + split[:, 1]]) ** 2
    assert numerical_rank(Fs) == split.shape[0]


@pytest.mark.parametrize(
    "call",
    [
        lambda: llc_quadratic(0, 3),
        lambda: llc_quadratic(2.5, 3),
        lambda: llc_quadratic(3, True),
        lambda: llc_quadratic(3, 4, d=0),
        lambda: llc_single_output(3, 0),
        lambda: llc_lazy_bounds(3, 4, m=0),
        lambda: llc_feature_stage(3, -1),
        lambda: jacobian_rank_llc(0, 1, 1),
        lambda: effective_width(np.ones((3, 4)), np.ones((5, 2))),
        lambda: effective_width(np.ones((3, 4)), np.ones((4, 2)), rel_eps=-0.1),
        lambda: effective_width(np.ones(3), np.ones((3, 2))),
        lambda: data_restricted_llc(5, 3, train_frac=0.4, n=10),
        lambda: data_restricted_llc(5, 3, n=26),
        lambda: data_restricted_llc(5, 3, method="fast"),
        lambda: numerical_rank(np.eye(3), rtol=0.0),
        lambda: data_restricted_bound(5, 3, n=1),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_effective_width_counts_hand_example():
    W, V = _hand_example()
    assert effective_width(W, V) == 2  # threshold 2e-3: units 0, 1
    assert effective_width(W, V, rel_eps=1e-5) == 3  # threshold 2e-5: unit 2 too
    assert effective_width(W, V, rel_eps=0.0) == 3  # unit 3 has score 0
    assert effective_width(W, V, rel_eps=0.6) == 1  # threshold 1.2: unit 1 only
    assert effective_width(np.zeros((3, 4)), np.zeros((4, 2))) == 0
    Wt, Vt = torch.tensor(W, dtype=torch.float32), torch.tensor(V, dtype=torch.float32)
    assert effective_width(Wt, Vt) == 2
    assert effective_width(Wt.requires_grad_(), Vt) == 2


def test_effective_width_invariant_under_neuron_rescaling():
    rng = np.random.default_rng(7)
    d, K, p = 6, 40, 3
    # unit magnitudes spread over 8 decades so that many thresholds cut between units
    W = rng.standard_normal((d, K)) * 10.0 ** rng.uniform(-4, 0, K)
    V = rng.standard_normal((K, p)) * 10.0 ** rng.uniform(-4, 0, K)[:, None]
    a = 10.0 ** rng.uniform(-3, 3, K) * rng.choice([-1.0, 1.0], K)  # signs too
    W2, V2 = W * a, V / (a**2)[:, None]
    counts = []
    for eps in (1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 0.1, 0.5):
        c = effective_width(W, V, rel_eps=eps)
        assert effective_width(W2, V2, rel_eps=eps) == c
        assert effective_width(torch.tensor(W2), torch.tensor(V2), rel_eps=eps) == c
        counts.append(c)
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    # a different (non-symmetric) rescaling does change the count
    assert effective_width(W * a, V, rel_eps=1e-3) != effective_width(W, V, rel_eps=1e-3)


def test_quadratic_forms_jacobian_matches_autograd():
    rng = np.random.default_rng(11)
    d, K, q = 4, 3, 2
    W, V = rng.standard_normal((d, K)), rng.standard_normal((K, q))
    iu = torch.triu_indices(d, d)

    def forms(Wt, Vt):
        Q = torch.einsum("aj,bj,jk->kab", Wt, Wt, Vt)
        return Q[:, iu[0], iu[1]].reshape(-1)

    jW, jV = jacrev(forms, argnums=(0, 1))(torch.tensor(W), torch.tensor(V))
    J_auto = torch.cat([jW.reshape(q * 10, -1), jV.reshape(q * 10, -1)], dim=1).numpy()
    np.testing.assert_allclose(quadratic_forms_jacobian(W, V), J_auto, rtol=1e-12, atol=1e-12)


def test_jacobian_rank_vs_closed_form_grid():
    observed = {}
    for d in (3, 4, 5, 6):
        for q in (1, 2, 3):
            for K in range(1, _k_max(d, q) + 1):
                num = jacobian_rank_llc(d, q, K, seed=0)
                assert num == _closed_form(d, q, K) or (d, q, K) in PINNED_DISAGREEMENTS
                if num != _closed_form(d, q, K):
                    observed[(d, q, K)] = num
                assert llc_quadratic(q, K, d=d) == _closed_form(d, q, K)
    # exactly the pinned cases disagree, with exactly the pinned values
    assert observed == PINNED_DISAGREEMENTS
    # and the pinned values are the hand formulas for the two mechanisms
    for (d, q, K), val in PINNED_DISAGREEMENTS.items():
        D = d * (d + 1) // 2
        if q == 1:
            assert val == (K * d - K * (K - 1) / 2) / 2
        else:
            assert d % 2 == 0 and K == 3 * d // 2 - 1 and val == (q * D - 1) / 2


def test_jacobian_rank_sits_on_a_gap():
    """The rank does not depend on the tolerance: a clean gap around the cut."""
    for d, q, K in [(4, 3, 5), (6, 3, 8), (6, 1, 4), (5, 2, 6), (6, 3, 3)]:
        for seed in (0, 1, 2):
            rng = np.random.default_rng(seed)
            W, V = rng.standard_normal((d, K)), rng.standard_normal((K, q))
            r, above, below = rank_gap(quadratic_forms_jacobian(W, V))
            assert above > 1e-6 and below < 1e-13
            assert r / 2 == jacobian_rank_llc(d, q, K, seed=seed)


def test_q3_defect_at_larger_even_d_and_modular_shapes():
    for d in (8, 10):  # q = 3, K = 3d/2 - 1: one short of the cap q D
        D = d * (d + 1) // 2
        K = 3 * d // 2 - 1
        assert jacobian_rank_llc(d, 3, K) == (3 * D - 1) / 2 == _closed_form(d, 3, K) - 0.5
        assert jacobian_rank_llc(d, 3, K + 1) == _closed_form(d, 3, K + 1)
        assert jacobian_rank_llc(d - 1, 3, K) == _closed_form(d - 1, 3, K)  # odd d: fine
    # modular shape (d, q) = (2p, p), p = 5: agreement around the transition (K* = 19.6)
    for K in (18, 19, 20, 21):
        assert jacobian_rank_llc(10, 5, K) == llc_quadratic(5, K)


def test_single_output_with_biases_vs_numerical_rank():
    # G.1 / G.2 against the rank of the model's Jacobian (torch.func) at random inputs:
    # no disagreement was found on d = 1..7, K = 1..d+2; here d = 2..5.
    for d in range(2, 6):
        for K in range(1, d + 3):
            assert jacobian_rank_llc_single_output(d, K, seed=0) == llc_single_output(d, K)
    # and the count reflects the model: 1 unit in d = 3 has d + 3 = 6 parameters, one
    # rescaling symmetry -> 5 identifiable directions
    assert jacobian_rank_llc_single_output(3, 1, seed=4) == 2.5


def test_ntk_llc_linear_model_is_half_the_parameter_count():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)  # 3*2 + 2 = 8 parameters
    x = torch.randn(10, 3)  # [x, 1] has full column rank 4 -> J has rank 2 * 4 = 8
    assert ntk_llc(model, x) == 4.0
    model2 = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    assert ntk_llc(model2, torch.randn(2, 4)) <= 1.0  # at most #outputs / 2 = 2 / 2
    # a rank-deficient design: 2 distinct inputs -> [x, 1] rank 2 -> rank 2 * 2
    x_low = torch.randn(2, 3).repeat(5, 1)
    assert ntk_llc(model, x_low) == 2.0
    assert model.weight.dtype == torch.float32  # the model itself is untouched


def test_ntk_llc_quadratic_net_vs_q_level_count():
    rng = np.random.default_rng(5)
    for d, K, q in [(4, 2, 2), (4, 6, 2), (5, 3, 1)]:
        W, V = rng.standard_normal((d, K)), rng.standard_normal((K, q))
        model = _TinyQuadratic(W, V)
        D = d * (d + 1) // 2
        x = torch.tensor(rng.standard_normal((D + 4, d)))
        q_count = numerical_rank(quadratic_forms_jacobian(W, V)) / 2
        ntk = ntk_llc(model, x)
        # the outputs only see the model through Q_k: never above the Q-level count, and
        # equal to it when the inputs determine the quadratic forms (> D generic points)
        assert ntk == q_count
        assert ntk_llc(model, x[: d - 1]) < q_count
        assert ntk_llc(model, x[: d - 1]) <= q * (d - 1) / 2


def test_ntk_llc_centred_equals_data_restricted_count():
    """torch.func on a one-hot pair model, centred, vs the analytic data-restricted rank."""
    p, K, n = 5, 3, 10
    pairs = training_pairs(p, n=n, seed=0)
    rng = np.random.default_rng(2)
    model = _TinyQuadratic(rng.standard_normal((2 * p, K)), rng.standard_normal((K, p)), p=p)
    x = torch.tensor(pairs)
    ntk_c = ntk_llc(model, x, centred=True)
    assert ntk_c == data_restricted_llc(p, K, n=n, seed=0)
    assert ntk_llc(model, x) > ntk_c  # without centring the constant is seen too


# --------------------------------------------------------------------------------------------
# data-restricted count
# --------------------------------------------------------------------------------------------
def test_training_pairs_match_make_split():
    from grokking_llc.core import data

    for p, tf, seed in [(5, 0.4, 0), (7, 0.4, 3), (11, 0.25, 1)]:
        df = data.make_split(p, tf, seed)
        expect = df[df["split"] == "train"][["a", "b"]].to_numpy(dtype=np.int64)
        np.testing.assert_array_equal(training_pairs(p, train_frac=tf, seed=seed), expect)
        # the n-based draw is the same draw
        np.testing.assert_array_equal(training_pairs(p, n=len(expect), seed=seed), expect)
    assert training_pairs(3).shape == (9, 2)


@pytest.mark.parametrize(
    "p, train_frac, Ks",
    [
        (5, None, (1, 4, 8, 9, 10, 12)),  # full grid: transition at 5 * 24 / 13 = 9.2
        (5, 0.4, (1, 2, 3, 4, 5, 7)),  # n = 10: small split, rank-K term binds
        (7, None, (2, 17, 18, 20)),  # transition at 7 * 48 / 19 = 17.7
        (7, 0.4, (1, 6, 7, 9)),  # n = 20: transition at 7 * 19 / 19 = 7
        (11, 0.4, (4, 11, 16)),  # n = 48: transition at 11 * 47 / 31 = 16.7
    ],
)
def test_data_restricted_count_vs_paper(p, train_frac, Ks):
    pairs = training_pairs(p, train_frac=train_frac)
    n = len(pairs)
    connected_full_rank = numerical_rank(_one_hot(pairs, p)) == 2 * p - 1
    min_deg = min(
        np.bincount(pairs[:, 0], minlength=p).min(), np.bincount(pairs[:, 1], minlength=p).min()
    )
    for K in Ks:
        val, info = data_restricted_llc(p, K, train_frac=train_frac, return_info=True)
        assert info["sv_above"] > 1e-6 and info["sv_below"] < 1e-13  # clean rank
        # the structural bound (derived by counting) is attained ...
        assert val == data_restricted_bound(p, K, train_frac=train_frac)
        # ... and the paper's Q-level count over-counts: by exactly K/2 (the shift symmetry
        # w_j -> w_j + t(1; -1)) while no data term binds, by more after saturation
        paper = llc_quadratic(p, K)
        assert val < paper
        r = min(K, n - 1, p)
        per_unit_binds = K * (3 * p - 2) <= min(p * (n - 1), r * (n - 1 + p - r))
        if connected_full_rank and per_unit_binds and K <= p * min_deg:
            assert val == paper - K / 2 == K * (3 * p - 2) / 2
    # saturation: past the transition the count is p (n - 1) / 2, whatever K
    assert data_restricted_llc(p, max(Ks) + 3, train_frac=train_frac) == p * (n - 1) / 2


def test_data_restricted_pinned_degree_one_deficit():
    """p = 11, train_frac = 0.4, seed 0 has one operand value in a single pair: past K = p each
    extra unit loses one direction (K - p in all); seed 1 has none and follows K (3p-2)/2."""
    p = 11
    pairs0 = training_pairs(p, train_frac=0.4, seed=0)
    deg0 = np.concatenate(
        [np.bincount(pairs0[:, 0], minlength=p), np.bincount(pairs0[:, 1], minlength=p)]
    )
    assert (deg0 == 1).sum() == 1
    for K, observed in [(12, 185.5), (16, 245.5)]:
        assert data_restricted_llc(p, K, train_frac=0.4, seed=0) == observed
        assert observed == K * (3 * p - 2) / 2 - max(0, K - p) / 2
        assert data_restricted_bound(p, K, train_frac=0.4, seed=0) == observed
    assert data_restricted_llc(p, 16, train_frac=0.4, seed=1) == 16 * 31 / 2 == 248.0


def test_data_restricted_bound_on_hand_built_graphs():
    rng = np.random.default_rng(1)
    # p = 5: a 4 x 4 block of pairs plus the isolated pair (0, 0)
    p = 5
    pairs = np.array([(0, 0)] + [(a, b) for a in range(1, 5) for b in range(1, 5)])
    X = _one_hot(pairs, p)
    for K, hand in [(3, 36), (6, 71), (8, 80)]:
        # hand: V part K(p-1) + block (8 nodes, degree 4: 8 min(K, 20) - K) + isolated
        # pair min(K, p), capped at p (n - 1) = 80
        assert min(K * (p - 1) + 8 * min(K, 20) - K + min(K, p), 80) == hand
        W, V = rng.standard_normal((2 * p, K)), rng.standard_normal((K, p))
        assert numerical_rank(C.data_restricted_jacobian(W, V, X)) == hand
        assert 2 * T.data_restricted_bound_pairs(p, K, pairs) == hand
    # p = 7: full grid less (0, b >= 1) and (1, b >= 2): a = 0 has degree 1, a = 1 degree 2
    p = 7
    pairs = np.array(
        [
            (a, b)
            for a in range(p)
            for b in range(p)
            if not ((a == 0 and b >= 1) or (a == 1 and b >= 2))
        ]
    )
    X = _one_hot(pairs, p)
    for K, hand in [(7, 133), (10, 187), (15, 259)]:
        # hand: K(3p-2) - (K-p)_+ for the degree-1 node, capped at p (n - 1) = 7 * 37 = 259
        assert min(K * 19 - max(0, K - 7), 259) == hand
        W, V = rng.standard_normal((2 * p, K)), rng.standard_normal((K, p))
        assert numerical_rank(C.data_restricted_jacobian(W, V, X)) == hand
        assert 2 * T.data_restricted_bound_pairs(p, K, pairs) == hand


def test_paper_baseline_bound():
    """p = 53, K = 1024, n = 1124: the bound is p (n - 1) / 2 = 29759.5 (the exact rank, computed
    once with method="blocks" in ~80 s, is the same; too slow for the test suite)."""
    assert len(training_pairs(53, train_frac=0.4, seed=0)) == 1124
    assert data_restricted_bound(53, 1024, train_frac=0.4, seed=0) == 53 * 1123 / 2 == 29759.5
    assert llc_quadratic(53, 1024) == 80896.0
    # saturation width: K (3p - 2) >= p (n - 1) from K = 380 on
    assert data_restricted_bound(53, 379, train_frac=0.4) == 379 * 157 / 2
    assert data_restricted_bound(53, 380, train_frac=0.4) == 29759.5


def test_data_restricted_full_grid_cap_below_thm_4_1():
    p = 3  # full grid n = 9: p (p^2 - 1) / 2 = 12 < p^2 (2p + 1) / 2 = 31.5
    assert data_restricted_llc(p, 30) == 12.0
    assert llc_quadratic(p, 30) == 31.5


def test_data_restricted_blocks_method_matches_direct():
    for p, tf, K in [(5, 0.4, 2), (5, None, 9), (7, 0.4, 6), (7, 0.7, 3)]:
        direct = data_restricted_llc(p, K, train_frac=tf, method="direct")
        blocks, info = data_restricted_llc(p, K, train_frac=tf, method="blocks", return_info=True)
        assert blocks == direct
        assert info["rank_PF"] == min(K, info["n"] - 1)


def test_data_restricted_jacobian_matches_autograd():
    p, K = 3, 2
    pairs = training_pairs(p, n=6, seed=4)
    X = np.zeros((6, 2 * p))
    X[np.arange(6), pairs[:, 0]] = 1
    X[np.arange(6), p + pairs[:, 1]] = 1
    rng = np.random.default_rng(0)
    W, V = rng.standard_normal((2 * p, K)), rng.standard_normal((K, p))
    Xt = torch.tensor(X)

    def centred(Wt, Vt):
        Y = ((Xt @ Wt) ** 2) @ Vt
        return (Y - Y.mean(0, keepdim=True)).T.reshape(-1)  # output k outer, sample inner

    jW, jV = jacrev(centred, argnums=(0, 1))(torch.tensor(W), torch.tensor(V))
    J_auto = torch.cat([jW.reshape(6 * p, -1), jV.reshape(6 * p, -1)], dim=1).numpy()
    J = C.data_restricted_jacobian(W, V, X)
    np.testing.assert_allclose(J, J_auto, rtol=1e-12, atol=1e-12)


def test_theory_table_tracks_effective_width():
    """theory_table: K_eff per checkpoint and the closed forms evaluated at it."""
    import torch

    from grokking_llc.science.theory import theory_table

    p, K = 5, 6
    g = torch.Generator().manual_seed(0)
    W = torch.randn(2 * p, K, generator=g)
    V = torch.randn(K, p, generator=g)
    V_dead = V.clone()
    V_dead[2] = 0.0  # unit 2 switched off
    ckpts = {
        "steps": torch.tensor([0, 100]),
        "params": {"W": torch.stack([W, W]), "V": torch.stack([V, V_dead])},
    }
    df = theory_table(ckpts, p, K, train_frac=0.6, data_seed=0)
    assert df["step"].tolist() == [0, 100]
    assert df["K_eff"].tolist() == [K, K - 1]
    assert df["llc_feature_stage"].tolist() == [K * (3 * p - 1) / 2, (K - 1) * (3 * p - 1) / 2]
    assert (df["llc_closed_form"] == min(K * (3 * p - 1), p * 2 * p * (2 * p + 1) / 2) / 2).all()
    n = round(0.6 * p * p)
    assert (df["lazy_high"] == p / 2 * min(K, n)).all()


# --------------------------------------------------------------------------------------------
# mutation-proofing (issue 15): each test below fails for a small deliberate bug in theory.py
# --------------------------------------------------------------------------------------------
PAIRS = np.array([[0, 0], [0, 1]])  # two training pairs at p = 2
NAN, INF, ONES = np.full((2, 2), np.nan), np.full((2, 2), np.inf), np.ones((2, 2))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: llc_quadratic(0, 3), "p must be an integer >= 1, got 0"),
        (lambda: llc_quadratic(2.5, 3), "p must be an integer >= 1, got 2.5"),
        (lambda: llc_quadratic(3, 0), "K must be an integer >= 1, got 0"),
        (lambda: llc_quadratic(3, 4, d=0), "d must be an integer >= 1, got 0"),
        (lambda: llc_single_output(0, 3), "d must be an integer >= 1, got 0"),
        (lambda: llc_single_output(3, 0), "K must be an integer >= 1, got 0"),
        (lambda: llc_lazy_bounds(0, 3), "p must be an integer >= 1, got 0"),
        (lambda: llc_feature_stage(0, 1), "p must be an integer >= 1, got 0"),
        (lambda: jacobian_rank_llc(0, 1, 1), "d must be an integer >= 1, got 0"),
        (lambda: jacobian_rank_llc(1, 0, 1), "q must be an integer >= 1, got 0"),
        (lambda: jacobian_rank_llc_single_output(0, 1), "d must be an integer >= 1, got 0"),
        (lambda: jacobian_rank_llc_single_output(1, 0), "K must be an integer >= 1, got 0"),
        (lambda: training_pairs(1), "p must be an integer >= 2, got 1"),
        (lambda: training_pairs(3, train_frac=0.0), r"train_frac must lie in (0, 1], got 0.0"),
        (lambda: training_pairs(3, n=10), "n=10 exceeds the p^2=9 available pairs"),
        (lambda: data_restricted_llc(1, 1), "p must be an integer >= 2, got 1"),
        (lambda: data_restricted_llc(2, 0), "K must be an integer >= 1, got 0"),
        (
            lambda: data_restricted_llc(3, 1, method="fast"),
            "method must be 'auto', 'direct' or 'blocks', got 'fast'",
        ),
        (lambda: T.data_restricted_bound_pairs(1, 1, PAIRS), "p must be an integer >= 2, got 1"),
        (lambda: T.data_restricted_bound_pairs(2, 0, PAIRS), "K must be an integer >= 1, got 0"),
        (lambda: T.data_restricted_bound_pairs(2, 1, PAIRS[:1]), "need at least 2 training pairs"),
        (lambda: effective_width(NAN, ONES), "W contains NaN or inf"),
        (lambda: effective_width(ONES, INF), "V contains NaN or inf"),
        (
            lambda: effective_width(np.ones((3, 4)), np.ones((5, 2))),
            r"W must have shape (d, K) and V shape (K, p): got W (3, 4), V (5, 2)",
        ),
        (lambda: quadratic_forms_jacobian(NAN, ONES), "W contains NaN or inf"),
        (lambda: quadratic_forms_jacobian(ONES, NAN), "V contains NaN or inf"),
        (lambda: ntk_llc(nn.Identity(), torch.ones(3, 2)), "model has no trainable parameters"),
        (
            lambda: ntk_llc(nn.Linear(2, 1), torch.ones(1, 2), centred=True),
            "centred=True needs outputs with a sample dimension of size >= 2",
        ),
    ],
)
def test_error_messages_name_the_argument(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


@pytest.mark.parametrize(("w_shape", "v_shape"), [((3, 4), (5, 2)), ((3,), (3, 2)), ((3, 4), (4,))])
def test_quadratic_forms_jacobian_names_both_shapes_that_do_not_fit(w_shape, v_shape):
    with pytest.raises(ValueError) as err:
        quadratic_forms_jacobian(np.ones(w_shape), np.ones(v_shape))
    assert str(err.value) == f"need W (d, K) and V (K, q), got {w_shape} and {v_shape}"


def test_smallest_allowed_arguments():
    # p = 2 is allowed wherever p >= 2 is asked for; n = p^2 draws the whole grid
    np.testing.assert_array_equal(training_pairs(2), [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(training_pairs(3, n=9, seed=5), training_pairs(3))
    assert training_pairs(3, train_frac=1.0).shape == (9, 2)
    assert training_pairs(5, train_frac=0.4).dtype == np.int64
    # two pairs (0, 0), (1, 1) at p = 2, K = 1: two single-pair components ->
    # R_W = K (p - 1) + 2 min(K, p) = 3; r = min(K, n - 1, p) = 1: min(3, p (n-1) = 2, 1 * 2) = 2
    assert T.data_restricted_bound_pairs(2, 1, np.array([[0, 0], [1, 1]])) == 1.0


def test_rank_helpers_on_hand_matrices():
    # singular values: float64, descending, empty for an empty matrix
    s = C.singular_values(np.diag(np.array([1.0, 3.0], dtype=np.float32)))
    assert s.dtype == np.float64 and s.tolist() == [3.0, 1.0]
    assert C.singular_values(np.zeros((0, 3))).shape == (0,)
    # empty and zero matrices have rank 0
    assert numerical_rank(np.zeros((0, 3))) == 0 and numerical_rank(np.zeros((3, 3))) == 0
    assert rank_gap(np.zeros((0, 3))) == (0, 0.0, 0.0) == rank_gap(np.zeros((2, 2)))
    # the cut is relative to the largest singular value: s = (1e6, 1e-6) -> 1e-6 < 1e-9 * 1e6
    assert numerical_rank(np.diag([1e6, 1e-6])) == 1
    # rank 1 of 2: s = (2, 0) -> (1, 2/2, 0/2)
    assert rank_gap(np.diag([2.0, 0.0])) == (1, 1.0, 0.0)
    # the cut is strict: s = (2, 1) at rtol 0.5 -> 1 is not > 0.5 * 2
    assert rank_gap(np.diag([2.0, 1.0]), rtol=0.5) == (1, 1.0, 0.5)
    assert numerical_rank(np.diag([2.0, 1.0]), rtol=0.5) == 1


def test_effective_width_of_no_units_is_zero():
    assert effective_width(np.zeros((3, 0)), np.zeros((0, 2))) == 0


def test_single_output_rank_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    assert jacobian_rank_llc_single_output(3, 2, seed=1) == llc_single_output(3, 2)
    assert torch.equal(torch.get_rng_state(), state)  # every draw from its own generator


def test_ntk_llc_centred_with_one_output_per_sample():
    # f(x) = w . x + b, outputs of shape (n,): centring removes b, so J has rank
    # rank of the centred design = 3 for n = 6 generic points -> 3 / 2
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0))
    x = torch.randn(6, 3, generator=g)
    assert ntk_llc(model, x, centred=True) == 1.5
    assert ntk_llc(model, x) == 2.0  # uncentred: w and b, 4 directions
    # two samples: centred outputs (y1 - y2)/2 (1, -1): rank 1
    assert ntk_llc(model, x[:2], centred=True) == 0.5


def test_blocks_equal_direct_at_special_points():
    """The block identity is exact at every point, not only at generic ones: checked where
    the rank pieces are degenerate (the direct SVD of the dense Jacobian is the reference)."""
    rng = np.random.default_rng(7)
    p = 3
    pairs = training_pairs(p)
    K = 2
    # W[p + b] = -W[b]: H vanishes on the diagonal pairs a = b (the sign of the b-rows matters)
    W = rng.standard_normal((2 * p, K))
    W[p:] = -W[:p]
    V = rng.standard_normal((K, p))
    r, _, direct = _blocks_and_direct(W, V, pairs, p)
    assert r == direct
    # b-rows that differ from one another and from the a-rows (a wrong b-row is visible)
    W = rng.standard_normal((2 * p, K))
    W[p:] = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    r, _, direct = _blocks_and_direct(W, V, pairs, p)
    assert r == direct
    # F constant over the samples (every a-row equal, b-rows zero): P F = 0, rank_PF = 0
    W = np.zeros((2 * p, K))
    W[:p] = [1.0, 2.0]  # F = (1, 4) in every row, exactly: P F = 0 without rounding
    r, info, direct = _blocks_and_direct(W, V, pairs, p)
    assert info["rank_PF"] == 0.0 and r == direct > 0
    # one unit 1e-5 the size of the other: its P F column (1e-10) is below the cut, its W
    # directions (1e-5) are above it in the dense SVD and must be kept by the Gram too
    W = rng.standard_normal((2 * p, K))
    W[:, 1] *= 1e-5
    r, info, direct = _blocks_and_direct(W, V, pairs, p)
    assert info["rank_PF"] == 1.0 and r == direct


def test_blocks_with_one_complement_direction():
    # n = 3 pairs, K = 1, q = 1: rank(P F) = 1, so r_c = n - 1 - 1 = 1 and M is 1 x d:
    # rank 1, its one singular value is the largest (sv_above = 1), none below
    p = 3
    pairs = np.array([[0, 0], [1, 2], [2, 1]])
    rng = np.random.default_rng(3)
    W, V = rng.standard_normal((2 * p, 1)), rng.standard_normal((1, 1))
    r, info, direct = _blocks_and_direct(W, V, pairs, p)
    assert info["r_c"] == 1.0 and info["gram_size"] == 1.0
    assert r == direct == 2 and info["sv_above"] == pytest.approx(1.0) and info["sv_below"] == 0.0


@pytest.mark.parametrize(("p", "n", "K"), [(5, 12, 3), (5, 20, 6), (7, 20, 4)])
def test_blocks_info_against_an_explicit_m(p, n, K):
    pairs = training_pairs(p, n=n, seed=2)
    rng = np.random.default_rng(p + n + K)
    W, V = rng.standard_normal((2 * p, K)), rng.standard_normal((K, p))
    r, info, direct = _blocks_and_direct(W, V, pairs, p)
    r_F = int(info["rank_PF"])
    s = _m_singular_values(W, V, pairs, p, r_F)
    r_M = int(np.sum(s > 1e-9 * s[0]))
    assert r == direct == p * r_F + r_M
    assert info["gram_size"] == p * (n - 1 - r_F) == info["r_c"] * p
    assert info["sv_above"] == pytest.approx(s[r_M - 1] / s[0], rel=1e-6)
    if r_M < info["gram_size"]:
        assert 0.0 <= info["sv_below"] < 1e-6  # rounding level of the Gram (sqrt(size * eps))
    else:
        assert info["sv_below"] == 0.0


def test_data_restricted_llc_point_method_and_info():
    # the point is W, V ~ N(0, 1) drawn in that order from default_rng(seed + 1): the dense
    # SVD at that point gives the reported singular values either side of the cut
    p, K, n, seed = 5, 3, 12, 4
    val, info = data_restricted_llc(p, K, n=n, seed=seed, method="direct", return_info=True)
    rng = np.random.default_rng(seed + 1)
    W, V = rng.standard_normal((2 * p, K)), rng.standard_normal((K, p))
    pairs = training_pairs(p, n=n, seed=seed)
    r, above, below = rank_gap(C.data_restricted_jacobian(W, V, _one_hot(pairs, p)))
    assert (info["sv_above"], info["sv_below"]) == (above, below)
    assert info["rank"] == 2 * val == r and info["n"] == n
    # auto: dense when n p K 3p <= 4e6 (here 10 * 5 * 3 * 15 = 2250) ...
    _, small = data_restricted_llc(p, K, train_frac=0.4, return_info=True)
    assert "gram_size" not in small
    # ... blocks above: p = 17, K = 40, n = round(0.4 * 289) = 116: 116*17*40*51 = 4,022,880
    _, big = data_restricted_llc(17, 40, train_frac=0.4, return_info=True)
    assert big["gram_size"] == 17 * (115 - big["rank_PF"])


def test_bound_on_graphs_that_miss_operand_values():
    """Hand graphs with unused operand values and a star (degree-1 leaves): the bound is the
    dense Jacobian's rank (reference) at random points."""
    rng = np.random.default_rng(5)
    p = 5
    cases = [
        # a in {0, 1, 2} only (a = 3, 4 unused), b in {0..4}
        np.array([(a, b) for a in range(3) for b in range(p)]),
        # a star: a = 0 with every b (b-leaves of degree 1), plus (1, 0), (2, 0)
        np.array([(0, b) for b in range(p)] + [(1, 0), (2, 0)]),
    ]
    for pairs in cases:
        X = _one_hot(pairs, p)
        for K in (2, 4, 7):
            W, V = rng.standard_normal((2 * p, K)), rng.standard_normal((K, p))
            rank = numerical_rank(C.data_restricted_jacobian(W, V, X))
            assert 2 * T.data_restricted_bound_pairs(p, K, pairs) == rank


def test_theory_table_columns_thresholds_and_dead_checkpoints():
    # p = 2, K = 4: unit scores ||v_j|| ||w_j||^2 = 1, 0.05, 0.005, 0.0005 (V rows of norm 1)
    p, K = 2, 4
    scores = np.array([1.0, 0.05, 0.005, 0.0005])
    W = np.diag(np.sqrt(scores))  # (2p, K) = (4, 4): column j has squared norm scores[j]
    V = np.zeros((K, p))
    V[:, 0] = 1.0
    df = T.theory_table(_ckpt([W, W], [V, 0 * V], [0, 100]), p, K, train_frac=0.5, data_seed=0)
    assert list(df.columns) == [
        "step", "K_eff", "rel_eps", "K_eff_at_0.01", "K_eff_at_0.1", "llc_feature_stage",
        "lazy_low", "lazy_high", "llc_closed_form", "llc_closed_form_eff",
        "data_restricted_bound",
    ]  # fmt: skip
    first, dead = df.iloc[0], df.iloc[1]
    # thresholds 1e-3, 1e-2, 1e-1 of the largest score: 3, 2 and 1 units above them
    assert (first["K_eff"], first["K_eff_at_0.01"], first["K_eff_at_0.1"]) == (3, 2, 1)
    assert first["llc_closed_form_eff"] == llc_quadratic(p, 3)
    pairs = training_pairs(p, train_frac=0.5, seed=0)
    assert first["data_restricted_bound"] == T.data_restricted_bound_pairs(p, 3, pairs)
    # a checkpoint with every V at 0 has no active unit: 0 everywhere K_eff enters
    assert dead["K_eff"] == 0
    assert dead["llc_feature_stage"] == dead["llc_closed_form_eff"] == 0.0
    assert dead["data_restricted_bound"] == 0.0


def test_theory_table_uses_the_runs_split_seed():
    # p = 11, train_frac 0.4: seed 0's split has an operand value of degree 1 (bound 245.5 at
    # K = 16), seed 1's has none (248): see test_data_restricted_pinned_degree_one_deficit
    p, K = 11, 16
    rng = np.random.default_rng(0)
    W, V = rng.standard_normal((2 * p, K)), rng.standard_normal((K, p))
    df = T.theory_table(_ckpt([W], [V], [0]), p, K, train_frac=0.4, data_seed=1)
    assert df["K_eff"].tolist() == [16] and df["data_restricted_bound"].tolist() == [248.0]


def test_theory_table_refuses_steps_and_params_of_different_lengths():
    p, K = 3, 2
    W, V = np.ones((2 * p, K)), np.ones((K, p))
    with pytest.raises(ValueError):
        T.theory_table(_ckpt([W], [V], [0, 100]), p, K, train_frac=0.5, data_seed=0)


def test_default_rank_tolerance_is_1e_9():
    # module doc: singular values below 1e-9 s_max count as zero, those above it do not
    assert numerical_rank(np.diag([1.0, 5e-9])) == 2
    assert numerical_rank(np.diag([1.0, 5e-10])) == 1
    assert rank_gap(np.diag([1.0, 5e-9]))[0] == 2


def test_blocks_at_the_zero_point_report_no_singular_value_above_the_cut():
    p, K = 3, 2
    pairs = training_pairs(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # sv_below is 0/0 here (reported)
        r, info = C._data_restricted_rank_blocks(
            np.zeros((2 * p, K)), np.ones((K, p)), pairs, p, T.RANK_RTOL
        )
    assert r == 0 and info["rank_PF"] == 0.0 and info["sv_above"] == 0.0
