"""Known-answer problems (tests/known_answers.py) and the MALA reference recovering them.

The closed forms are checked by hand on cases worked out in the docstrings, against each other
(Aoyagi's 2024 deep-linear formula reduces to Aoyagi and Watanabe's 2005 reduced-rank one for
two layers), and against independent numerical counts: ``rank J(w*) / 2 <= lambda <=
rank J(generic) / 2 <= d / 2`` and, for the regular model, ``lambda = rank(Hessian) / 2``.

Then full-batch MALA (grokking_llc.sampling.mala) recovers each lambda within 5% at nbeta 1000,
gamma 1
(nbeta / gamma^2 = 1000, where the localisation's bias on a singular "cross" is ~2%: see
tests/test_mala.py's exact finite-temperature check), and doubling nbeta while halving gamma
moves the estimate by less than that tolerance, so the localised posterior is converged there.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from known_answers import (
    ScaledLinear,
    aoyagi_lambda,
    cross_expected_llc,
    deep_linear_problem,
    dln_lambda,
    dln_multiplicity,
    jacobian_rank,
    loss_hessian_rank,
    reduced_rank_problem,
    regular_problem,
    rescale,
)
from torch import nn

from grokking_llc.sampling.mala import estimate_llc_mala

torch.set_num_threads(1)


TOL = 0.05  # MALA vs lambda, and the move under 2 nbeta or gamma / 2


PROBLEMS = {
    "regular q=6": lambda: regular_problem(3, 2),
    "rrr 3,2,2,1": lambda: reduced_rank_problem(3, 2, 2, 1),
    "rrr 5,5,3,1": lambda: reduced_rank_problem(5, 5, 3, 1),
    "rrr 6,4,3,2": lambda: reduced_rank_problem(6, 4, 3, 2),
    "dln 4,3,3,4 r2": lambda: deep_linear_problem([4, 3, 3, 4], 2),
    "dln 5,3,3,5 r1": lambda: deep_linear_problem([5, 3, 3, 5], 1),
    "dln 4,3,3,3,4 r1": lambda: deep_linear_problem([4, 3, 3, 3, 4], 1),
}


# name: (problem, num_warmup, num_draws); every run has 32 chains, nbeta 1000 and gamma 1
MALA_CASES = {
    "regular q=6": (lambda: regular_problem(3, 2), 200, 800),
    "rrr 3,2,2,1 (lambda 2.5)": (lambda: reduced_rank_problem(3, 2, 2, 1), 500, 1500),
    "rrr 5,5,3,1 (lambda 8)": (lambda: reduced_rank_problem(5, 5, 3, 1), 1000, 2000),
    "dln 4,3,3,4 r2 (lambda 6.5)": (lambda: deep_linear_problem([4, 3, 3, 4], 2), 1000, 2000),
}


def test_aoyagi_formula_by_hand():
    assert aoyagi_lambda(3, 3, 3, 1) == 4.0  # (2*4*6 - 0 - 16) / 8
    assert aoyagi_lambda(3, 2, 2, 1) == 2.5  # (2*3*5 - 1 - 9) / 8
    assert aoyagi_lambda(3, 3, 3, 0) == 3.5  # 27/8 + 1/8 (odd sum)
    assert aoyagi_lambda(5, 5, 3, 1) == 8.0  # (2*4*10 - 0 - 16) / 8
    assert aoyagi_lambda(1, 4, 1, 1) == 2.0  # M + H < N + r: (1 - 1 + 4) / 2
    assert aoyagi_lambda(4, 1, 1, 1) == 2.0  # N + H < M + r: (1 - 1 + 4) / 2
    assert aoyagi_lambda(2, 2, 5, 2) == 2.0  # M + N < H + r: MN / 2
    assert aoyagi_lambda(3, 2, 1, 0) == 1.0  # one unit, r = 0: min(M, N) / 2
    with pytest.raises(ValueError, match="true rank"):
        aoyagi_lambda(2, 2, 1, 2)


def test_deep_linear_formula_by_hand():
    """Cases done by hand: a chain of one-unit layers with a zero true map is ``K = (abc)^2``
    (lambda 1/2, multiplicity 3, the textbook normal crossing); ``w^2 |u|^2 |v|^2`` with u, v in
    R^2 has lambda min(1/2, 1, 1) = 1/2 and multiplicity 1; a true map of full rank r =
    min(widths) through rank-r layers is minimally singular, lambda = (d - dim of the fibre)/2:
    2x2x2 (d 8, fibre GL(2), dim 4) gives 2; 3-1-1-3 with r = 1 (d 7, two free scalings) 5/2."""
    assert dln_lambda([1, 1, 1, 1], 0) == 0.5 and dln_multiplicity([1, 1, 1, 1], 0) == 3
    assert dln_lambda([2, 1, 1, 2], 0) == 0.5 and dln_multiplicity([2, 1, 1, 2], 0) == 1
    assert dln_lambda([2, 2, 2], 2) == 2.0
    assert dln_lambda([3, 1, 1, 3], 1) == 2.5
    assert dln_lambda([4, 3, 3, 4], 2) == 6.5 and dln_multiplicity([4, 3, 3, 4], 2) == 1
    with pytest.raises(ValueError, match="2 layers"):
        dln_lambda([3, 3], 1)
    with pytest.raises(ValueError, match="true rank"):
        dln_lambda([3, 1, 3], 2)


def test_deep_linear_formula_reduces_to_reduced_rank_regression():
    """Two layers: Aoyagi (2024) equals Aoyagi and Watanabe (2005) on every (M, N, H, r) with
    dimensions up to 6, including the odd-sum case (its 1/8 and multiplicity 2)."""
    count = 0
    for M, N, H in itertools.product(range(1, 7), repeat=3):
        for r in range(min(M, N, H) + 1):
            assert dln_lambda([M, H, N], r) == pytest.approx(aoyagi_lambda(M, N, H, r), abs=1e-12)
            count += 1
    assert count > 300
    assert dln_multiplicity([3, 3, 3], 0) == 2  # odd M + H + N + r


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_closed_form_lies_between_independent_rank_counts(name):
    """``rank J(w*)/2 <= lambda <= rank J(generic)/2 <= d/2`` (tests/known_answers.py says why);
    the regular model sits on both bounds and equals half its Hessian's rank; the singular ones
    lie strictly between the bounds and below d/2."""
    problem = PROBLEMS[name]()
    assert problem.d == sum(p.numel() for p in problem.model.parameters())
    low = jacobian_rank(problem.model, problem.x) / 2
    high = jacobian_rank(problem.model, problem.x, at="generic") / 2
    assert low <= problem.llc <= high <= problem.d / 2
    if name.startswith("regular"):
        assert low == problem.llc == high == problem.d / 2
        assert loss_hessian_rank(problem) == 2 * problem.llc
    else:
        assert low < problem.llc < high and problem.llc < problem.d / 2


def test_generic_rank_of_reduced_rank_regression_is_the_dimension_of_its_image():
    """The generic Jacobian rank counted above is the dimension of the rank-<=H matrices,
    ``H (M + N - H)`` for H <= min(M, N), else MN (so the upper bound is the right count)."""
    for M, N, H in [(3, 2, 2), (5, 5, 3), (6, 4, 3), (2, 2, 5)]:
        problem = reduced_rank_problem(M, N, H, 0)
        expected = H * (M + N - H) if H <= min(M, N) else M * N
        assert jacobian_rank(problem.model, problem.x, at="generic") == expected


def test_data_make_the_empirical_loss_the_population_loss():
    """For RRR and DLN: ``L_n(w) = |prod(w) - P|_F^2 / 2`` at any w (X^T X = n I, no noise),
    and w* is an exact zero of it; the regular model's w* is a least-squares minimum."""
    g = torch.Generator().manual_seed(4)
    for problem in (reduced_rank_problem(5, 5, 3, 1), deep_linear_problem([4, 3, 3, 4], 2)):
        layers = [m.weight.detach() for m in problem.model]
        truth = layers[0]
        for w in layers[1:]:
            truth = w @ truth
        with torch.no_grad():
            assert float(problem.loss_fn(problem.model(problem.x), problem.y)) < 1e-24
            moved = [w + 0.1 * torch.randn(w.shape, generator=g, dtype=w.dtype) for w in layers]
            for m, w in zip(problem.model, moved, strict=True):
                m.weight.copy_(w)
            prod = moved[0]
            for w in moved[1:]:
                prod = w @ prod
            got = float(problem.loss_fn(problem.model(problem.x), problem.y))
            for m, w in zip(problem.model, layers, strict=True):
                m.weight.copy_(w)
        assert got == pytest.approx(0.5 * float((prod - truth).square().sum()), rel=1e-10)
    reg = regular_problem(3, 2)
    w = reg.model.weight.detach().clone().requires_grad_(True)
    loss = reg.loss_fn(reg.x @ w.T, reg.y)
    (grad,) = torch.autograd.grad(loss, w)
    assert float(grad.abs().max()) < 1e-10


