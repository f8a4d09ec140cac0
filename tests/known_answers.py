"""Small models whose learning coefficient is known in closed form, for testing LLC estimators.

Each problem returns a :class:`KnownAnswer` ``(model, x, y, loss_fn, llc, d)``: the model at its
true parameter w*, the whole training set, the loss, the closed-form learning coefficient and
the number of parameters. The loss is :func:`half_mse`, the Gaussian negative log-likelihood with
unit noise up to a constant, so ``llc`` is the learning coefficient of that statistical model.

* Regular model (SPEC section 4): linear regression with q = q_in * q_out free parameters and a
  full-rank design has lambda = q / 2. The design is random, the targets noisy and w* the least
  squares solution, so ``L_n(w) - L_n(w*)`` is exactly the quadratic form of ``X^T X / n``.
* Reduced-rank regression ``Y = B A X`` (input M, hidden H, output N, true rank r): Aoyagi and
  Watanabe's (2005) lambda (SPEC section 10), :func:`aoyagi_lambda`.
* Deep linear network ``x -> W_L ... W_1 x`` (layer widths H_1 = input, ..., H_{L+1} = output,
  true product of rank r): Aoyagi's (2024) lambda, :func:`dln_lambda`.

For the last two the data make the empirical loss equal the population one: ``x = sqrt(M) I``
(n = M rows, so ``X^T X = n I``) and noiseless ``y = x P^T`` with P the true product, so
``L_n(w) = |prod(w) - P|_F^2 / 2`` and w* is an exact global minimum. w* is the most singular
point of its fibre: only the first r units of every hidden layer are used, the others have zero
incoming and outgoing weights (a generic rank-r factorisation padded with zeros).

:func:`rescale` is each model's function-preserving rescaling (first layer times c, second
divided by c; for the regular model, whose single layer has no such symmetry, the weight times c
with a fixed scale buffer divided by c, a reparametrisation of the same model).
:func:`jacobian_rank` gives the independent counts the closed forms are checked against:
``rank J(w*) / 2 <= lambda <= rank J(generic w) / 2 <= d / 2`` (the first because the loss's
Hessian at w* is ``J^T J / n``, and lambda is at least half its rank; the second because every
fibre of the parameter-to-function map has dimension at least ``d - rank J(generic)`` and
lambda is at most half the codimension of the set of true parameters; Watanabe 2009, ch. 7).
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from typing import NamedTuple

import torch
from torch import nn


class KnownAnswer(NamedTuple):
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    loss_fn: object
    llc: float
    d: int


def half_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gaussian negative log-likelihood up to a constant: 0.5 * squared error summed over
    outputs, averaged over rows."""
    return 0.5 * (pred - target).pow(2).sum(dim=1).mean()


# ---------------------------------------------------------------- closed forms


def aoyagi_lambda(M: int, N: int, H: int, r: int) -> float:
    """Learning coefficient of reduced-rank regression with input M, output N, hidden H and
    true rank r (Aoyagi and Watanabe 2005, Main Theorem; SPEC section 10)."""
    if not 0 <= r <= min(M, N, H):
        raise ValueError(f"true rank r={r} must lie in [0, min(M, N, H)]")
    if N + r <= M + H and M + r <= N + H and H + r <= M + N:
        lam = (2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2) / 8
        return lam + (1 / 8 if (M + H + N + r) % 2 else 0.0)
    if M + H < N + r:
        return (H * M - H * r + N * r) / 2
    if N + H < M + r:
        return (H * N - H * r + M * r) / 2
    return M * N / 2


def _dln_subset(widths: list[int], r: int) -> list[int]:
    """The values ``M_j = H_j - r`` of Aoyagi's (2024) subset S (see :func:`dln_lambda`)."""
    m = sorted(h - r for h in widths)
    for k in range(2, len(m) + 1):  # S = the k smallest M_j, ell = k - 1 >= 1
        subset, rest, ell = m[:k], m[k:], k - 1
        total = sum(subset)
        if rest and not max(subset) < min(rest):
            continue
        if total >= ell * max(subset) and (not rest or total < ell * min(rest)):
            return subset
    raise ValueError(f"no subset satisfies Aoyagi's conditions for widths {widths}, r={r}")


