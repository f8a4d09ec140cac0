"""Closed-form learning coefficients of quadratic networks and numerical checks (SPEC section 5).

Two kinds of functions live here.

* Closed forms from the paper (SPEC section 5 table): :func:`llc_quadratic` (Thm 4.1 / 4.2),
  :func:`llc_single_output` (appendix G.1, Thm G.1 / G.2), :func:`llc_lazy_bounds` (Thm 5.2,
  Cor 5.3), :func:`llc_feature_stage` (Thm 5.5) and :func:`effective_width` (eq. 5).
* Independent numerical counts: half the numerical rank of a Jacobian at a random point
  (:func:`jacobian_rank_llc`, :func:`jacobian_rank_llc_single_output`, :func:`ntk_llc`,
  :func:`data_restricted_llc`). A rank count of this kind equals the learning coefficient of a
  model whose image is locally a manifold (appendix F, Thm F.1) and is an upper bound at a
  degenerate point; it is how SPEC section 5 asks for the closed forms to be checked.

Numerical rank convention (all functions below): singular values in float64, rank =
``#{s_i > rtol * s_max}`` with ``rtol = RANK_RTOL = 1e-9``. Why 1e-9: the kernel directions of
these maps are exact (symmetries), so their singular values come out at rounding level,
``~1e-17 .. 1e-15 * s_max`` for the matrix sizes used here, while the smallest genuine singular
value at a standard-Gaussian point was never below ``~2e-5 * s_max`` in any case we ran (the gap is
checked in ``tests/test_theory.py``). 1e-9 sits in the middle of that gap on a log scale, so the
count does not move if either end shifts by a few orders of magnitude; numpy's default
(``max(shape) * eps``, about 1e-13 here) sits too close to the rounding floor for the larger
matrices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

RANK_RTOL = 1e-9
"""Relative singular-value tolerance of every numerical rank in this module (see module doc)."""


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def _pos_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _rtol(value: Any) -> float:
    v = float(value)
    if not (0.0 < v < 1.0) or not math.isfinite(v):
        raise ValueError(f"relative tolerance must lie in (0, 1), got {value!r}")
    return v


def _to_numpy(a: Any, name: str) -> np.ndarray:
    """A float64 numpy copy of a numpy array or torch tensor (detached, on the CPU)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        a = a.detach().cpu().double().numpy()
    arr = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


# --------------------------------------------------------------------------------------------
# numerical rank
# --------------------------------------------------------------------------------------------
def singular_values(M: np.ndarray) -> np.ndarray:
    """Singular values of ``M`` in float64, descending (empty matrix -> empty array)."""
    M = np.asarray(M, dtype=np.float64)
    if M.size == 0:
        return np.zeros(0)
    return np.linalg.svd(M, compute_uv=False)


def numerical_rank(M: np.ndarray, rtol: float = RANK_RTOL) -> int:
    """``#{s_i > rtol * s_max}`` over the singular values of ``M`` (module doc: why 1e-9)."""
    rtol = _rtol(rtol)
    s = singular_values(M)
    if s.size == 0 or s[0] == 0.0:
        return 0
    return int(np.sum(s > rtol * s[0]))


def rank_gap(M: np.ndarray, rtol: float = RANK_RTOL) -> tuple[int, float, float]:
    """``(rank, s_r / s_max, s_{r+1} / s_max)``: the rank and the two singular values either side
    of the cut, relative to the largest (``0.0`` where there is no value on that side).

    Used to check that a numerical rank sits on a clear gap rather than on the tolerance.
    """
    rtol = _rtol(rtol)
    s = singular_values(M)
    if s.size == 0 or s[0] == 0.0:
        return 0, 0.0, 0.0
    r = int(np.sum(s > rtol * s[0]))
    above = float(s[r - 1] / s[0]) if r > 0 else 0.0
    below = float(s[r] / s[0]) if r < s.size else 0.0
    return r, above, below


# --------------------------------------------------------------------------------------------
# closed forms
# --------------------------------------------------------------------------------------------
def llc_quadratic(p: int, K: int, d: int | None = None) -> float:
    """LLC of the bias-free quadratic network with ``d`` inputs, ``p`` outputs and width ``K``.

    SPEC §5, Thm 4.1 (= G.5, over-parametrised: ``p D / 2`` with ``D = d(d+1)/2``) and Thm 4.2
    (= G.6, under-parametrised: ``K (d + p - 1) / 2``), joined as the SPEC's general form::

        (1/2) * min(K (d + p - 1), p d (d + 1) / 2),   d = 2p by default (modular addition).

    Each hidden unit carries ``d + p`` parameters and one scaling symmetry, hence ``d + p - 1``.
    This is the Q-level count (the map theta -> (Q_1..Q_p) over all of ``Sym(d)``); it ignores
    the data. See :func:`jacobian_rank_llc` for where it fails numerically (a single output,
    and a few widths at the transition) and :func:`data_restricted_llc` for what the one-hot
    training data can actually see.
    """
    p = _pos_int("p", p)
    K = _pos_int("K", K)
    d = 2 * p if d is None else _pos_int("d", d)
    D = d * (d + 1) // 2
    return 0.5 * min(K * (d + p - 1), p * D)


