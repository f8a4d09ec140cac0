"""The calibration's selection rule (grokking_llc.calibrate module docstring, steps 1-4; SPEC
section 10) on scripted estimates: ``estimate_llc`` is replaced by a function that returns
hand-chosen results per (kind, step size, nbeta, gamma, rescaling factor, checkpoint seed), so
every branch of the walk, the checks and the fallback is exercised in milliseconds and the
expected choice, table and reason follow from the docstring's rule by hand. Cases found
unchecked by the mutation run (docs/mutation.md)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

import grokking_llc.calibrate as cal
from grokking_llc.llc import LLCResult
from grokking_llc.model import QuadraticNet


def result(llc, *, se=0.01, stationary=True, step_ok=True, dominated=False, valid=None,
           r_hat=1.01, reason="") -> LLCResult:  # fmt: skip
    if valid is None:
        valid = stationary and step_ok and not dominated and llc > 0
    return LLCResult(
        llc_mean=llc, llc_std=0.0, llc_per_chain=np.full(4, llc), loss_trace=np.zeros((4, 3)),
        init_loss=0.0, nbeta=1.0, num_burnin_steps=0, llc_se=se, r_hat=r_hat,
        stationary=stationary, step_ok=step_ok, localisation_dominated=dominated, valid=valid,
        invalid_reason=reason if reason or valid else "not valid",
    )  # fmt: skip


class Script:
    """Stands in for estimate_llc: ``outcome(kind, lr, nbeta, gamma, c, seed)`` -> LLCResult, where
    c is the rescaling factor read off the loaded weights (W[0, 0] / W*[0, 0])."""

    def __init__(self, outcome, w00: float):
        self.outcome, self.w00, self.calls = outcome, w00, []

    def __call__(self, model, x, y, loss_fn, settings, *, seed, backend, device, diag_every):
        c = round(float(model.W.detach()[0, 0]) / self.w00, 6)
        call = (settings.get("kind", "sgld"), settings["lr"], settings["nbeta"],
                settings["localization"], c, seed)  # fmt: skip
        self.calls.append(call)
        return self.outcome(*call)


def make_targets(n=1):
    model = QuadraticNet(3, width=2, generator=torch.Generator().manual_seed(0))
    state = {k: v.detach().clone() for k, v in model.named_parameters()}
    x = torch.tensor([[0, 1], [1, 2], [2, 0], [1, 1]])
    y = torch.zeros(4, 3)
    return [
        cal.Target(
            model,
            state,
            x,
            y,
            lambda p, t: ((p - t) ** 2).mean(),
            seed=10 + k,
            labels={"step": 100 * k},
        )  # fmt: skip
        for k in range(n)
    ]


BASE = {"num_chains": 4, "num_burnin_steps": 0}
GRID = {"kind": ["sgld"], "lr": [1e-4, 1e-2, 1e-3], "nbeta": [10.0], "localization": [100.0]}


def run(monkeypatch, outcome, *, targets=None, grid=GRID, **kw):
    targets = targets or make_targets()
    script = Script(outcome, float(targets[0].state["W"][0, 0]))
    monkeypatch.setattr(cal, "estimate_llc", script)
    kw.setdefault("symmetry", cal.quadratic_rescaling)
    res = cal.calibrate_targets(targets, base=BASE, grid=grid, num_steps=100, **kw)
    return res, script


def walk_outcome(kind, lr, nbeta, gamma, c, seed):
    """Step 1 by hand: 1e-2 is inaccurate (MALA), 1e-3 and 1e-4 agree within 10%."""
    if lr == 1e-2:
        return result(5.0, step_ok=False)
    if nbeta == 5.0:
        return result(3.8)  # the half-temperature run: elasticity log2(3.9 / 3.8)
    return result(4.0 if lr == 1e-3 else 3.9)


def settings(lr, nbeta=10.0, gamma=100.0, kind="sgld"):
    s = {**BASE, "lr": lr, "nbeta": nbeta, "localization": gamma, "num_draws": 100}
    return s if kind == "sgld" else {**s, "kind": kind}


def test_a_valid_choice_with_its_table_and_reason(monkeypatch):
    res, script = run(monkeypatch, walk_outcome)
    assert res.chosen == settings(1e-4) and res.chosen_valid
    assert res.reason == (
        "sgld lr=0.0001 nbeta=10 gamma=100 is valid at all 1 checkpoint(s): stationary, "
        "accurate step, flat in eps, not localisation-dominated, not scaling with nbeta, "
        "invariant under rescaling."
    )
    assert script.calls == [
        ("sgld", 1e-2, 10.0, 100.0, 1.0, 10),
        ("sgld", 1e-3, 10.0, 100.0, 1.0, 10),
        ("sgld", 1e-4, 10.0, 100.0, 1.0, 10),
        ("sgld", 1e-4, 5.0, 100.0, 1.0, 10),
        ("sgld", 1e-4, 10.0, 100.0, 2.0, 10),
        ("sgld", 1e-4, 10.0, 100.0, 0.5, 10),
    ]
    t = res.table
    assert t["lr"].tolist() == [1e-2, 1e-3, 1e-4] and t["step"].tolist() == [0, 0, 0]
    assert t["eps_flat"].tolist() == [False, True, True]
    assert t["checks_passed"].isna().tolist() == [True, True, False]
    assert bool(t["checks_passed"].iloc[2])
    assert t["nbeta_elasticity"].iloc[2] == pytest.approx(math.log2(3.9 / 3.8))
    assert t["llc_nbeta_half"].iloc[2] == 3.8
    assert t["llc_rescaled_2"].iloc[2] == 3.9 and t["llc_rescaled_0.5"].iloc[2] == 3.9
    assert t["rescale_change"].iloc[2] == 0.0
    assert t["chosen"].tolist() == [False, False, True]
    assert t["chosen_valid"].tolist() == [False, False, True]
    assert [json.loads(s) for s in t["settings"]] == [settings(1e-2), settings(1e-3),
                                                      settings(1e-4)]  # fmt: skip
    assert (t["reason"] == res.reason).all()
    assert cal.chosen_sampler(t) == (settings(1e-4), True, res.reason)


def test_estimates_that_scale_with_nbeta_are_not_chosen(monkeypatch):
    def outcome(kind, lr, nbeta, gamma, c, seed):
        if nbeta == 5.0:
            return result(1.9)  # log2(3.9 / 1.9) > 0.5: proportional to nbeta
        return walk_outcome(kind, lr, nbeta, gamma, c, seed)

    res, _ = run(monkeypatch, outcome)
    assert not res.chosen_valid
    assert res.chosen == settings(1e-3)  # step 4: most checks passed, then larger lr
    assert res.reason == (
        "no setting (sgld) passed every check at every checkpoint; chose sgld lr=0.001 "
        "nbeta=10 gamma=100, the best stationary setting (valid alone but not flat in eps or "
        "failing the nbeta or rescaling checks), NOT valid."
    )
    assert res.table["checks_passed"].tolist() == [pd.NA, pd.NA, False]
    assert res.table["nbeta_elasticity"].iloc[2] == pytest.approx(math.log2(3.9 / 1.9))


@pytest.mark.parametrize("factor, ok", [(1.05, True), (1.3, False)])
def test_rescaling_check_within_ten_percent(monkeypatch, factor, ok):
    def outcome(kind, lr, nbeta, gamma, c, seed):
        if c == 2.0:
            return result(3.9 * factor)
        return walk_outcome(kind, lr, nbeta, gamma, c, seed)

    res, _ = run(monkeypatch, outcome)
    assert res.chosen_valid is ok
    assert res.table["rescale_change"].iloc[2] == pytest.approx(factor - 1.0)
    assert res.table["llc_rescaled_2"].iloc[2] == pytest.approx(3.9 * factor)


def test_without_a_symmetry_no_rescaled_run(monkeypatch):
    res, script = run(monkeypatch, walk_outcome, symmetry=None)
    assert res.chosen_valid and all(call[4] == 1.0 for call in script.calls)
    assert res.reason.endswith("not scaling with nbeta.")
    assert math.isnan(res.table["rescale_change"].iloc[2])


def test_a_targets_own_symmetry_is_used(monkeypatch):
    targets = make_targets()
    targets[0].symmetry = lambda st, c: {"W": st["W"] * (3.0 if c == 2.0 else 0.25),
                                         "V": st["V"]}  # fmt: skip
    res, script = run(monkeypatch, walk_outcome, targets=targets)
    assert {call[4] for call in script.calls} == {1.0, 3.0, 0.25}


def test_the_walk_stops_at_an_accurate_step_that_is_not_stationary(monkeypatch):
    def outcome(kind, lr, nbeta, gamma, c, seed):
        return result(4.0, stationary=lr == 1e-2, step_ok=lr != 1e-2, r_hat=1.5 + lr)

    res, script = run(monkeypatch, outcome)
    # 1e-2: stationary but inaccurate; 1e-3: accurate, not stationary -> stop, never 1e-4
    assert [call[1] for call in script.calls] == [1e-2, 1e-3]
    assert res.chosen == settings(1e-2) and not res.chosen_valid
    assert "the best stationary setting" in res.reason


def test_no_stationary_setting_falls_back_to_the_smallest_r_hat(monkeypatch):
    def outcome(kind, lr, nbeta, gamma, c, seed):
        return result(4.0, stationary=False, step_ok=False, r_hat={1e-2: 1.9, 1e-3: 1.3,
                                                                    1e-4: 1.6}[lr])  # fmt: skip

    res, _ = run(monkeypatch, outcome)
    assert res.chosen == settings(1e-3) and not res.chosen_valid
    assert res.reason == (
        "no setting (sgld) passed every check at every checkpoint; chose sgld lr=0.001 "
        "nbeta=10 gamma=100, no stationary setting: the smallest R-hat (1.3), NOT valid."
    )


def test_no_finite_estimate_chooses_nothing(monkeypatch):
    res, _ = run(monkeypatch, lambda *a: result(math.nan, stationary=False, step_ok=False))
    assert res.chosen is None and not res.chosen_valid
    assert res.reason == (
        "no setting (sgld) passed every check at every checkpoint; "
        "no setting gave a finite estimate"
    )
    assert not res.table["chosen"].any()
    with pytest.raises(ValueError, match="chose no setting"):
        cal.chosen_sampler(res.table)


def test_preconditioned_kinds_are_tried_when_sgld_fails(monkeypatch):
    def outcome(kind, lr, nbeta, gamma, c, seed):
        if kind == "sgld":
            return result(4.0, stationary=False, step_ok=False, r_hat=2.0)
        return walk_outcome(kind, lr, nbeta, gamma, c, seed)

    grid = {k: v for k, v in GRID.items() if k != "kind"}
    res, script = run(monkeypatch, outcome, grid=grid)
    assert res.chosen == settings(1e-4, kind="rmsprop") and res.chosen_valid
    assert {call[0] for call in script.calls} == {"sgld", "rmsprop"}
    assert res.reason.startswith("rmsprop lr=0.0001 nbeta=10 gamma=100 is valid")


@pytest.mark.parametrize("backend, tried", [("fast", "sgld, rmsprop, gn_diag"),
                                            ("devinterp", "sgld, rmsprop")])  # fmt: skip
def test_every_kind_failing_names_the_kinds_tried(monkeypatch, backend, tried):
    grid = {k: v for k, v in GRID.items() if k != "kind"}
    res, _ = run(monkeypatch, lambda *a: result(4.0, stationary=False, r_hat=1.2), grid=grid,
                 backend=backend)  # fmt: skip
    assert res.reason.startswith(f"no setting ({tried}) passed every check")


def test_localisation_dominated_picks_are_skipped_and_groups_walk_in_order(monkeypatch):
    grid = {"kind": ["sgld"], "lr": [1e-3, 1e-4], "nbeta": [10.0, 20.0],
            "localization": [100.0, 10.0]}  # fmt: skip

    def outcome(kind, lr, nbeta, gamma, c, seed):
        dominated = nbeta == 20.0 and gamma == 10.0
        return result(4.0 if lr == 1e-3 else 3.9, dominated=dominated)

    res, script = run(monkeypatch, outcome, grid=grid)
    # groups: (20, 10) dominated -> skipped; (20, 100) checked and chosen
    assert res.chosen == settings(1e-4, nbeta=20.0, gamma=100.0) and res.chosen_valid
    groups = list(dict.fromkeys((c[2], c[3]) for c in script.calls if c[4] == 1.0))
    assert groups == [(20.0, 10.0), (20.0, 100.0), (10.0, 100.0)]
    assert (10.0, 10.0) not in groups  # the walk ended at the first setting that passed


def test_exhaustive_walks_every_group_and_max_checks_limits_the_checks(monkeypatch):
    grid = {"kind": ["sgld"], "lr": [1e-3, 1e-4], "nbeta": [10.0, 20.0],
            "localization": [100.0]}  # fmt: skip

    def outcome(kind, lr, nbeta, gamma, c, seed):
        return result(4.0 if lr == 1e-3 else 3.9)

    res, script = run(monkeypatch, outcome, grid=grid, exhaustive=True)
    assert res.chosen == settings(1e-4, nbeta=20.0)
    assert {(c[2], c[1]) for c in script.calls} >= {(10.0, 1e-3), (10.0, 1e-4)}

    def failing(kind, lr, nbeta, gamma, c, seed):
        return result(1.0) if nbeta in (5.0, 10.0) else outcome(kind, lr, nbeta, gamma, c, seed)

    # nbeta 20's pick fails the elasticity check (llc 3.9 at 20, 1.0 at 10); with one check
    # allowed the valid nbeta-10 pick is never checked
    res, _ = run(monkeypatch, failing, grid=grid, max_checks=1)
    assert not res.chosen_valid
    res, _ = run(monkeypatch, failing, grid=grid, max_checks=2)
    assert res.chosen_valid and res.chosen == settings(1e-4, nbeta=10.0)  # 1.0 at 10 and 5


def test_checks_run_at_every_checkpoint_final_first(monkeypatch):
    targets = make_targets(2)

    def outcome(kind, lr, nbeta, gamma, c, seed):
        if seed == 10 and lr == 1e-4 and nbeta == 10.0 and c == 1.0:
            return result(3.9, valid=False, reason="r_hat 1.3 >= 1.1")
        return walk_outcome(kind, lr, nbeta, gamma, c, seed)

    res, script = run(monkeypatch, outcome, targets=targets)
    assert not res.chosen_valid
    # the final checkpoint (seed 11) is checked first, then checkpoint 0 (seed 10), which fails
    checked = [c[5] for c in script.calls if c[1] == 1e-4 and c[2] == 10.0 and c[4] == 1.0]
    assert checked == [11, 10]
    t = res.table
    assert list(zip(t["target"], t["lr"], strict=True)) == [
        (0, 1e-4), (1, 1e-2), (1, 1e-3), (1, 1e-4),
    ]  # fmt: skip
    assert t["step"].tolist() == [0, 100, 100, 100]
    assert t["checks_passed"].tolist() == [False, pd.NA, pd.NA, True]
    # step 4 at the final checkpoint: 1e-4 passed its checks there (score 5): chosen, not valid
    assert t[t["chosen"]]["target"].tolist() == [0, 1]
    assert set(t[t["chosen"]]["lr"]) == {1e-4}


def test_the_fallback_setting_is_run_at_every_checkpoint(monkeypatch):
    targets = make_targets(2)

    def outcome(kind, lr, nbeta, gamma, c, seed):
        if seed == 11 and nbeta == 5.0:
            return result(1.9)  # fails the elasticity check at the final checkpoint
        return walk_outcome(kind, lr, nbeta, gamma, c, seed)

    res, script = run(monkeypatch, outcome, targets=targets)
    checked = [c[5] for c in script.calls if c[1] == 1e-4 and c[2] == 10.0 and c[4] == 1.0]
    assert checked == [11]  # the first failure ends the checks
    t = res.table
    # 1e-3 and 1e-4 both score 4 at the final checkpoint; the larger step size wins the tie
    assert res.chosen == settings(1e-3) and not res.chosen_valid
    assert list(zip(t["target"], t["lr"], strict=True)) == [
        (0, 1e-3), (1, 1e-2), (1, 1e-3), (1, 1e-4),
    ]  # fmt: skip
    assert t[t["chosen"]]["target"].tolist() == [0, 1]
    assert ("sgld", 1e-3, 10.0, 100.0, 1.0, 10) in script.calls


def test_calibration_refuses_bad_arguments():
    with pytest.raises(ValueError, match="at least one target"):
        cal.calibrate_targets([])
    with pytest.raises(ValueError, match="num_steps 20 leaves too few draws after the burn-in"):
        cal.calibrate_targets(make_targets(), base={"num_burnin_steps": 5}, num_steps=20)
    with pytest.raises(ValueError, match="at least one checkpoint"):
        cal.calibrate_checkpoints(make_targets()[0].model, [], None, None, None)


def test_settings_of_the_runner():
    runner = cal._Runner(make_targets(), {"num_burnin_steps": 30, "kind": "x"}, 130, "fast",
                         "cpu", None)  # fmt: skip
    assert runner.settings("sgld", 1e-3, 8.0, 50.0) == {
        "num_burnin_steps": 30, "lr": 1e-3, "nbeta": 8.0, "localization": 50.0,
        "num_draws": 100,
    }  # fmt: skip
    assert runner.settings("gn_diag", 1e-3, 8.0, 50.0)["kind"] == "gn_diag"


def test_setting_mask_and_best_fallback_on_a_table():
    table = pd.DataFrame({
        "target": [0, 0, 0], "kind": ["sgld"] * 3, "lr": [1e-3, 1e-4, 1e-4],
        "nbeta": [10.0, 10.0, 20.0], "localization": [100.0] * 3,
        "llc_mean": [1.0, -1.0, 2.0], "stationary": [True, True, True],
        "step_ok": [True, True, True], "localisation_dominated": [False, False, True],
        "eps_flat": pd.array([True, True, None], dtype="boolean"),
        "checks_passed": pd.array([None, None, None], dtype="boolean"),
        "r_hat": [1.0, 1.0, 1.0], "invalid_reason": ["", "estimate <= 0", "dominated"],
    })  # fmt: skip
    # scores: 1+1+1+0+1 = 4, 1+1+1+0+0 = 3, 1+0+0+0+1 = 2
    key, why = cal._best_fallback(table)
    assert key == ("sgld", 1e-3, 10.0, 100.0)
    assert why == (
        "the best stationary setting (valid alone but not flat in eps or failing the nbeta or "
        "rescaling checks)"
    )
    assert cal._setting_mask(table, ("sgld", 1e-4, 10.0, 100.0)).tolist() == [False, True, False]
    assert cal._setting_mask(table, None).tolist() == [False] * 3
    # step sizes and nbeta are matched to 1e-12 relative (plus numpy's atol 1e-8)
    near = table.assign(lr=[1.0, 1.000001, 1.0], nbeta=[10.0, 10.0, 10.000001])
    assert cal._setting_mask(near, ("sgld", 1.0, 10.0, 100.0)).tolist() == [True, False, False]


def test_setting_mask_tells_tiny_step_sizes_apart():
    """Was a bug (np.isclose's default atol=1e-8 made step sizes below ~1e-8 one setting)."""
    table = pd.DataFrame({"kind": ["sgld"] * 2, "lr": [1e-9, 3e-9], "nbeta": [1e4] * 2,
                          "localization": [100.0] * 2})  # fmt: skip
    assert cal._setting_mask(table, ("sgld", 1e-9, 1e4, 100.0)).tolist() == [True, False]
    assert cal._best_fallback(table.iloc[:0]) == (None, "nothing was run")


def test_default_grid_is_the_documented_one():
    """Module docstring: nbeta = (n / ln n) * {1, 8, 64} (4 significant digits), gamma in
    {10, 100, 1000}, lr_scaled in {1, 0.3, 0.1, 0.03, 0.01}."""
    base = 100 / math.log(100)  # 21.71
    assert cal.default_grid(100) == {
        "nbeta": [21.71, 173.7, 1390.0],
        "localization": [10.0, 100.0, 1000.0],
        "lr_scaled": [1.0, 0.3, 0.1, 0.03, 0.01],
    }
    assert [float(f"{base * f:.4g}") for f in (1, 8, 64)] == [21.71, 173.7, 1390.0]
    assert cal.default_grid(2)["nbeta"] == [1.0, 8.0, 64.0]  # n / ln n needs n > 2


# ------------------------------------------------------------------ symmetries, by hand


def test_quadratic_rescaling_scales_w_by_c_and_v_by_one_over_c_squared():
    state = {"W": torch.tensor([[1.0, -2.0]]), "V": torch.tensor([[4.0], [8.0]])}
    out = cal.quadratic_rescaling(state, 2.0)
    assert set(out) == {"W", "V"}
    assert torch.equal(out["W"], torch.tensor([[2.0, -4.0]]))
    assert torch.equal(out["V"], torch.tensor([[1.0], [2.0]]))
    assert torch.equal(state["W"], torch.tensor([[1.0, -2.0]]))  # the input is not changed


def test_layer_rescaling_scales_two_named_tensors_and_keeps_the_rest():
    state = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([6.0]), "c": torch.tensor([5.0])}
    out = cal.layer_rescaling("a", "b")(state, 3.0)
    assert torch.equal(out["a"], torch.tensor([3.0, 6.0]))
    assert torch.equal(out["b"], torch.tensor([2.0]))
    assert out["c"] is state["c"]
    assert torch.equal(state["a"], torch.tensor([1.0, 2.0]))


