"""The calibration's selection rule (grokking_llc.calibrate module docstring, steps 1-4; SPEC
section 10) on scripted estimates: ``estimate_llc`` is replaced by a function that returns
hand-chosen results per (kind, step size, nbeta, gamma, rescaling factor, checkpoint seed), so
every branch of the walk, the checks and the fallback is exercised in milliseconds and the
expected choice, table and reason follow from the docstring's rule by hand. Cases found
unchecked by the mutation run (docs/mutation.md)."""

from __future__ import annotations

import json
import math

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