def llc_single_output(d: int, K: int) -> float:
    """LLC of a single-output quadratic network with biases (SPEC §5, appendix G.1, Thm G.1/G.2).

    Model (appendix G.1, eqs. 20-24): ``f(x) = sum_j v_j (w_j . x + b_j)^2 + c`` with
    ``x in R^d``; it equals ``x^T A x + u^T x + c_0`` with ``A = sum_j v_j w_j w_j^T``
    (rank <= K), ``u = 2 sum_j v_j b_j w_j`` and ``c_0 = c + sum_j v_j b_j^2``.

    * ``K >= d`` (Thm G.1): all of ``(A, u, c_0)`` is reachable, ``(d+1)(d+2)/2`` coordinates,
      LLC ``(d+1)(d+2)/4``.
    * ``K < d`` (Thm G.2): ``A`` moves on the rank-K symmetric matrices
      (``K d - K(K-1)/2`` dims), ``u`` in the column space of ``A`` (``K``) and ``c_0`` (``1``):
      LLC ``(K d - K(K-1)/2 + K + 1) / 2``.

    The two branches agree at ``K = d``. Checked against the numerical rank of the model's
    Jacobian in :func:`jacobian_rank_llc_single_output` (they agree on every case tested).
    """
    d = _pos_int("d", d)
    K = _pos_int("K", K)
    if K >= d:
        return (d + 1) * (d + 2) / 4.0
    return (K * d - K * (K - 1) / 2.0 + K + 1) / 2.0


def llc_lazy_bounds(p: int, K: int, m: int | None = None) -> tuple[float, float]:
    """Lower and upper LLC bounds in the lazy / random-feature regime (SPEC §5, Thm 5.2, Cor 5.3).

    Returns ``((p/2)(min(K, m) - 1), (p/2) min(K, m))`` where ``m`` is the dimension of the
    span of the features ``sigma(X w)`` (only ``V`` is fitted, ``W`` is frozen).

    Default ``m``: ``p^2``, the exact feature dimension for the square activation on the full
    ``p^2`` grid of one-hot pairs: ``(w_a + w_{p+b})^2 = w_a^2 + w_{p+b}^2 + 2 w_a w_{p+b}``
    and the cross terms alone already give every function of ``(a, b)``. This is below the
    bound Cor 5.3 itself states via Prop. E.7 (``rank X = 2p - 1``, so ``m <= C(2p, 2) =
    p(2p-1)``); the two defaults only differ when ``K > p^2``. On a training split of ``n``
    pairs the features live in ``R^n`` and ``m = min(n, p^2) = n``: pass ``m=n`` then.
    """
    p = _pos_int("p", p)
    K = _pos_int("K", K)
    m = p * p if m is None else _pos_int("m", m)
    r = min(K, m)
    return (0.5 * p * (r - 1), 0.5 * p * r)


def llc_feature_stage(p: int, K_eff: int) -> float:
    """Stage-II (feature-learning) LLC with ``K_eff`` active units (SPEC §5, Thm 5.5).

    ``K_eff (d + p - 1) / 2`` with ``d = 2p``, i.e. ``K_eff (3p - 1) / 2``. ``K_eff = 0`` gives 0.
    The theorem's formula is the under-parametrised count of Thm 4.2 for the active
    subnetwork; it exceeds the cap ``p D / 2`` of Thm 4.1 once ``K_eff (3p-1) > p D``, where
    :func:`llc_quadratic` ``(p, K_eff)`` is the consistent value. Returned as the theorem
    states it, uncapped.
    """
    p = _pos_int("p", p)
    K_eff = _pos_int("K_eff", K_eff, minimum=0)
    return 0.5 * K_eff * (3 * p - 1)


def effective_width(W: Any, V: Any, rel_eps: float = 1e-3) -> int:
    """Number of active hidden units (SPEC §5, eq. 5, rebuilt).

    ``K_eff = #{ j : ||V[j, :]|| * ||W[:, j]||^2 > rel_eps * max_j (same) }``.

    ``W`` has shape (d, K) (column j = input weights ``w_j``) and ``V`` shape (K, p); numpy
    arrays or torch tensors. The score ``||v_j|| ||w_j||^2`` is invariant under the per-unit
    scaling ``w_j -> a w_j, v_j -> v_j / a^2`` (and a sign flip of ``w_j``), so the count is
    too. The threshold is relative to the largest unit; ``rel_eps`` must lie in ``[0, 1)``
    (``0`` counts every unit with a non-zero score). All-zero weights give 0.
    """
    Wn = _to_numpy(W, "W")
    Vn = _to_numpy(V, "V")
    if Wn.ndim != 2 or Vn.ndim != 2:
        raise ValueError(f"W and V must be 2-d, got shapes {Wn.shape} and {Vn.shape}")
    if Wn.shape[1] != Vn.shape[0]:
        raise ValueError(
            f"W must have shape (d, K) and V shape (K, p): got W {Wn.shape}, V {Vn.shape}"
        )
    eps = float(rel_eps)
    if not (0.0 <= eps < 1.0):
        raise ValueError(f"rel_eps must lie in [0, 1), got {rel_eps!r}")
    score = np.linalg.norm(Vn, axis=1) * np.sum(Wn * Wn, axis=0)
    if score.size == 0 or score.max() == 0.0:
        return 0
    return int(np.sum(score > eps * score.max()))