def test_model_symmetry_of_known_and_unknown_architectures():
    from torch import nn

    quad = QuadraticNet(3, width=2, generator=torch.Generator().manual_seed(0))
    assert cal.model_symmetry(quad) is cal.quadratic_rescaling
    deep = nn.Sequential(nn.Linear(2, 3, bias=False), nn.Linear(3, 3, bias=False),
                         nn.Linear(3, 1, bias=False))  # fmt: skip
    sym = cal.model_symmetry(deep)
    state = {
        "0.weight": torch.ones(3, 2),
        "1.weight": torch.ones(3, 3),
        "2.weight": torch.ones(1, 3),
    }
    out = sym(state, 4.0)
    assert torch.equal(out["0.weight"], torch.full((3, 2), 4.0))
    assert torch.equal(out["1.weight"], torch.full((3, 3), 0.25))
    assert torch.equal(out["2.weight"], torch.ones(1, 3))
    two = nn.Sequential(nn.Linear(2, 3, bias=False), nn.Linear(3, 1, bias=False))
    assert cal.model_symmetry(two) is not None
    # one layer; a bias; a non-linear layer in between; not a Sequential: no known symmetry
    assert cal.model_symmetry(nn.Sequential(nn.Linear(2, 1, bias=False))) is None
    assert cal.model_symmetry(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1, bias=False))) is None
    assert cal.model_symmetry(nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(),
                                            nn.Linear(3, 1, bias=False))) is None  # fmt: skip
    assert cal.model_symmetry(nn.Linear(2, 1, bias=False)) is None


