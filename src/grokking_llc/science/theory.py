"""Closed-form learning coefficients of quadratic networks (SPEC section 5): what the pipeline
computes beside every LLC estimate.

Closed forms from the paper (SPEC section 5 table): :func:`llc_quadratic` (Thm 4.1 / 4.2),
:func:`llc_single_output` (appendix G.1, Thm G.1 / G.2), :func:`llc_lazy_bounds` (Thm 5.2,
Cor 5.3), :func:`llc_feature_stage` (Thm 5.5), :func:`effective_width` (eq. 5), and the count of
what the centred training loss can see (:func:`data_restricted_bound`, a graph walk). The
independent numerical checks of these counts (Jacobian ranks at random points) live apart, in
:mod:`grokking_llc.theory_checks`, which the tests use and the pipeline does not.

Numerical rank convention (all functions below): singular values in float64, rank =
``#{s_i > rtol * s_max}`` with ``rtol = RANK_RTOL = 1e-9``. Why 1e-9: the kernel directions of
these maps are exact (symmetries), so their singular values come out at rounding level,
``~1e-17 .. 1e-15 * s_max`` for the matrix sizes used here, while the smallest genuine singular
value at a standard-Gaussian point was never below ``~2e-5 * s_max`` in any case we ran (the gap
is checked in ``tests/science/test_theory.py``). 1e-9 sits in the middle of that gap on a log
scale, so the count does not move if either end shifts by a few orders of magnitude; numpy's default
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


# --------------------------------------------------------------------------------------------
# NTK / Fisher count
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# data-restricted count
# --------------------------------------------------------------------------------------------
def training_pairs(
    p: int, train_frac: float | None = None, n: int | None = None, seed: int = 0
) -> np.ndarray:
    """The ``(a, b)`` training pairs, shape (n, 2), ordered by ``a * p + b`` (SPEC §1).

    * ``train_frac`` given: the training split of ``grokking_llc.core.data.make_split(p, train_frac,
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
        from grokking_llc.core.data import make_split

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
    "effective_width",
    "llc_feature_stage",
    "llc_lazy_bounds",
    "llc_quadratic",
    "llc_single_output",
    "theory_table",
    "training_pairs",
)