def test_rescaling_preserves_the_function_and_moves_the_parameters():
    for problem in (regular_problem(3, 2), reduced_rank_problem(3, 2, 2, 1),
                    deep_linear_problem([4, 3, 3, 4], 2)):  # fmt: skip
        moved = rescale(problem.model, 3.0)
        with torch.no_grad():
            torch.testing.assert_close(moved(problem.x), problem.model(problem.x))
        first = next(iter(moved.parameters()))
        torch.testing.assert_close(first, 3.0 * next(iter(problem.model.parameters())))
        assert moved is not problem.model
    assert isinstance(regular_problem().model, ScaledLinear)
    with pytest.raises(ValueError, match="bias-free"):
        rescale(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), 2.0)
    with pytest.raises(ValueError, match="> 0"):
        rescale(regular_problem().model, 0.0)


def test_cross_quadrature_tends_to_lambda_from_below():
    """The finite-temperature value of tests/test_mala.py's singular cross rises to lambda = 1 as
    nbeta / gamma^2 grows (only that ratio matters: rescale a by gamma^(-1/2))."""
    values = [cross_expected_llc(3, 2, nb, 1.0) for nb in (1e2, 1e3, 1e4, 1e6)]
    assert values == sorted(values) and values[0] < 0.95 and 0.999 < values[-1] < 1.0
    assert cross_expected_llc(3, 2, 1e4, 10.0) == pytest.approx(values[0], rel=1e-6)