# ------------------------------------------------------------------ curvature, by hand
# A bias-free linear map w -> X w with X = diag(3, 2, 1) and the loss mean((Xw - 0)^2) over the 3
# rows: H = (2/3) X^T X = diag(6, 8/3, 2/3), gradient H w.


def linear_problem(scale=1.0):
    from torch import nn

    model = nn.Linear(3, 1, bias=False)
    x = torch.diag(torch.tensor([3.0, 2.0, 1.0])) * scale
    y = torch.zeros(3, 1)
    return model, x, y, lambda p, t: ((p - t) ** 2).mean()


H_DIAG = torch.tensor([6.0, 8.0 / 3.0, 2.0 / 3.0])


def test_top_curvature_is_the_largest_eigenvalue_of_a_known_hessian():
    model, x, y, loss = linear_problem()
    params = {"weight": torch.ones(1, 3)}
    assert cal.top_curvature(model, params, x, y, loss) == pytest.approx(6.0, rel=1e-6)
    # negative curvature: |eigenvalue|
    neg = cal.top_curvature(model, params, x, y, lambda p, t: -((p - t) ** 2).mean())
    assert neg == pytest.approx(6.0, rel=1e-6)
    # preconditioned: G^(1/2) H G^(1/2) = diag(6 * 1, 8/3 * 4, 2/3 / 4)
    G = {"weight": torch.tensor([[1.0, 4.0, 0.25]])}
    got = cal.top_curvature(model, params, x, y, loss, precond=G)
    assert got == pytest.approx(32.0 / 3.0, rel=1e-6)
    # with one iteration the Rayleigh quotient of a random start is below the largest value
    assert cal.top_curvature(model, params, x, y, loss, iters=1) < 5.9
    # a loss that does not depend on the parameters: zero curvature
    flat = cal.top_curvature(model, params, x, y, lambda p, t: (p * 0.0).sum())
    assert flat == 0.0


