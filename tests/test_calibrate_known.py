"""Known answers recovered by the automatic calibration with its default search (issue 19;
SPEC sections 4 and 10): a regular model (lambda = d/2, also reparametrised), reduced-rank
regressions (Aoyagi and Watanabe 2005; lambda 2.5 and 9) and a three-layer deep linear network
(Aoyagi 2024). The chosen estimate is valid and within 10% of lambda, and so are the estimates of
the function-preserving rescalings the calibration runs (x2 and x0.5 of each layer pair); an
estimate at 100 times the chosen step is not valid; a full-batch MALA chain at the chosen nbeta
and gamma (grokking_llc.sampling.mala, the calibration's ``reference`` check) agrees within 5%.

Only the sampler's own settings are given (the data have n = M rows, so the batch is the whole
training set, with one batch for L(w*); 64 chains, which cost a tiny model no more per step than
4). The search (kinds, temperatures, the localisation ladder, step sizes) and its checks are the
calibration's defaults. Times are measured by benchmarks/bench_calibration.py, not here."""

from __future__ import annotations

import math

import pytest
import torch
from known_answers import deep_linear_problem, reduced_rank_problem, regular_problem, rescale

from grokking_llc.sampling import calibrate as cal
from grokking_llc.sampling.llc import estimate_llc

torch.set_num_threads(1)

PROBLEMS = {
    "regular q=6": lambda: regular_problem(3, 2),
    "regular q=6 reparametrised x3": lambda: _reparametrised(regular_problem(3, 2), 3.0),
    "rrr 3,2,2,1": lambda: reduced_rank_problem(3, 2, 2, 1),
    "rrr 6,4,3,2": lambda: reduced_rank_problem(6, 4, 3, 2),
    "dln 4,3,3,4 r2": lambda: deep_linear_problem([4, 3, 3, 4], 2),
}


def _reparametrised(problem, c):
    """The same function, parametrised as W' = c W with the model dividing by c."""
    return problem._replace(model=rescale(problem.model, c))


def base_for(problem) -> dict:
    return {"batch_size": len(problem.x), "num_init_loss_batches": 1, "num_chains": 64,
            "num_burnin_steps": 100}  # fmt: skip


@pytest.fixture(scope="module")
def calibrations():
    out = {}
    for name, make in PROBLEMS.items():
        problem = make()
        out[name] = (problem, cal.calibrate_sampler(
            problem.model, problem.x, problem.y, problem.loss_fn, base=base_for(problem), seed=0,
            reference="mala",
        ))  # fmt: skip
    return out


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_the_calibrated_estimate_is_valid_and_within_ten_percent(calibrations, name):
    problem, res = calibrations[name]
    assert res.chosen_valid, res.reason
    table = res.table
    row = table[table["chosen"] & (table["role"] == "candidate")].iloc[0]
    assert bool(row["valid"]) and row["status"] == "valid"
    assert row["llc_mean"] == pytest.approx(problem.llc, rel=0.10), (name, row["llc_mean"])
    assert bool(row["checks_passed"]) and row["check_failures"] == ""
    assert row["gamma_bias"] <= 0.05 and abs(row["eps_change"]) <= 0.05
    assert abs(row["nbeta_change"]) <= 0.10
    # the Metropolis-adjusted reference (full batch, exact for its posterior) agrees within 5%
    assert abs(row["reference_change"]) <= 0.05
    assert row["reference_llc"] == pytest.approx(problem.llc, rel=0.10)


@pytest.mark.parametrize("name", [n for n in PROBLEMS if not n.startswith("regular")])
def test_after_a_function_preserving_rescaling_too(calibrations, name):
    """The calibration's rescaling check runs the chosen setting at the layer-rescaled states
    (first two layers x2 and x0.5), each at its own stability edge: both estimates are valid
    and within 10% of lambda as well."""
    problem, res = calibrations[name]
    table = res.table
    for c in ("2", "0.5"):
        row = table[table["role"] == f"rescale x{c}"].iloc[0]
        assert bool(row["valid"]), row["invalid_reason"]
        assert row["llc_mean"] == pytest.approx(problem.llc, rel=0.10), (name, c)


def test_a_reparametrised_regular_model_gives_the_same_answer(calibrations):
    _, plain = calibrations["regular q=6"]
    _, moved = calibrations["regular q=6 reparametrised x3"]

    def chosen(res):
        t = res.table
        return t[t["chosen"] & (t["role"] == "candidate")].iloc[0]["llc_mean"]

    assert chosen(moved) == pytest.approx(chosen(plain), rel=0.05)


def test_a_step_100_times_the_chosen_one_is_not_valid(calibrations):
    problem, res = calibrations["rrr 6,4,3,2"]
    settings = {**res.chosen, "lr": 100 * res.chosen["lr"]}
    big = estimate_llc(problem.model, problem.x, problem.y, problem.loss_fn, settings, seed=1,
                       backend="fast")  # fmt: skip
    assert not big.valid and big.status == "invalid"
    assert not (math.isfinite(big.llc_mean) and big.step_ok and big.stationary)


def test_the_singular_answers_are_told_apart_from_d_over_2(calibrations):
    """The test has power: each singular lambda is far below d/2, which a localisation-
    dominated or unconverged estimate would drift towards or past."""
    for name in ("rrr 3,2,2,1", "rrr 6,4,3,2", "dln 4,3,3,4 r2"):
        problem, _ = calibrations[name]
        assert problem.d / 2 > 1.5 * problem.llc