# --------------------------------------------------------------------------------------------
# Jacobian of theta -> (Q_1, ..., Q_q)
# --------------------------------------------------------------------------------------------
def quadratic_forms_jacobian(W: Any, V: Any) -> np.ndarray:
    """Analytic Jacobian of ``theta = (W, V) -> (Q_1, ..., Q_q)``, ``Q_k = sum_j V[j,k] w_j w_j^T``.

    Rows: for each output ``k`` (outer), the ``d(d+1)/2`` upper-triangular entries ``(a <= b)``
    of ``Q_k`` in ``numpy.triu_indices`` order. Columns: ``W.ravel()`` (row-major, ``W[a, j]``)
    then ``V.ravel()`` (``V[j, k]``) -- the order of ``torch.func.jacrev`` on ``(W, V)``.
    ``dQ_k[a,b] / dW[c,j] = V[j,k] (delta_ac W[b,j] + W[a,j] delta_bc)``,
    ``dQ_k[a,b] / dV[j,k'] = delta_kk' W[a,j] W[b,j]``. (SPEC §5, "check them numerically".)
    """
    Wn = _to_numpy(W, "W")
    Vn = _to_numpy(V, "V")
    if Wn.ndim != 2 or Vn.ndim != 2 or Wn.shape[1] != Vn.shape[0]:
        raise ValueError(f"need W (d, K) and V (K, q), got {Wn.shape} and {Vn.shape}")
    d, K = Wn.shape
    q = Vn.shape[1]
    iu, ju = np.triu_indices(d)
    D = iu.size
    eye = np.eye(d)
    # dQ[a,b]/dW[c,j] for unit j, without the V factor: delta_ac W[b,j] + W[a,j] delta_bc
    base = eye[iu][:, :, None] * Wn[ju][:, None, :] + Wn[iu][:, None, :] * eye[ju][:, :, None]
    # base: (D, d, K); times V[j,k] -> (q, D, d, K)
    JW = base[None, :, :, :] * Vn.T[:, None, None, :]
    JW = JW.reshape(q * D, d * K)
    outer = Wn[iu] * Wn[ju]  # (D, K): entries of w_j w_j^T
    JV = np.zeros((q, D, K, q))
    for k in range(q):
        JV[k, :, :, k] = outer
    JV = JV.reshape(q * D, K * q)
    return np.concatenate([JW, JV], axis=1)


def _gaussian_point(
    rng: np.random.Generator, d: int, K: int, q: int
) -> tuple[np.ndarray, np.ndarray]:
    W = rng.standard_normal((d, K))
    V = rng.standard_normal((K, q))
    return W, V


