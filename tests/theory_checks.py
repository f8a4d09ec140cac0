"""Numerical checks of the closed forms (SPEC section 5): half the numerical rank of a Jacobian
at a random point (:func:`jacobian_rank_llc`, :func:`jacobian_rank_llc_single_output`,
:func:`ntk_llc`, :func:`data_restricted_llc`). A rank count of this kind equals the learning
coefficient of a model whose image is locally a manifold (appendix F, Thm F.1) and is an upper
bound at a degenerate point; it is how SPEC section 5 asks for the closed forms to be checked.
Kept apart from :mod:`grokking_llc.science.theory`, whose closed forms the pipeline uses; the rank
convention (``RANK_RTOL``) is explained there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from grokking_llc.science.theory import RANK_RTOL, _pos_int, _rtol, _to_numpy, training_pairs


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