@pytest.mark.parametrize("name", list(MALA_CASES))
def test_mala_recovers_the_known_answer_and_is_converged_in_nbeta_and_gamma(name):
    """MALA at nbeta 1000, gamma 1 is lambda within 5% with a loss R-hat below 1.1; doubling
    nbeta and halving gamma (together, in one run: both raise a localised singular estimate
    toward lambda, so they cannot cancel) moves it by less than 5%. (The distance R-hat of the
    singular problems stays above 1.1 at these lengths although the estimate is right: their
    flat directions reach the prior radius slowly, and the LLC hardly depends on them.)"""
    make, warmup, draws = MALA_CASES[name]
    problem = make()

    def run(nbeta, gamma):
        return estimate_llc_mala(
            problem.model, problem.x, problem.y, problem.loss_fn, nbeta=nbeta,
            localization=gamma, num_chains=32, num_warmup=warmup, num_draws=draws, seed=0,
        )  # fmt: skip

    base = run(1000.0, 1.0)
    assert base.llc_mean == pytest.approx(problem.llc, rel=TOL)
    assert base.r_hat < 1.1 and base.r_hat_tail < 1.1 and not base.diverged.any()
    assert base.llc_se < 0.02 * problem.llc  # the tolerance is not eaten by noise
    colder = run(2000.0, 0.5)  # nbeta / gamma^2 x 8: both moves at once, one run
    assert colder.llc_mean == pytest.approx(base.llc_mean, rel=TOL)
    assert colder.llc_mean == pytest.approx(problem.llc, rel=TOL)