def jacobian_rank_llc(d: int, q: int, K: int, seed: int = 0) -> float:
    """Half the numerical rank of the Jacobian of ``theta -> (Q_1, ..., Q_q)`` at a random point.

    SPEC §5 ("check them numerically"): the independent count behind Thm 4.1 / 4.2. The point
    is ``W ~ N(0,1)^{d x K}``, ``V ~ N(0,1)^{K x q}`` from ``numpy.random.default_rng(seed)``,
    float64; the Jacobian is :func:`quadratic_forms_jacobian` (checked against
    ``torch.func.jacrev`` in the tests); rank cut ``s > 1e-9 * s_max`` (module doc).

    Comparison with the closed form ``(1/2) min(K(d+q-1), q d(d+1)/2)`` (:func:`llc_quadratic`
    with ``p = q``), checked on ``d = 2..8, q = 1..4`` with ``K`` from 1 to
    two past the transition, ``d = 9..12, q = 2..6`` around the transition, and the modular
    shapes ``(d, q) = (2p, p)``, ``p = 2..5, 7, 11``, around the transition (4 seeds for the
    disagreeing cases; every rank sits on a gap: kept singular values ``> 2e-5 s_max``,
    dropped ones ``< 1e-15 s_max``). They agree except in the cases below, where the numerical
    value holds and the closed form over-counts because a hypothesis of the theorems fails:

    * ``q = 1`` and ``2 <= K < d``: rank ``K d - K(K-1)/2``, not ``min(K d, D)``. With a single
      output ``Q = W diag(v) W^T`` is invariant under ``W -> W G`` for every ``G`` in the
      (pseudo-)orthogonal group of ``diag(v)``, a ``K(K-1)/2``-dimensional symmetry beyond the
      ``K`` rescalings; the image is the manifold of rank-``K`` symmetric matrices, dimension
      ``K d - K(K-1)/2`` (Thm G.2's count without biases). These rotations are exactly the
      first-order cancellations that assumption 3 of Thm 4.2 rules out. For ``K >= d`` both
      give ``D``. With ``q >= 2`` outputs, generic columns of ``V`` break the rotations.
    * ``q = 3``, ``d`` even, ``K = 3d/2 - 1`` (seen at ``d = 4, 6, 8, 10, 12``): rank
      ``q D - 1`` where the closed form says ``q D`` (the cap; ``K(d+2) - qD = (d-4)/2 >= 0``).
      At this one width the image is a hypersurface, not open: a defective case, which only a
      rank computation reveals (Thm 4.1's spanning hypothesis needs ``K >= D`` and does not
      apply; Thm 4.2's count ``K (d + q - 1)`` is above ``q D``, so neither theorem covers it).
      Neighbouring widths agree, odd ``d`` agree, and ``q = 2, 4, 5, 6`` showed no such case.
    * The modular shapes ``(2p, p)`` agree everywhere tested except ``p = 3`` (``d = 6, q = 3,
      K = 8``: 31.0 instead of 31.5), which is the case above.

    Returns ``rank / 2``.
    """
    d = _pos_int("d", d)
    q = _pos_int("q", q)
    K = _pos_int("K", K)
    rng = np.random.default_rng(seed)
    W, V = _gaussian_point(rng, d, K, q)
    return numerical_rank(quadratic_forms_jacobian(W, V)) / 2.0


def jacobian_rank_llc_single_output(d: int, K: int, seed: int = 0) -> float:
    """Half the numerical rank for the single-output quadratic network with biases (appendix G.1).

    Model (SPEC §5, G.1/G.2): ``f(x) = sum_j v_j (w_j . x + b_j)^2 + c``, ``theta =
    (W in R^{d x K}, b in R^K, v in R^K, c)``. The outputs are the model's values at
    ``N = (d+1)(d+2)/2 + 5`` random inputs (more than the dimension of the quadratic
    polynomials in ``d`` variables, so evaluation is injective on them almost surely); the
    Jacobian of those values w.r.t. ``theta`` is taken with ``torch.func.jacrev`` in float64
    at a Gaussian point from ``torch.Generator().manual_seed(seed)``. Independent of
    :func:`llc_single_output`, which it agrees with on every case tested
    (``d = 1..7, K = 1..d+2``).
    """
    import torch
    from torch.func import jacrev

    d = _pos_int("d", d)
    K = _pos_int("K", K)
    g = torch.Generator().manual_seed(int(seed))
    dt = torch.float64
    N = (d + 1) * (d + 2) // 2 + 5
    x = torch.randn(N, d, generator=g, dtype=dt)
    W = torch.randn(d, K, generator=g, dtype=dt)
    b = torch.randn(K, generator=g, dtype=dt)
    v = torch.randn(K, generator=g, dtype=dt)
    c = torch.randn((), generator=g, dtype=dt)

    def f(W, b, v, c):
        return ((x @ W + b) ** 2) @ v + c

    jac = jacrev(f, argnums=(0, 1, 2, 3))(W, b, v, c)
    J = torch.cat([j.reshape(N, -1) for j in jac], dim=1).numpy()
    return numerical_rank(J) / 2.0


# --------------------------------------------------------------------------------------------
# NTK / Fisher count
# --------------------------------------------------------------------------------------------
def ntk_llc(model: Any, x: Any, rel_tol: float = RANK_RTOL, centred: bool = False) -> float:
    """Half the rank of the empirical NTK Gram / Fisher matrix ``J^T J`` (SPEC §5, Thm 5.1).

    ``J`` is the Jacobian of ``model(x).reshape(-1)`` w.r.t. all parameters (those with
    ``requires_grad``), taken with ``torch.func.jacrev`` on a float64 copy of the model at its
    current parameters (the model itself is not modified); ``x`` is cast to float64 only if it
    is floating point (integer pair inputs pass unchanged). ``rank(J^T J) = rank(J)``, computed
    from the singular values of ``J`` with ``s > rel_tol * s_max``.

    With ``centred=True`` each output column is centred over the samples first (``P J``,
    ``P = I - 11^T/n``), i.e. the Fisher of the centred loss of SPEC §2, whose output Hessian is
    ``P`` rather than ``I``. For small models only: ``J`` is dense (outputs x parameters).
    """
    import copy

    import torch
    from torch.func import functional_call, jacrev

    rel_tol = _rtol(rel_tol)
    m = copy.deepcopy(model).double()
    names = [n for n, prm in m.named_parameters() if prm.requires_grad]
    if not names:
        raise ValueError("model has no trainable parameters")
    params = {n: prm.detach() for n, prm in m.named_parameters() if prm.requires_grad}
    buffers = {n: b.detach() for n, b in m.named_buffers()}
    xt = torch.as_tensor(x)
    if xt.is_floating_point():
        xt = xt.double()

    def out(prms: dict[str, torch.Tensor]) -> torch.Tensor:
        y = functional_call(m, {**prms, **buffers}, (xt,))
        if centred:
            if y.ndim < 1 or y.shape[0] < 2:
                raise ValueError("centred=True needs outputs with a sample dimension of size >= 2")
            y = y - y.mean(dim=0, keepdim=True)
        return y.reshape(-1)

    jac = jacrev(out)(params)
    n_out = out(params).numel()
    J = torch.cat([jac[n].reshape(n_out, -1) for n in names], dim=1).cpu().numpy()
    return numerical_rank(J, rel_tol) / 2.0