def test_preconditioner_of_each_kind_by_hand():
    from grokking_llc.sgld import SamplerOptions, gauss_newton_diagonal

    model, x, y, loss = linear_problem()
    params = {"weight": torch.ones(1, 3)}
    assert cal._preconditioner(model, params, x, y, loss, SamplerOptions(), 3, 0) is None
    # rmsprop with the full batch: every minibatch gradient is H w = (6, 8/3, 2/3)
    opts = SamplerOptions(kind="rmsprop", rmsprop_eps=0.5)
    G = cal._preconditioner(model, params, x, y, loss, opts, 3, 7)
    assert list(G) == ["weight"]
    want = 1.0 / (H_DIAG + 0.5)
    torch.testing.assert_close(G["weight"], want.reshape(1, 3), rtol=1e-5, atol=0)
    # batch size 1 on two rows whose gradients at w = 0 are +-2 e1: E[g^2] = 4 on e1 (the full
    # batch's gradient would be 0)
    x2, y2 = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), torch.tensor([[1.0], [-1.0]])
    zero = {"weight": torch.zeros(1, 3)}
    G1 = cal._preconditioner(model, zero, x2, y2, loss, opts, 1, 3)
    torch.testing.assert_close(G1["weight"], torch.tensor([[1 / 2.5, 1 / 0.5, 1 / 0.5]]))
    G2 = cal._preconditioner(model, zero, x2, y2, loss, opts, 2, 3)
    torch.testing.assert_close(G2["weight"], torch.full((1, 3), 1 / 0.5))
    # gn_diag: the damped Gauss-Newton diagonal 1 / (h + damping * mean(h))
    gopts = SamplerOptions(kind="gn_diag", gn_damping=0.5, gn_probes=3)
    h = gauss_newton_diagonal(model, params, x, y, loss, num_probes=3, seed=0)["weight"]
    G = cal._preconditioner(model, params, x, y, loss, gopts, 3, 5)
    torch.testing.assert_close(G["weight"], 1.0 / (h + 0.5 * float(h.mean())))
    # a small damping: the floor 0.01 * mean(h) is below 1 and still used
    small = SamplerOptions(kind="gn_diag", gn_damping=0.01, gn_probes=3)
    G = cal._preconditioner(model, params, x, y, loss, small, 3, 5)
    assert 0 < 0.01 * float(h.mean()) < 1
    torch.testing.assert_close(G["weight"], 1.0 / (h + 0.01 * float(h.mean())))
    # a zero diagonal has no scale: 1 / (0 + 1)
    G0 = cal._preconditioner(model, params, x, y, lambda p, t: (p * 0.0).sum(), gopts, 3, 5)
    assert torch.equal(G0["weight"], torch.ones(1, 3))


def test_curvature_scale_is_the_maximum_over_targets():
    model, x, y, loss = linear_problem()
    targets = [
        cal.Target(model, {"weight": torch.ones(1, 3)}, x, y, loss, 0, {}),
        cal.Target(model, {"weight": torch.ones(1, 3)}, 2 * x, y, loss, 1, {}),  # H x 4
        cal.Target(model, {"weight": torch.ones(1, 3)}, x, y, loss, 2, {}),
    ]
    runner = cal._Runner(targets, {"batch_size": 3}, 100, "fast", "cpu", None)
    lam, gmax = cal._curvature_scale(runner, "sgld")
    assert lam == pytest.approx(24.0, rel=1e-6) and gmax == 1.0
    # rmsprop, delta 0.1 (the default), full batches: G = 1 / (|H w| + 0.1). At w = (0, 1, 1) of
    # the 2x target: H = (24, 32/3, 8/3), G = (10, 1 / 10.77, 1 / 2.77), G H = (240, 0.99, 0.96);
    # at w = (1, 1, 1) of the others all G H < 1 and G <= 1 / (2/3 + 0.1)
    targets[1].state = {"weight": torch.tensor([[0.0, 1.0, 1.0]])}
    lam, gmax = cal._curvature_scale(runner, "rmsprop")
    assert lam == pytest.approx(240.0, rel=1e-5) and gmax == pytest.approx(10.0, rel=1e-6)
    # the batch size comes from base (default: SamplerConfig's, capped at the data size): two
    # rows e1 with targets +-1 at w = 0: H = 2 e1 e1^T; batches of one see gradients +-2 e1,
    # G = (1 / 2.1, 10, 10); the full batch sees 0, G = 10
    x2, y2 = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), torch.tensor([[1.0], [-1.0]])
    t1 = [cal.Target(model, {"weight": torch.zeros(1, 3)}, x2, y2, loss, 0, {})]
    one = cal._Runner(t1, {"batch_size": 1}, 100, "fast", "cpu", None)
    assert cal._curvature_scale(one, "rmsprop") == (pytest.approx(2 / 2.1, rel=1e-5),
                                                    pytest.approx(10.0))  # fmt: skip
    full = cal._Runner(t1, {}, 100, "fast", "cpu", None)
    assert cal._curvature_scale(full, "rmsprop") == (pytest.approx(20.0, rel=1e-5),
                                                     pytest.approx(10.0))  # fmt: skip


def test_step_sizes_absolute_or_relative_to_the_curvature():
    grid = {"lr_scaled": [1.0, 0.3]}
    # rate = nbeta * lambda + gamma * g_max = 10 * 2 + 100 * 0.5 = 70; 4 significant digits
    assert cal._step_sizes(None, "sgld", grid, 10.0, 100.0, (2.0, 0.5)) == [
        (0.01429, 1.0), (0.004286, 0.3),
    ]  # fmt: skip
    got = cal._step_sizes(None, "sgld", {"lr": [1e-3, 1e-4]}, 10.0, 100.0, (2.0, 0.5))
    assert got[0] == (1e-3, pytest.approx(math.nan, nan_ok=True)) and got[1][0] == 1e-4
    assert all(math.isnan(s) for _, s in got)


# ------------------------------------------------------------------ grid