def dln_lambda(widths: list[int], r: int) -> float:
    """Learning coefficient of a deep linear network (Aoyagi 2024, Theorem 1).

    M. Aoyagi, "Consideration on the learning efficiency of multiple-layered neural networks
    with linear units", Neural Networks 172 (2024) 106132; the formula Lau et al. (2025, "The
    local learning coefficient") and Furman and Lau (2024, "Estimating the local learning
    coefficient at scale") test their estimators on (their code, e.g. devinterp's
    tests/slt/rrr_test.py, states it the same way). ``widths = [H_1, ..., H_{L+1}]`` (input
    first, output last), r the rank of the true product. With ``M_j = H_j - r``, take the subset
    S of ell + 1 of them such that ``max_S M < min_{not S} M``, ``sum_S M >= ell * max_S M`` and
    ``sum_S M < ell * min_{not S} M``; with ``M_S = ceil(sum_S M / ell)`` and
    ``a = sum_S M - (M_S - 1) ell``,

        lambda = (-r^2 + r (H_1 + H_{L+1})) / 2 + a (ell - a) / (4 ell)
                 - ell (ell - 1) / 4 * (sum_S M / ell)^2 + (1/2) sum_{i < j in S} M_i M_j,

    with multiplicity ``a (ell - a) + 1`` (:func:`dln_multiplicity`). For L = 2 it is
    :func:`aoyagi_lambda` (tested).
    """
    widths = [int(h) for h in widths]
    if len(widths) < 3:
        raise ValueError(f"a deep linear network needs >= 2 layers (3 widths), got {widths}")
    if not 0 <= r <= min(widths):
        raise ValueError(f"true rank r={r} must lie in [0, min(widths)={min(widths)}]")
    subset = _dln_subset(widths, r)
    ell, total = len(subset) - 1, sum(subset)
    a = total - (math.ceil(Fraction(total, ell)) - 1) * ell
    pairs = sum(
        subset[i] * subset[j] for i in range(len(subset)) for j in range(i + 1, len(subset))
    )
    lam = (
        Fraction(-(r**2) + r * (widths[0] + widths[-1]), 2)
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction(ell * (ell - 1), 4) * Fraction(total, ell) ** 2
        + Fraction(pairs, 2)
    )  # exact rational arithmetic
    return float(lam)


def dln_multiplicity(widths: list[int], r: int) -> int:
    """The order of the pole that goes with :func:`dln_lambda` (Aoyagi 2024, Theorem 1)."""
    subset = _dln_subset([int(h) for h in widths], r)
    ell, total = len(subset) - 1, sum(subset)
    a = total - (math.ceil(Fraction(total, ell)) - 1) * ell
    return a * (ell - a) + 1


# ---------------------------------------------------------------- models and data