# --------------------------------------------------------------------------------------------
# data-restricted count
# --------------------------------------------------------------------------------------------
def training_pairs(
    p: int, train_frac: float | None = None, n: int | None = None, seed: int = 0
) -> np.ndarray:
    """The ``(a, b)`` training pairs, shape (n, 2), ordered by ``a * p + b`` (SPEC §1).

    * ``train_frac`` given: the training split of ``grokking_llc.data.make_split(p, train_frac,
      seed)``.
    * ``n`` given: ``n`` pairs drawn uniformly without replacement with
      ``numpy.random.default_rng(seed)`` (the same draw as above).
    * neither: the full ``p^2`` grid.
    """
    p = _pos_int("p", p, minimum=2)
    if train_frac is not None and n is not None:
        raise ValueError("give train_frac or n, not both")
    if train_frac is not None:
        tf = float(train_frac)
        if not 0.0 < tf <= 1.0:
            raise ValueError(f"train_frac must lie in (0, 1], got {train_frac!r}")
        if tf == 1.0:
            return training_pairs(p)
        from grokking_llc.data import make_split

        df = make_split(p, tf, seed)
        return df.loc[df["split"] == "train", ["a", "b"]].to_numpy(dtype=np.int64)
    if n is None:
        idx = np.arange(p * p)
    else:
        n = _pos_int("n", n)
        if n > p * p:
            raise ValueError(f"n={n} exceeds the p^2={p * p} available pairs")
        idx = np.sort(np.random.default_rng(seed).choice(p * p, size=n, replace=False))
    return np.stack(np.divmod(idx, p), axis=1).astype(np.int64)


def _one_hot_inputs(pairs: np.ndarray, p: int) -> np.ndarray:
    X = np.zeros((pairs.shape[0], 2 * p))
    rows = np.arange(pairs.shape[0])
    X[rows, pairs[:, 0]] = 1.0
    X[rows, p + pairs[:, 1]] = 1.0
    return X