def test_grid_normalisation_and_its_errors():
    out, given = cal._normalise_grid({"lr": [1e-4, 1e-2, 1e-2, 1e-3], "nbeta": [20, 5.0]}, 100)
    assert out == {"nbeta": [5.0, 20.0], "localization": [10.0, 100.0, 1000.0],
                   "lr": [1e-2, 1e-3, 1e-4], "kind": ["sgld"]}  # fmt: skip
    assert given is False
    out, given = cal._normalise_grid(None, 100)
    assert out == {**cal.default_grid(100), "kind": ["sgld"]} and given is False
    out, given = cal._normalise_grid({"kind": ["rmsprop", "sgld"],
                                      "lr_scaled": [0.1, 1.0]}, 50)  # fmt: skip
    assert out["kind"] == ["rmsprop", "sgld"] and out["lr_scaled"] == [1.0, 0.1] and given
    assert out["nbeta"] == cal.default_grid(50)["nbeta"]
    assert cal._normalise_grid({"localization": [0.0, 3]}, 100)[0]["localization"] == [0.0, 3.0]
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['gamma', 'zz'\]; use \('kind'"):
        cal._normalise_grid({"gamma": [1.0], "zz": 1}, 100)
    with pytest.raises(ValueError, match="^calibration grid: give lr or lr_scaled, not both$"):
        cal._normalise_grid({"lr": [1e-3], "lr_scaled": [1.0]}, 100)
    with pytest.raises(ValueError, match="unknown kind 'adam'; choose from"):
        cal._normalise_grid({"kind": ["sgld", "adam"]}, 100)
    for key in ("nbeta", "localization", "lr", "lr_scaled"):
        with pytest.raises(ValueError, match=f"calibration grid: {key} needs non-negative"):
            cal._normalise_grid({key: [1.0, -1.0]}, 100)
        with pytest.raises(ValueError, match=f"calibration grid: {key} needs non-negative"):
            cal._normalise_grid({key: []}, 100)
        with pytest.raises(ValueError, match=f"calibration grid: {key} needs non-negative"):
            cal._normalise_grid({key: [math.nan]}, 100)


def test_default_nbeta_comes_from_the_smallest_target(monkeypatch):
    targets = make_targets(2)
    targets[0].x, targets[0].y = targets[0].x[:3], targets[0].y[:3]  # n = 3 < 4
    grid = {"kind": ["sgld"], "lr": [1e-2, 1e-3], "localization": [100.0]}
    res, script = run(monkeypatch, walk_outcome, targets=targets, grid=grid)
    base = 3 / math.log(3)
    assert script.calls[0][2] == float(f"{base * 64:.4g}")  # the largest nbeta first


# ------------------------------------------------------------------ base settings, runner


def test_base_settings_from_a_mapping_or_a_sampler_config():
    from grokking_llc.config import SamplerConfig

    assert cal._base_settings(None) == {}
    got = cal._base_settings({"lr": 1.0, "nbeta": 2.0, "localization": 3.0, "num_draws": 4,
                              "kind": "rmsprop", "batch_size": 7, "gn_probes": 2})  # fmt: skip
    assert got == {"batch_size": 7, "gn_probes": 2}
    cfg = SamplerConfig(batch_size=9, num_chains=3)
    got = cal._base_settings(cfg)
    assert got["batch_size"] == 9 and got["num_chains"] == 3
    assert not {"lr", "nbeta", "localization", "num_draws", "kind"} & set(got)
    assert got["num_burnin_steps"] == cfg.num_burnin_steps
    with pytest.raises(Exception, match="unknown key"):
        cal._base_settings({"bogus": 1})


def test_runner_settings_without_a_burn_in_use_every_step():
    runner = cal._Runner(make_targets(), {}, 64, "fast", "cpu", None)
    assert runner.settings("sgld", 1e-3, 8.0, 50.0) == {
        "lr": 1e-3, "nbeta": 8.0, "localization": 50.0, "num_draws": 64, "num_burnin_steps": 0,
    }  # fmt: skip


def test_runner_loads_each_state_into_a_copy_caches_and_passes_its_arguments(monkeypatch):
    targets = make_targets(2)
    targets[1].state = {k: 2 * v for k, v in targets[1].state.items()}
    before = {k: v.detach().clone() for k, v in targets[0].model.named_parameters()}
    seen = []

    def fake(model, x, y, loss_fn, settings, *, seed, backend, device, diag_every):
        w, v = float(model.W.detach()[0, 0]), float(model.V.detach()[0, 0])
        seen.append((w, v, x is targets[0].x, seed, backend, device, diag_every, settings["lr"]))
        return result(4.0)

    monkeypatch.setattr(cal, "estimate_llc", fake)
    runner = cal._Runner(targets, BASE, 100, "devinterp", "meta", 25)
    s = runner.settings("sgld", 1e-3, 10.0, 100.0)
    w, v = float(targets[0].state["W"][0, 0]), float(targets[0].state["V"][0, 0])
    r1 = runner.run(0, s)
    assert runner.run(0, dict(s)) is r1  # cached: one estimate
    runner.run(1, s)
    runner.run(0, s, rescale=2.0, symmetry=cal.quadratic_rescaling)
    assert seen[0] == (pytest.approx(w), pytest.approx(v), True, 10, "devinterp", "meta", 25,
                       1e-3)  # fmt: skip
    assert len(seen) == 3
    assert seen[1][:2] == (pytest.approx(2 * w), pytest.approx(2 * v)) and seen[1][3] == 11
    assert seen[2][:2] == (pytest.approx(2 * w), pytest.approx(v / 4))
    assert r1[0].llc_mean == 4.0 and 0.0 <= r1[1] < 5.0
    for k, p in targets[0].model.named_parameters():
        assert torch.equal(p, before[k])  # the target's own model is never loaded
    # a target's own symmetry wins over the calibration's
    targets[0].symmetry = lambda st, c: {"W": st["W"] * 3.0, "V": st["V"]}
    runner.run(0, s, rescale=0.5, symmetry=cal.quadratic_rescaling)
    assert seen[3][:2] == (pytest.approx(3 * w), pytest.approx(v))


def test_log_lines_of_the_runner_and_the_calibration(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="grokking_llc.calibrate")
    res, _ = run(monkeypatch, walk_outcome)
    msgs = [r.getMessage() for r in caplog.records if r.name == "grokking_llc.calibrate"]
    assert msgs[:6] == [
        "{'step': 0} sgld lr=0.01 nbeta=10 gamma=100: llc 5 +- 0.01, not valid",
        "{'step': 0} sgld lr=0.001 nbeta=10 gamma=100: llc 4 +- 0.01, valid",
        "{'step': 0} sgld lr=0.0001 nbeta=10 gamma=100: llc 3.9 +- 0.01, valid",
        "{'step': 0} sgld lr=0.0001 nbeta=5 gamma=100: llc 3.8 +- 0.01, valid",
        "{'step': 0} sgld lr=0.0001 nbeta=10 gamma=100 rescaled x2: llc 3.9 +- 0.01, valid",
        "{'step': 0} sgld lr=0.0001 nbeta=10 gamma=100 rescaled x0.5: llc 3.9 +- 0.01, valid",
    ]
    assert re.fullmatch(r"calibration \(\d+s\): " + re.escape(res.reason), msgs[6])
    assert len(msgs) == 7
    assert 0.0 <= res.seconds < 30.0
    assert ((res.table["seconds"] >= 0) & (res.table["seconds"] < 5)).all()


def test_short_names_the_kind_and_rounds():
    s = {"lr": 0.000123456, "nbeta": 12345.678, "localization": 0.5}
    assert cal._short(s) == "sgld lr=0.000123 nbeta=1.235e+04 gamma=0.5"
    assert cal._short({**s, "kind": "gn_diag"}).startswith("gn_diag lr=")


def test_ok_needs_stationary_accurate_and_finite():
    assert cal._ok(result(1.0))
    assert not cal._ok(result(1.0, stationary=False))
    assert not cal._ok(result(1.0, step_ok=False))
    assert not cal._ok(result(math.inf))
    assert cal._ok(result(-1.0))


# ------------------------------------------------------------------ calibrate_checkpoints


def test_calibrate_checkpoints_seeds_labels_symmetry_and_arguments(monkeypatch):
    targets = make_targets()
    model = targets[0].model
    states = [{k: 0.5 * v for k, v in targets[0].state.items()}, targets[0].state]
    recorded = []

    def fake(m, x, y, loss_fn, settings, *, seed, backend, device, diag_every):
        c = round(float(m.W.detach()[0, 0]) / float(states[1]["W"][0, 0]), 6)
        recorded.append((seed, c, backend, str(device), diag_every, settings["num_draws"],
                         x.shape[0]))  # fmt: skip
        return walk_outcome("sgld", settings["lr"], settings["nbeta"], 100.0, c, seed)

    monkeypatch.setattr(cal, "estimate_llc", fake)
    res = cal.calibrate_checkpoints(
        model, states, targets[0].x, targets[0].y, targets[0].loss_fn, base=BASE, grid=GRID,
        num_steps=50, seed=7, labels=[100, 300], diag_every=9,
    )  # fmt: skip
    assert res.chosen_valid and res.chosen["num_draws"] == 50
    assert {r[0] for r in recorded} == {7, 8}
    assert recorded[0][0] == 8  # the walk is at the final checkpoint
    assert {r[1] for r in recorded} == {0.5, 1.0, 1.0 / 4, 2.0}  # auto: the quadratic rescaling
    assert {r[2:] for r in recorded} == {("fast", "cpu", 9, 50, 4)}
    assert sorted(set(res.table["step"])) == [100, 300]
    assert res.reason.endswith("invariant under rescaling.") and "all 2 checkpoint(s)" in res.reason

    recorded.clear()
    res = cal.calibrate_checkpoints(
        model, states, targets[0].x, targets[0].y, targets[0].loss_fn, base=BASE, grid=GRID,
        num_steps=50, seeds=[3, 4], symmetry=None, backend="devinterp", max_checks=0,
    )  # fmt: skip
    # no candidate checked: the walk at the final checkpoint, then the fallback at the first
    assert [r[0] for r in recorded] == [4, 4, 4, 3]
    assert [r[1] for r in recorded] == [1.0, 1.0, 1.0, 0.5]  # no rescaled runs
    assert {r[2] for r in recorded} == {"devinterp"}
    assert not res.chosen_valid and res.table["step"].tolist() == [0, 1, 1, 1]


def test_calibrate_sampler_at_the_current_parameters(monkeypatch):
    targets = make_targets()
    model = targets[0].model
    script = Script(walk_outcome, float(model.W.detach()[0, 0]))
    monkeypatch.setattr(cal, "estimate_llc", script)
    res = cal.calibrate_sampler(model, targets[0].x, targets[0].y, targets[0].loss_fn, base=BASE,
                                grid=GRID, num_steps=100, seed=4, exhaustive=True)  # fmt: skip
    assert res.chosen == settings(1e-4) and res.chosen_valid
    assert {c[5] for c in script.calls} == {4} and {c[4] for c in script.calls} == {1.0, 2.0, 0.5}
    res = cal.calibrate_sampler(model, targets[0].x, targets[0].y, targets[0].loss_fn, base=BASE,
                                grid=GRID, num_steps=100, symmetry=None, max_checks=0)  # fmt: skip
    assert not res.chosen_valid


def test_num_steps_must_leave_sixteen_draws(monkeypatch):
    monkeypatch.setattr(cal, "estimate_llc", Script(walk_outcome, 1.0))
    with pytest.raises(ValueError, match="num_steps 15 leaves too few"):
        cal.calibrate_targets(make_targets(), base={}, grid=GRID, num_steps=15)
    cal.calibrate_targets(make_targets(), base={}, grid=GRID, num_steps=16, symmetry=None)
    cal.calibrate_targets(make_targets(), base={"num_burnin_steps": 4}, grid=GRID, num_steps=20,
                          symmetry=None)  # fmt: skip


# ------------------------------------------------------------------ the walk, more cases


def test_the_walk_takes_the_larger_step_when_the_smaller_is_not_stationary(monkeypatch):
    def outcome(kind, lr, nbeta, gamma, c, seed):
        if lr == 1e-2:
            return result(5.0, step_ok=False)
        if lr == 1e-4:
            return result(3.9, stationary=False, valid=False)
        return result(4.0 if nbeta == 10.0 else 3.9)

    res, script = run(monkeypatch, outcome)
    assert res.chosen == settings(1e-3) and res.chosen_valid
    assert res.table["eps_flat"].tolist() == [False, True, True]


def test_pairs_that_disagree_keep_walking(monkeypatch):
    grid = {**GRID, "lr": [1e-2, 1e-3, 1e-4, 1e-5]}

    def outcome(kind, lr, nbeta, gamma, c, seed):
        llc = {1e-2: 9.0, 1e-3: 6.0, 1e-4: 4.0, 1e-5: 3.9}[lr]
        return result(llc if nbeta == 10.0 else 3.9)

    res, script = run(monkeypatch, outcome, grid=grid)
    assert res.chosen == {**settings(1e-5)} and res.chosen_valid
    # 9 vs 6 and 6 vs 4 differ by more than 10% and 3 SE: not flat
    assert res.table["eps_flat"].tolist() == [False, False, True, True]


def test_a_rescaled_estimate_below_the_original_is_a_change_too(monkeypatch):
    def outcome(kind, lr, nbeta, gamma, c, seed):
        if c == 0.5:
            return result(3.9 * 0.8)
        return walk_outcome(kind, lr, nbeta, gamma, c, seed)

    res, _ = run(monkeypatch, outcome)
    assert not res.chosen_valid
    assert res.table["rescale_change"].iloc[2] == pytest.approx(0.2)
    assert res.table["llc_rescaled_0.5"].iloc[2] == pytest.approx(3.9 * 0.8)


def test_rescale_change_is_relative_to_the_size_of_a_negative_estimate(monkeypatch):
    def outcome(kind, lr, nbeta, gamma, c, seed):
        if lr == 1e-2:
            return result(5.0, step_ok=False)
        if nbeta == 5.0:
            return result(3.9)
        llc = -4.0 if lr == 1e-3 else -3.9
        return result(llc * (1.05 if c == 2.0 else 1.0), valid=True)

    res, _ = run(monkeypatch, outcome)
    assert res.table["rescale_change"].iloc[2] == pytest.approx(0.05)


@pytest.mark.parametrize("ratio, ok", [(1.414213562373095, True), (1.4142135623730954, False)])
def test_elasticity_on_either_side_of_one_half(monkeypatch, ratio, ok):
    # log2(ratio) is 0.4999999999999999 or 0.5000000000000003 (no double has log2 exactly 0.5)
    def outcome(kind, lr, nbeta, gamma, c, seed):
        if lr == 1e-2:
            return result(5.0, step_ok=False)
        if nbeta == 5.0:
            return result(1.0)
        return result(ratio * (1.0 if lr == 1e-4 else 1.02))

    res, _ = run(monkeypatch, outcome)
    assert res.table["nbeta_elasticity"].iloc[2] == pytest.approx(0.5, abs=1e-12)
    assert res.chosen_valid is ok


def test_table_order_labels_first_kinds_and_nbeta_descending(monkeypatch):
    def outcome(kind, lr, nbeta, gamma, c, seed):
        if kind == "sgld":
            return result(4.0, stationary=False, step_ok=False, r_hat=2.0)
        return walk_outcome(kind, lr, nbeta, gamma, c, seed)

    grid = {"lr": [1e-2, 1e-3, 1e-4], "nbeta": [10.0], "localization": [100.0, 10.0]}
    targets = make_targets()
    targets[0].labels = {"run_id": "r", "step": 5}
    res, _ = run(monkeypatch, outcome, grid=grid, targets=targets)
    t = res.table
    assert list(t.columns[:7]) == ["run_id", "step", "target", "kind", "nbeta", "localization",
                                   "lr"]  # fmt: skip
    assert list(zip(t["kind"], t["localization"], t["lr"], strict=True))[:4] == [
        ("rmsprop", 10.0, 1e-2), ("rmsprop", 10.0, 1e-3), ("rmsprop", 10.0, 1e-4),
        ("sgld", 10.0, 1e-2),
    ]  # fmt: skip
    assert str(t["eps_flat"].dtype) == "boolean" and str(t["checks_passed"].dtype) == "boolean"
    assert res.chosen == {**settings(1e-4, gamma=10.0), "kind": "rmsprop"}


def test_table_sorts_nbeta_descending():
    rows = {}
    for i, (nb, lr) in enumerate([(1.0, 1e-3), (2.0, 1e-4), (2.0, 1e-3), (1.0, 1e-4)]):
        rows[i] = cal._row(result(1.0), 0.0, ("sgld", lr, nb, 10.0), math.nan, 0,
                           (math.nan, math.nan))  # fmt: skip
    t = cal._table(rows, make_targets())
    assert list(zip(t["nbeta"], t["lr"], strict=True)) == [
        (2.0, 1e-3), (2.0, 1e-4), (1.0, 1e-3), (1.0, 1e-4),
    ]  # fmt: skip
    assert list(t.index) == [0, 1, 2, 3]
    assert cal._table({}, make_targets()).empty


# ------------------------------------------------------------------ step 4 on tables


def table_of(*rows, target=None):
    cols = {"target": 0, "kind": "sgld", "lr": 1e-3, "nbeta": 10.0, "localization": 100.0,
            "llc_mean": 1.0, "stationary": True, "step_ok": True,
            "localisation_dominated": False, "eps_flat": True, "checks_passed": True,
            "r_hat": 1.0, "invalid_reason": ""}  # fmt: skip
    df = pd.DataFrame([{**cols, **r} for r in rows])
    df["eps_flat"] = df["eps_flat"].astype("boolean")
    df["checks_passed"] = df["checks_passed"].astype("boolean")
    return df


@pytest.mark.parametrize("worse", [
    {"step_ok": False}, {"localisation_dominated": True}, {"eps_flat": False},
    {"checks_passed": False}, {"llc_mean": -1.0}, {"llc_mean": 0.0}, {"stationary": False},
    {"llc_mean": math.nan}, {"eps_flat": None}, {"checks_passed": None},
])  # fmt: skip
def test_each_check_counts_in_the_fallback_score(worse):
    # the worse row has the larger nbeta, which would win a tie
    t = table_of({"nbeta": 10.0}, {"nbeta": 20.0, **worse})
    assert cal._best_fallback(t)[0] == ("sgld", 1e-3, 10.0, 100.0)


def test_a_missing_check_scores_as_failed():
    for col in ("eps_flat", "checks_passed"):
        t = table_of({"nbeta": 20.0, col: False}, {"nbeta": 10.0, col: None})
        assert cal._best_fallback(t)[0][2] == 20.0  # a tie, broken by nbeta


def test_fallback_ties_are_broken_by_nbeta_gamma_then_lr():
    t = table_of({"nbeta": 10.0}, {"nbeta": 20.0}, {"nbeta": 5.0})
    assert cal._best_fallback(t)[0][2] == 20.0
    t = table_of({"localization": 100.0}, {"localization": 10.0}, {"localization": 1000.0})
    assert cal._best_fallback(t)[0][3] == 10.0
    t = table_of({"lr": 1e-3}, {"lr": 1e-2}, {"lr": 1e-4})
    assert cal._best_fallback(t)[0][1] == 1e-2
    t = table_of({"kind": "rmsprop", "lr": 2e-3})
    assert cal._best_fallback(t) == (
        ("rmsprop", 2e-3, 10.0, 100.0),
        "the best stationary setting (valid alone but not flat in eps or failing the nbeta or "
        "rescaling checks)",
    )


def test_fallback_reads_the_final_target_and_names_the_failure():
    t = table_of({"target": 0, "nbeta": 99.0},
                 {"target": 1, "invalid_reason": "r_hat 1.2 >= 1.1", "step_ok": False})  # fmt: skip
    assert cal._best_fallback(t) == (("sgld", 1e-3, 10.0, 100.0),
                                     "the best stationary setting (r_hat 1.2 >= 1.1)")  # fmt: skip
    t = table_of({"stationary": False, "r_hat": 1.2345, "lr": 1e-2},
                 {"stationary": False, "r_hat": 1.5, "lr": 1e-3},
                 {"stationary": False, "r_hat": 1.0, "llc_mean": math.inf})  # fmt: skip
    why = "no stationary setting: the smallest R-hat (1.23)"
    assert cal._best_fallback(t) == (("sgld", 1e-2, 10.0, 100.0), why)
    t = table_of({"llc_mean": math.nan}, {"llc_mean": -math.inf})
    assert cal._best_fallback(t) == (None, "no setting gave a finite estimate")


def test_chosen_sampler_refuses_tables_without_one_choice():
    with pytest.raises(ValueError, match=r"chose no setting: $"):
        cal.chosen_sampler(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match=r"chose no setting: $"):
        cal.chosen_sampler(pd.DataFrame({"chosen": [], "reason": []}))
    t = pd.DataFrame({"chosen": pd.array([False, None], dtype="boolean"),
                      "reason": ["why not", "x"]})  # fmt: skip
    with pytest.raises(ValueError, match=r"chose no setting: why not$"):
        cal.chosen_sampler(t)
    a, b = json.dumps({"lr": 1, "nbeta": 2}), json.dumps({"nbeta": 2, "lr": 1})
    t = pd.DataFrame(
        {
            "chosen": pd.array([True, True, None], dtype="boolean"),
            "chosen_valid": pd.array([True, None, True], dtype="boolean"),
            "settings": [a, b, json.dumps({"lr": 3})],
            "reason": ["r1", "r2", "r3"],
        }
    )
    assert cal.chosen_sampler(t) == ({"lr": 1, "nbeta": 2}, False, "r1")
    t.loc[1, "chosen_valid"] = True
    assert cal.chosen_sampler(t)[1] is True
    t.loc[2, "chosen"] = True
    with pytest.raises(ValueError, match="marks 2 different settings"):
        cal.chosen_sampler(t)


# ------------------------------------------------------------------ entry points' defaults


class Recorder:
    """estimate_llc stand-in recording every argument; estimates from ``outcome(lr, nbeta)``."""

    def __init__(self, outcome):
        self.outcome, self.calls = outcome, []

    def __call__(self, model, x, y, loss_fn, settings, *, seed, backend, device, diag_every):
        self.calls.append({"x": x, "y": y, "loss_fn": loss_fn, "settings": settings,
                           "seed": seed, "backend": backend, "device": device,
                           "diag_every": diag_every})  # fmt: skip
        return self.outcome(settings["lr"], settings["nbeta"])


GROUPS = [3.0, 7.0, 11.0, 13.0, 17.0]  # their halves are not in the grid


def scaling(lr, nbeta):
    """Every pick is flat in eps but scales with nbeta (1.0 at every half temperature)."""
    if nbeta not in GROUPS:
        return result(1.0)
    return result(4.0 if lr == 1e-3 else 3.9)


def entry(name, **kw):
    t = make_targets()[0]
    if name == "targets":
        return cal.calibrate_targets([t], **kw), t
    if name == "checkpoints":
        return cal.calibrate_checkpoints(t.model, [t.state], t.x, t.y, t.loss_fn, **kw), t
    return cal.calibrate_sampler(t.model, t.x, t.y, t.loss_fn, **kw), t


@pytest.mark.parametrize("name", ["targets", "checkpoints", "sampler"])
def test_defaults_of_the_entry_points(monkeypatch, name):
    rec = Recorder(scaling)
    monkeypatch.setattr(cal, "estimate_llc", rec)
    grid = {"kind": ["sgld"], "lr": [1e-3, 1e-4], "nbeta": GROUPS, "localization": [1.0]}
    res, t = entry(name, base=BASE, grid=grid)
    # max_checks 3: three of the five picks are checked (each with its half-temperature run)
    assert sum(c["settings"]["nbeta"] not in GROUPS for c in rec.calls) == 3
    assert {c["backend"] for c in rec.calls} == {"fast"}
    assert {c["settings"]["num_draws"] for c in rec.calls} == {2000}
    assert all(c["diag_every"] is None for c in rec.calls)
    assert all(c["loss_fn"] is t.loss_fn and torch.equal(c["y"], t.y) for c in rec.calls)
    assert all(torch.equal(c["x"], t.x) for c in rec.calls)
    assert {str(c["device"]) for c in rec.calls} == {"cpu"}
    assert not res.chosen_valid
    # not exhaustive: the walk ends at the first valid setting (the largest nbeta)
    rec.calls.clear()
    rec.outcome = lambda lr, nbeta: result(4.0 if lr == 1e-3 else 3.9)
    res, _ = entry(name, base=BASE, grid={**grid, "nbeta": [3.0, 7.0]}, max_checks=5,
                   symmetry=None)  # fmt: skip
    assert {c["settings"]["nbeta"] for c in rec.calls} == {7.0, 3.5}
    assert res.chosen_valid


@pytest.mark.parametrize("name", ["checkpoints", "sampler"])
def test_device_and_exhaustive_are_passed_on(monkeypatch, name):
    rec = Recorder(lambda lr, nbeta: result(4.0 if lr == 1e-3 else 3.9))
    monkeypatch.setattr(cal, "estimate_llc", rec)
    grid = {"kind": ["sgld"], "lr": [1e-3, 1e-4], "nbeta": [3.0, 7.0], "localization": [1.0]}
    res, _ = entry(name, base=BASE, grid=grid, device="cpu", exhaustive=True, symmetry=None,
                   num_steps=40, diag_every=7)  # fmt: skip
    assert all(c["device"] == "cpu" and isinstance(c["device"], str) for c in rec.calls)
    assert {c["diag_every"] for c in rec.calls} == {7}
    assert {c["settings"]["nbeta"] for c in rec.calls} == {7.0, 3.5, 3.0}  # both groups walked
    assert res.chosen["nbeta"] == 7.0 and res.chosen["num_draws"] == 40


def test_calibrate_checkpoints_needs_a_checkpoint_message():
    t = make_targets()[0]
    with pytest.raises(ValueError, match="^calibrate_checkpoints needs at least one checkpoint$"):
        cal.calibrate_checkpoints(t.model, [], t.x, t.y, t.loss_fn)
    with pytest.raises(ValueError, match="^calibration needs at least one target$"):
        cal.calibrate_targets([])


def test_runner_passes_the_targets_data(monkeypatch):
    rec = Recorder(lambda lr, nbeta: result(1.0))
    monkeypatch.setattr(cal, "estimate_llc", rec)
    targets = make_targets(2)
    targets[1].y = targets[1].y + 1.0
    runner = cal._Runner(targets, {}, 50, "fast", "cpu", None)
    runner.run(1, runner.settings("sgld", 1e-3, 1.0, 1.0))
    call = rec.calls[0]
    assert call["x"] is targets[1].x and call["y"] is targets[1].y
    assert call["loss_fn"] is targets[1].loss_fn


# ------------------------------------------------------------------ relative step sizes


def test_relative_step_sizes_follow_each_groups_rate(monkeypatch):
    t = make_targets()[0]
    lam = cal.top_curvature(t.model, t.params(), t.x, t.y, t.loss_fn, seed=t.seed)
    rec = Recorder(lambda lr, nbeta: result(1.0, stationary=False, step_ok=False))
    monkeypatch.setattr(cal, "estimate_llc", rec)
    grid = {"kind": ["sgld"], "lr_scaled": [1.0, 0.1], "nbeta": [2.0, 50.0],
            "localization": [3.0]}  # fmt: skip
    res = cal.calibrate_targets([t], base=BASE, grid=grid, num_steps=40)
    want = [float(f"{c / (nb * lam + 3.0):.4g}") for nb in (50.0, 2.0) for c in (1.0, 0.1)]
    assert [c["settings"]["lr"] for c in rec.calls][:4] == want
    tab = res.table
    assert sorted(tab["lr_scaled"]) == [0.1, 0.1, 1.0, 1.0]
    assert np.allclose(tab["curvature"], lam) and (tab["precond_max"] == 1.0).all()


def test_table_columns(monkeypatch):
    def outcome(kind, lr, nbeta, gamma, c, seed):
        res = walk_outcome(kind, lr, nbeta, gamma, c, seed)
        return dataclasses.replace(res, reason="all chains diverged") if lr == 1e-2 else res

    res, _ = run(monkeypatch, outcome)
    summary = set(result(1.0).summary()) - {"reason", "nbeta"}  # grokking_llc.llc's columns
    assert [c for c in res.table.columns if c not in summary] == [
        "step", "target", "kind", "nbeta", "localization", "lr", "lr_scaled", "llc_reason",
        "curvature", "precond_max", "seconds", "eps_flat", "llc_nbeta_half",
        "nbeta_elasticity", "llc_rescaled_2", "llc_rescaled_0.5", "rescale_change",
        "checks_passed", "chosen", "chosen_valid", "reason", "settings",
    ]  # fmt: skip
    assert res.table["llc_reason"].tolist() == ["all chains diverged", "", ""]


def test_top_curvature_is_seeded_and_zero_without_iterations():
    model, x, y, loss = linear_problem()
    params = {"weight": torch.ones(1, 3)}
    torch.manual_seed(1)
    a = cal.top_curvature(model, params, x, y, loss, iters=1, seed=5)
    torch.manual_seed(2)
    b = cal.top_curvature(model, params, x, y, loss, iters=1, seed=5)
    c = cal.top_curvature(model, params, x, y, loss, iters=1, seed=6)
    assert a == b and a != c
    assert cal.top_curvature(model, params, x, y, loss, iters=0) == 0.0
    # double precision throughout (the random start takes the parameters' dtype)
    model64 = model.double()
    got = cal.top_curvature(model64, {"weight": torch.ones(1, 3, dtype=torch.float64)},
                            x.double(), y.double(), loss)  # fmt: skip
    assert got == pytest.approx(6.0, rel=1e-12)


def test_random_draws_are_made_on_the_datas_device(monkeypatch):
    """The preconditioner's generator and minibatch draws live on x's device (spied: the
    tests run on the CPU, where a missing device would go unnoticed)."""
    from grokking_llc.sgld import SamplerOptions

    seen = []

    class TorchSpy:  # the torch module as calibrate.py sees it, with two spied functions
        def __getattr__(self, name):
            return getattr(torch, name)

        def Generator(self, *a, **kw):  # noqa: N802
            seen.append(("generator", kw.get("device")))
            return torch.Generator(*a, **kw)

        def randperm(self, *a, **kw):
            seen.append(("randperm", kw.get("device")))
            return torch.randperm(*a, **kw)

    monkeypatch.setattr(cal, "torch", TorchSpy())
    model, x, y, loss = linear_problem()
    cal._preconditioner(model, {"weight": torch.ones(1, 3)}, x, y, loss,
                        SamplerOptions(kind="rmsprop"), 2, 0)  # fmt: skip
    assert seen == [("generator", x.device)] + [("randperm", x.device)] * 8