class ScaledLinear(nn.Module):
    """Linear map ``x -> x (W / s)^T`` without bias; ``s`` a fixed buffer (1 by default) that
    lets :func:`rescale` reparametrise the model (W -> cW, s -> cs) without changing it."""

    def __init__(self, q_in: int, q_out: int, scale: float = 1.0, dtype=torch.float64):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(q_out, q_in, dtype=dtype))
        self.register_buffer("scale", torch.tensor(float(scale), dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.weight / self.scale).T


def regular_problem(q_in: int = 4, q_out: int = 1, n: int = 200, seed: int = 0,
                    dtype=torch.float64) -> KnownAnswer:  # fmt: skip
    """Linear regression with q = q_in * q_out parameters, full-rank Gaussian design, noisy
    targets, w* the least-squares fit: lambda = q / 2 (SPEC section 4)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, q_in, generator=g, dtype=dtype)
    w0 = torch.randn(q_out, q_in, generator=g, dtype=dtype)
    y = x @ w0.T + 0.3 * torch.randn(n, q_out, generator=g, dtype=dtype)
    model = ScaledLinear(q_in, q_out, dtype=dtype)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    q = q_in * q_out
    return KnownAnswer(model, x, y, half_mse, q / 2, q)


def _linear_stack(widths: list[int], dtype) -> nn.Sequential:
    return nn.Sequential(
        *[
            nn.Linear(a, b, bias=False, dtype=dtype)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        ]
    )


def _true_layers(widths: list[int], r: int, g: torch.Generator, dtype) -> list[torch.Tensor]:
    """Layer matrices (out x in) whose product has rank r, using only the first r units of every
    hidden layer: a random r x in, r x r, ..., out x r core padded with zeros."""
    layers = []
    last = len(widths) - 2
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        w = torch.zeros(b, a, dtype=dtype)
        rows = b if i == last else r
        cols = a if i == 0 else r
        w[:rows, :cols] = torch.randn(rows, cols, generator=g, dtype=dtype)
        layers.append(w)
    return layers


def _linear_problem(widths: list[int], r: int, lam: float, seed: int, dtype) -> KnownAnswer:
    g = torch.Generator().manual_seed(seed)
    model = _linear_stack(widths, dtype)
    layers = _true_layers(widths, r, g, dtype)
    with torch.no_grad():
        for lin, w in zip(model, layers, strict=True):
            lin.weight.copy_(w)
    product = layers[0]
    for w in layers[1:]:
        product = w @ product
    M = widths[0]
    x = math.sqrt(M) * torch.eye(M, dtype=dtype)  # X^T X = n I with n = M rows
    d = sum(p.numel() for p in model.parameters())
    return KnownAnswer(model, x, x @ product.T, half_mse, lam, d)


def reduced_rank_problem(M: int, N: int, H: int, r: int, seed: int = 0,
                         dtype=torch.float64) -> KnownAnswer:  # fmt: skip
    """``x -> B A x`` (A: H x M, B: N x H) at a true parameter of rank r, data with
    ``X^T X = n I`` and no noise, so ``L_n(A, B) = |BA - B0 A0|_F^2 / 2``; lambda from
    :func:`aoyagi_lambda`."""
    return _linear_problem([M, H, N], r, aoyagi_lambda(M, N, H, r), seed, dtype)


def deep_linear_problem(widths: list[int], r: int, seed: int = 0,
                        dtype=torch.float64) -> KnownAnswer:  # fmt: skip
    """Deep linear network with layer widths ``widths`` (input first) at a true parameter whose
    product has rank r, data as in :func:`reduced_rank_problem`; lambda from
    :func:`dln_lambda`."""
    return _linear_problem(list(widths), r, dln_lambda(widths, r), seed, dtype)


def rescale(model: nn.Module, c: float) -> nn.Module:
    """A copy of ``model`` with the same function and rescaled parameters (module docstring):
    a stack of bias-free linear layers gets layer 1 times c and layer 2 divided by c; a
    :class:`ScaledLinear` gets W times c and its scale buffer times c."""
    if not c > 0:
        raise ValueError(f"rescaling factor must be > 0, got {c}")
    out = copy.deepcopy(model)
    with torch.no_grad():
        if isinstance(out, ScaledLinear):
            out.weight.mul_(c)
            out.scale.mul_(c)
            return out
        layers = list(out) if isinstance(out, nn.Sequential) else []
        if len(layers) < 2 or not all(isinstance(m, nn.Linear) and m.bias is None for m in layers):
            raise ValueError("rescale needs a ScaledLinear or a stack of >= 2 bias-free Linear")
        layers[0].weight.mul_(c)
        layers[1].weight.div_(c)
    return out


# ---------------------------------------------------------------- independent counts


def _flat_outputs(model: nn.Module, x: torch.Tensor):
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    buffers = dict(model.named_buffers())

    def f(theta):
        params, off = {}, 0
        for name, shape, k in zip(names, shapes, sizes, strict=True):
            params[name] = theta[off : off + k].view(shape)
            off += k
        return torch.func.functional_call(model, (params, buffers), (x,)).reshape(-1)

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return f, theta


def jacobian_rank(model: nn.Module, x: torch.Tensor, *, at: str = "w*", seed: int = 0) -> int:
    """Rank of the Jacobian of the outputs on ``x`` with respect to all parameters, in float64:
    at the model's parameters (``at="w*"``) or at a random Gaussian point (``at="generic"``,
    drawn from ``seed``; the rank there is the generic one with probability 1)."""
    f, theta = _flat_outputs(copy.deepcopy(model).double(), x.double())
    if at == "generic":
        g = torch.Generator().manual_seed(seed)
        theta = torch.randn(theta.shape, generator=g, dtype=torch.float64)
    elif at != "w*":
        raise ValueError(f"at={at!r}: choose 'w*' or 'generic'")
    jac = torch.func.jacrev(f)(theta)
    return int(torch.linalg.matrix_rank(jac))


def loss_hessian(problem: KnownAnswer) -> torch.Tensor:
    """Hessian of the training loss at w*, in float64, parameters flattened in
    ``named_parameters()`` order."""
    model64 = copy.deepcopy(problem.model).double()
    names = [name for name, _ in model64.named_parameters()]
    shapes = [p.shape for _, p in model64.named_parameters()]
    sizes = [p.numel() for _, p in model64.named_parameters()]
    buffers = dict(model64.named_buffers())
    x, y = problem.x.double(), problem.y.double()

    def loss(theta):
        params, off = {}, 0
        for name, shape, k in zip(names, shapes, sizes, strict=True):
            params[name] = theta[off : off + k].view(shape)
            off += k
        return problem.loss_fn(torch.func.functional_call(model64, (params, buffers), (x,)), y)

    theta = torch.cat([p.detach().reshape(-1) for p in model64.parameters()])
    return torch.func.hessian(loss)(theta)


def loss_hessian_rank(problem: KnownAnswer) -> int:
    """Rank of the Hessian of the training loss at w* (float64)."""
    return int(torch.linalg.matrix_rank(loss_hessian(problem)))


# ---------------------------------------------------------------- exact values at finite nbeta


def regular_expected_llc(
    problem: KnownAnswer, nbeta: float, gamma: float, weight_decay: float = 0.0
) -> float:
    """``nbeta (E[L_n] - L_n(w*))`` under the localised tempered posterior of SPEC section 4 for
    a model whose loss is exactly quadratic (the regular problem): the posterior
    ``exp(-nbeta L_n - gamma/2 |w - w*|^2 - wd/2 |w|^2)`` is Gaussian with precision
    ``A = nbeta H + (gamma + wd) I`` and mean ``w* + delta``, ``delta = -wd A^-1 w*``, so the
    value is ``(nbeta/2) (tr(H A^-1) + delta^T H delta)``; without weight decay it is
    ``(1/2) sum_i nbeta h_i / (nbeta h_i + gamma)``, which tends to q/2 as gamma / nbeta -> 0."""
    h = loss_hessian(problem)
    w_star = torch.cat([p.detach().reshape(-1) for p in problem.model.parameters()]).double()
    a = nbeta * h + (gamma + weight_decay) * torch.eye(len(h), dtype=torch.float64)
    delta = -weight_decay * torch.linalg.solve(a, w_star)
    value = torch.trace(torch.linalg.solve(a, h)) + delta @ h @ delta
    return float(0.5 * nbeta * value)


def cross_expected_llc(p: int, q: int, nbeta: float, gamma: float) -> float:
    """``nbeta E[L_n]`` for the rank-0, one-hidden-unit reduced-rank regression
    (``reduced_rank_problem(p, q, 1, 0)``: ``L_n(a, b) = |a|^2 |b|^2 / 2``, a in R^p, b in R^q,
    w* = 0) under ``exp(-nbeta L_n - gamma/2 (|a|^2 + |b|^2))``, by one-dimensional quadrature.

    Given ``s = |a|^2``, b is Gaussian with variance ``1 / (nbeta s + gamma)`` per coordinate, so
    ``E[nbeta L_n | s] = (q/2) nbeta s / (nbeta s + gamma)``, and s has the density
    ``s^(p/2 - 1) exp(-gamma s / 2) (nbeta s + gamma)^(-q/2)`` (the b integral done). The
    trapezoid rule on a fine grid in ``log s`` gives it to ~1e-6. As ``nbeta / gamma^2`` grows it
    tends to ``aoyagi_lambda(p, q, 1, 0) = min(p, q) / 2`` (for p != q)."""
    import numpy as np

    log_s = np.linspace(math.log(1e-14 / nbeta), math.log(400.0 / gamma), 200_001)
    s = np.exp(log_s)
    log_w = (p / 2) * log_s - gamma * s / 2 - (q / 2) * np.log(nbeta * s + gamma)
    w = np.exp(log_w - log_w.max())
    f = (q / 2) * nbeta * s / (nbeta * s + gamma)
    return float(np.trapezoid(f * w, log_s) / np.trapezoid(w, log_s))


def standard_problems() -> dict[str, KnownAnswer]:
    """Fresh copies of the problems the estimator tests use, by name: a regular model (lambda 3),
    reduced-rank regressions with lambda 2.5, 8 and 9 (all multiplicity 1, so no
    ``log log`` correction at finite nbeta) and a three-layer deep linear network (lambda 6.5,
    multiplicity 1). MALA (grokking_llc.sampling.mala) at nbeta 1000, gamma 1, 32 chains and 3,000
    transitions gives each within 2% (measured: 3.005, 2.517, 7.89, 9.01, 6.37; all but rrr
    6,4,3,2 are tests in tests/test_known_answers.py)."""
    return {
        "regular q=6": regular_problem(3, 2),
        "rrr 3,2,2,1": reduced_rank_problem(3, 2, 2, 1),
        "rrr 5,5,3,1": reduced_rank_problem(5, 5, 3, 1),
        "rrr 6,4,3,2": reduced_rank_problem(6, 4, 3, 2),
        "dln 4,3,3,4 r2": deep_linear_problem([4, 3, 3, 4], 2),
    }