def data_restricted_jacobian(W: np.ndarray, V: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Jacobian of ``vec(P (X W)^2 V)`` w.r.t. ``(W, V)`` (rows: output k outer, sample i inner;
    columns: ``W.ravel()`` then ``V.ravel()``). Analytic:
    ``d(P Yhat)[i,k] / dW[c,j] = V[j,k] (P G_j)[i,c]`` with ``G_j = 2 diag(X w_j) X`` and
    ``d(P Yhat)[i,k] / dV[j,k'] = delta_kk' (P F)[i,j]`` with ``F = (X W)^2``. (SPEC §2, §5.)
    """
    n = X.shape[0]
    d, K = W.shape
    q = V.shape[1]
    H = X @ W
    F = H * H
    PF = F - F.mean(axis=0, keepdims=True)
    G = 2.0 * H[:, None, :] * X[:, :, None]  # (n, d, K): G[i, c, j]
    PG = G - G.mean(axis=0, keepdims=True)
    JW = PG[None, :, :, :] * V.T[:, None, None, :]  # (q, n, d, K)
    JW = JW.reshape(q * n, d * K)
    JV = np.zeros((q, n, K, q))
    for k in range(q):
        JV[k, :, :, k] = PF
    return np.concatenate([JW, JV.reshape(q * n, K * q)], axis=1)


def _data_restricted_rank_blocks(
    W: np.ndarray, V: np.ndarray, pairs: np.ndarray, p: int, rtol: float
) -> tuple[int, dict[str, float]]:
    """Rank of :func:`data_restricted_jacobian` without building it (exact block identity).

    ``J = [J_W, I_q (x) P F]``. With ``r_F = rank(P F)`` and ``B`` an orthonormal basis of
    ``range(P)`` minus ``col(P F)`` (``n - 1 - r_F`` columns),
    ``rank J = q r_F + rank M``, ``M[(k,a),(c,j)] = V[j,k] (B^T G_j)[a,c]``
    (``rank [A C] = rank A + rank((I - proj_A) C)``). ``rank M`` is read off the eigenvalues of
    the Gram ``M M^T`` (size ``q (n-1-r_F)``), cut at ``max(rtol^2, size * eps) * lambda_max``:
    the Gram squares the singular values and its eigenvalues carry rounding errors of about
    ``size * eps * lambda_max``, so the effective singular-value cut is about
    ``sqrt(size * eps)`` (1e-6 at the baseline's 5247). Hence the gap is reported in ``info``.
    """
    n = pairs.shape[0]
    d, K = W.shape
    q = V.shape[1]
    H = W[pairs[:, 0]] + W[p + pairs[:, 1]]  # (n, K) = X W
    F = H * H
    PF = F - F.mean(axis=0, keepdims=True)
    U, s, _ = np.linalg.svd(PF, full_matrices=False)
    r_F = int(np.sum(s > rtol * s[0])) if s.size and s[0] > 0 else 0
    Ur = U[:, :r_F]
    Z = np.eye(n) - 1.0 / n - Ur @ Ur.T  # projector onto range(P) minus col(PF)
    evals, evecs = np.linalg.eigh(Z)
    B = evecs[:, evals > 0.5]  # (n, r_c)
    r_c = B.shape[1]
    info: dict[str, float] = {"rank_PF": float(r_F), "r_c": float(r_c)}
    if r_c == 0:
        return q * r_F, info
    # C_j = B^T G_j = 2 (B * h_j)^T X, a (r_c, d) matrix per unit; X one-hot -> scatter-add.
    T = np.zeros((q * q, r_c * r_c))
    chunk = max(1, int(2e7 // max(1, n * r_c)))
    for j0 in range(0, K, chunk):
        js = slice(j0, min(K, j0 + chunk))
        Bh = 2.0 * B[:, None, :] * H[:, js, None]  # (n, kc, r_c)
        C = np.zeros((2 * p, Bh.shape[1], r_c))
        np.add.at(C, pairs[:, 0], Bh)
        np.add.at(C, p + pairs[:, 1], Bh)
        Hj = np.einsum("cja,cjb->jab", C, C).reshape(Bh.shape[1], r_c * r_c)
        VV = np.einsum("jk,jl->jkl", V[js], V[js]).reshape(-1, q * q)
        T += VV.T @ Hj
    G = T.reshape(q, q, r_c, r_c).transpose(0, 2, 1, 3).reshape(q * r_c, q * r_c)
    ev = np.linalg.eigvalsh(G)[::-1]
    ev_max = ev[0]
    cut = max(rtol**2, G.shape[0] * np.finfo(float).eps) * ev_max
    r_M = int(np.sum(ev > cut))
    info["gram_size"] = float(G.shape[0])
    info["sv_above"] = float(math.sqrt(max(ev[r_M - 1], 0.0) / ev_max)) if r_M > 0 else 0.0
    info["sv_below"] = float(math.sqrt(max(ev[r_M], 0.0) / ev_max)) if r_M < ev.size else 0.0
    return q * r_F + r_M, info


def data_restricted_llc(
    p: int,
    K: int,
    train_frac: float | None = None,
    n: int | None = None,
    seed: int = 0,
    method: str = "auto",
    rtol: float = RANK_RTOL,
    return_info: bool = False,
) -> float | tuple[float, dict[str, float]]:
    """The data-restricted count: half the rank of the Jacobian of the centred training-set
    predictions ``P Yhat``, ``Yhat = (X W)^2 V``, w.r.t. ``theta = (W, V)`` (SPEC §2, §5).

    The centred loss of SPEC §2 only sees each ``Q_k`` through ``x^T Q_k x`` at the one-hot
    training inputs ``x = [e_a; e_b]``, centred over the samples; this counts the directions
    of ``theta`` it can see, at a random point ``W ~ N(0,1)^{2p x K}``, ``V ~ N(0,1)^{K x p}``
    from ``numpy.random.default_rng(seed + 1)``. Training pairs: :func:`training_pairs`
    (``train_frac`` -> ``make_split``'s split; ``n`` -> n uniform pairs; neither -> full grid).

    It is at most :func:`data_restricted_bound` and equalled it in every case we ran: 396 splits
    x widths (``p = 2, 3, 5, 7``; full grid and ``train_frac`` 0.2, 0.4, 0.7, two split seeds;
    ``K = 1..3p``), 212 random sparse subsets, ``p = 11, 13`` around the transition, hand-built
    graphs with degree-1 nodes and an isolated pair, and the paper's baseline. The bound's main
    pieces, on a split where every operand value occurs in at least ``K / p`` pairs:

    * ``p (n - 1) / 2``: ``P Yhat`` lives in ``p`` copies of the ``(n-1)``-dim centred space;
    * ``K (3p - 2) / 2`` (with every operand value used and the pair graph connected): besides
      the rescaling, every unit has a second exact symmetry on one-hot data,
      ``w_j -> w_j + t (1_p; -1_p)`` (``X`` has rank ``2p - 1``, so ``X w_j`` and the predictions
      do not move), one fewer than Thm 4.2's ``3p - 1``;
    * ``P Yhat = (P F) V`` has rank ``<= K`` (binds only on small splits with ``K < p``);
    * an operand value that occurs in a single pair costs ``K - p`` more once ``K > p`` (its
      ``K`` directions all land in the ``p`` outputs of that one sample): on the ``p = 11,
      train_frac = 0.4, seed = 0`` split (one such value) the count is 245.5, not 248, at
      ``K = 16``;
    * on the full grid (``n = p^2``) the first gives ``p (p^2 - 1) / 2``, below the Q-level
      cap ``p^2 (2p + 1) / 2`` of Thm 4.1: ``x^T Q x`` never sees the within-block
      off-diagonal entries of ``Q``.

    Paper baseline (``p = 53, K = 1024, train_frac = 0.4, seed = 0``, ``n = 1124``), computed
    with ``method="blocks"`` in about 80 s: ``rank(P F) = 1024``, the remaining Gram
    (5247 x 5247) is full rank with smallest singular value ``0.47 s_max``, so the count is
    ``p (n - 1) / 2 = 29759.5`` -- against ``K (3p - 1) / 2 = 80896`` from Thm 4.2.

    ``method``: ``"direct"`` builds the dense Jacobian (``n p`` x ``K (3p)``) and takes its SVD;
    ``"blocks"`` uses the exact identity of :func:`_data_restricted_rank_blocks`, which only
    needs a Gram of size ``p (n - 1 - rank(P F))`` and so reaches the paper's baseline;
    ``"auto"`` picks ``"direct"`` when the dense Jacobian has at most 4e6 entries.
    ``return_info=True`` also returns a dict (rank pieces and the singular values either side of
    the cut, relative to the largest).
    """
    p = _pos_int("p", p, minimum=2)
    K = _pos_int("K", K)
    rtol = _rtol(rtol)
    if method not in ("auto", "direct", "blocks"):
        raise ValueError(f"method must be 'auto', 'direct' or 'blocks', got {method!r}")
    pairs = training_pairs(p, train_frac=train_frac, n=n, seed=seed)
    n_pairs = pairs.shape[0]
    if n_pairs < 2:
        raise ValueError("need at least 2 training pairs (centring removes one dimension)")
    rng = np.random.default_rng(int(seed) + 1)
    W, V = _gaussian_point(rng, 2 * p, K, p)
    if method == "auto":
        method = "direct" if n_pairs * p * K * 3 * p <= 4_000_000 else "blocks"
    info: dict[str, float] = {"n": float(n_pairs)}
    if method == "direct":
        J = data_restricted_jacobian(W, V, _one_hot_inputs(pairs, p))
        r, above, below = rank_gap(J, rtol)
        info.update({"sv_above": above, "sv_below": below})
    else:
        r, more = _data_restricted_rank_blocks(W, V, pairs, p, rtol)
        info.update(more)
    info["rank"] = float(r)
    value = r / 2.0
    return (value, info) if return_info else value


def _pair_graph(pairs: np.ndarray, p: int) -> tuple[np.ndarray, list[list[int]]]:
    """Degrees of the ``2p`` operand nodes and the connected components (lists of used nodes)
    of the bipartite graph whose edges are the training pairs ``(a, p + b)``."""
    parent = list(range(2 * p))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(int(a)), find(p + int(b))
        if ra != rb:
            parent[ra] = rb
    deg = np.concatenate(
        [np.bincount(pairs[:, 0], minlength=p), np.bincount(pairs[:, 1], minlength=p)]
    )
    comps: dict[int, list[int]] = {}
    for c in np.flatnonzero(deg):
        comps.setdefault(find(int(c)), []).append(int(c))
    return deg, list(comps.values())


def data_restricted_bound_pairs(p: int, K: int, pairs: np.ndarray) -> float:
    """Half of a rank bound for :func:`data_restricted_jacobian` on the given training pairs.

    ``(1/2) min(R_W, p (n - 1), r (n - 1 + p - r))`` with ``r = min(K, n - 1, p)`` and
    ``R_W = K (p - 1) + sum_C R_C`` over the connected components ``C`` of the bipartite graph
    of pairs (operand values ``a`` and ``p + b`` as nodes, pairs as edges):
    ``R_C = sum_{c in C} min(K, p deg(c)) - K``, or ``min(K, p)`` when ``C`` is a single pair.

    * ``K (p - 1)``: the ``V`` directions, less the ``K`` rescalings (Thm 4.2's count);
    * node ``c`` moves ``X w_j`` only on its ``deg(c)`` samples, so across the ``K`` units its
      directions ``V[j] (x) (h_j restricted to those samples)`` span at most ``p deg(c)``
      dimensions; each component has one invisible shift per unit,
      ``w_j -> w_j + t (1 on a-nodes, -1 on b-nodes of C)`` (``ker X``);
    * ``P Yhat`` lives in ``p`` copies of the centred ``(n-1)``-dim space, and ``P Yhat = (P F)
      V`` has rank ``<= K`` (rank-``r`` matrices of size ``(n-1) x p``: ``r (n-1+p-r)`` dims).

    With every operand value used, the graph connected and every degree ``>= K / p`` (full grid;
    the paper's baseline split) this is ``(1/2) min(K (3p - 2), p (n - 1))``. Derived by
    counting; it equalled the numerical rank in every case we ran (see
    :func:`data_restricted_llc`), but it is not proven exact in general (only degree-1 nodes
    were seen to bind).
    """
    p = _pos_int("p", p, minimum=2)
    K = _pos_int("K", K)
    pairs = np.asarray(pairs, dtype=np.int64)
    n = pairs.shape[0]
    if n < 2:
        raise ValueError("need at least 2 training pairs")
    deg, comps = _pair_graph(pairs, p)
    r_w = K * (p - 1)
    for comp in comps:
        if len(comp) == 2 and deg[comp[0]] == 1 and deg[comp[1]] == 1:
            r_w += min(K, p)
        else:
            r_w += sum(min(K, p * int(deg[c])) for c in comp) - K
    r = min(K, n - 1, p)
    return 0.5 * min(r_w, p * (n - 1), r * (n - 1 + p - r))


def data_restricted_bound(
    p: int, K: int, train_frac: float | None = None, n: int | None = None, seed: int = 0
) -> float:
    """:func:`data_restricted_bound_pairs` on the split :func:`training_pairs` draws for
    these arguments (the same as :func:`data_restricted_llc`'s)."""
    return data_restricted_bound_pairs(
        p, K, training_pairs(p, train_frac=train_frac, n=n, seed=seed)
    )


def theory_table(
    checkpoints: dict, p: int, K: int, train_frac: float, data_seed: int, rel_eps: float = 1e-3
) -> pd.DataFrame:
    """The closed forms beside every checkpoint of a quadratic-net run (SPEC section 5).

    ``checkpoints`` is a consolidated checkpoints file (``steps`` and stacked ``params`` with
    ``W`` of shape (T, 2p, K) and ``V`` of shape (T, K, p)). Columns: step, K_eff (eq. 5 at
    ``rel_eps``), rel_eps, K_eff_at_0.01 and K_eff_at_0.1 (coarser thresholds, to show how the
    unit scores spread out during training), llc_feature_stage (Thm 5.5 at K_eff), lazy_low /
    lazy_high (Thm 5.2 with m = n training pairs, the span of the features on the split),
    llc_closed_form (Thm 4.1 / 4.2 at the full width K), llc_closed_form_eff (the same at K_eff) and
    data_restricted_bound (at K_eff on this run's split, see :func:`data_restricted_bound`).
    """
    pairs = training_pairs(p, train_frac=train_frac, seed=data_seed)
    n = len(pairs)
    rows = []
    W_all, V_all = checkpoints["params"]["W"], checkpoints["params"]["V"]
    low, high = llc_lazy_bounds(p, K, m=n)  # the same at every checkpoint
    closed_form = llc_quadratic(p, K)
    for step, W, V in zip(checkpoints["steps"].tolist(), W_all, V_all, strict=True):
        k_eff = effective_width(W, V, rel_eps=rel_eps)
        coarser = {f"K_eff_at_{e:g}": effective_width(W, V, rel_eps=e) for e in (1e-2, 1e-1)}
        rows.append(
            {
                "step": int(step),
                "K_eff": k_eff,
                "rel_eps": rel_eps,
                **coarser,
                "llc_feature_stage": llc_feature_stage(p, k_eff) if k_eff else 0.0,
                "lazy_low": low,
                "lazy_high": high,
                "llc_closed_form": closed_form,
                "llc_closed_form_eff": llc_quadratic(p, k_eff) if k_eff else 0.0,
                "data_restricted_bound": (
                    data_restricted_bound_pairs(p, k_eff, pairs) if k_eff else 0.0
                ),
            }
        )
    return pd.DataFrame(rows)


__all__: Sequence[str] = (
    "RANK_RTOL",
    "data_restricted_bound",
    "data_restricted_bound_pairs",
    "data_restricted_jacobian",
    "data_restricted_llc",
    "effective_width",
    "jacobian_rank_llc",
    "jacobian_rank_llc_single_output",
    "llc_feature_stage",
    "llc_lazy_bounds",
    "llc_quadratic",
    "llc_single_output",
    "ntk_llc",
    "numerical_rank",
    "quadratic_forms_jacobian",
    "rank_gap",
    "singular_values",
    "theory_table",
    "training_pairs",
)
