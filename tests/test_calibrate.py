"""Sampler calibration (grokking_llc.calibrate, SPEC section 10) with known answers: the step
size is always chosen by the calibration, never by hand.

Known answers:
* a regular model (linear regression, q free parameters) has LLC q/2 (SPEC section 4);
* a reduced-rank regression ``Y = B A X`` with input M, output N, hidden H and true rank r has
  Aoyagi and Watanabe's (2005) lambda (SPEC section 10). Its data are built so that the
  empirical loss is exactly the population one: X has orthogonal columns with
  ``X^T X = n I`` and ``Y = X (B0 A0)^T`` without noise, so
  ``L(A, B) = |BA - B0 A0|_F^2 / 2`` and the true parameter (B0 A0 of rank r, the extra hidden
  units zero) is an exact minimum.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from grokking_llc import calibrate as cal
from grokking_llc.llc import estimate_llc
from grokking_llc.model import QuadraticNet

torch.set_num_threads(1)


def half_mse(pred, target):
    """Gaussian negative log-likelihood up to a constant: 0.5 * mean squared error."""
    return 0.5 * (pred - target).pow(2).sum(dim=1).mean()


def aoyagi_lambda(M: int, N: int, H: int, r: int) -> float:
    """Learning coefficient of reduced-rank regression (Aoyagi and Watanabe 2005; SPEC 10)."""
    if N + r <= M + H and M + r <= N + H and H + r <= M + N:
        lam = (2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2) / 8
        return lam + (1 / 8 if (M + H + N + r) % 2 else 0.0)
    if M + H < N + r:
        return (H * M - H * r + N * r) / 2
    if N + H < M + r:
        return (H * N - H * r + M * r) / 2
    return M * N / 2


def test_aoyagi_formula_by_hand():
    assert aoyagi_lambda(3, 3, 3, 1) == 4.0  # (2*4*6 - 0 - 16) / 8
    assert aoyagi_lambda(3, 2, 2, 1) == 2.5  # (2*3*5 - 1 - 9) / 8
    assert aoyagi_lambda(3, 3, 3, 0) == 3.5  # 27/8 + 1/8 (odd sum)
    assert aoyagi_lambda(1, 4, 1, 1) == 2.0  # M + H < N + r: (1 - 1 + 4) / 2
    assert aoyagi_lambda(2, 2, 5, 2) == 2.0  # M + N < H + r: MN / 2


def regular_problem(q=6, n=400, seed=0):
    """Linear regression with q parameters and a full-rank design; w* = least squares."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, q, generator=g)
    y = x @ torch.randn(q, 1, generator=g) + 0.3 * torch.randn(n, 1, generator=g)
    model = nn.Linear(q, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    return model, x, y


def reduced_rank_problem(M, N, H, r, seed=0):
    """Deep linear net ``x -> B A x`` at its true parameter, data with X^T X = n I (n = M)."""
    g = torch.Generator().manual_seed(seed)
    x = math.sqrt(M) * torch.eye(M)
    A0, B0 = torch.zeros(H, M), torch.zeros(N, H)
    A0[:r] = torch.randn(r, M, generator=g)
    B0[:, :r] = torch.randn(N, r, generator=g)
    model = nn.Sequential(nn.Linear(M, H, bias=False), nn.Linear(H, N, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(A0)
        model[1].weight.copy_(B0)
    return model, x, x @ (B0 @ A0).T


FULL_BATCH = dict(num_chains=4, num_burnin_steps=100, num_init_loss_batches=1)


def test_regular_model_calibrated_estimate_is_d_over_2_and_checks_fire():
    """The calibration picks a step size by itself; the estimate at it is q/2 within 10% and
    valid. At 100x that step the estimate is marked not valid; with a localisation 100x the
    curvature scale nbeta * h the estimate is marked localisation-dominated (and it scales with
    nbeta: elasticity > 0.5)."""
    q = 6
    model, x, y = regular_problem(q)
    res = cal.calibrate_sampler(model, x, y, half_mse, base={**FULL_BATCH, "batch_size": len(x)},
                                grid={"nbeta": [500.0], "localization": [10.0]},
                                num_steps=1000, seed=0)  # fmt: skip
    assert res.chosen_valid, res.reason
    row = res.table[res.table["chosen"]].iloc[0]
    assert bool(row["valid"]) and bool(row["eps_flat"]) and bool(row["checks_passed"])
    assert row["llc_mean"] == pytest.approx(q / 2, rel=0.10)
    assert row["nbeta_elasticity"] <= 0.5
    chosen = res.chosen
    assert chosen["nbeta"] == 500.0 and chosen["batch_size"] == len(x)
    # the step-size grid is relative to the curvature: eps = lr_scaled / (nbeta lambda + gamma)
    lam = float(torch.linalg.eigvalsh(x.T @ x / len(x)).max())
    assert row["curvature"] == pytest.approx(lam, rel=1e-3)
    assert chosen["lr"] == pytest.approx(row["lr_scaled"] / (500.0 * lam + 10.0), rel=1e-3)

    big = estimate_llc(model, x, y, half_mse, {**chosen, "lr": 100 * chosen["lr"]}, seed=1,
                       backend="fast")  # fmt: skip
    assert not big.valid and not big.step_ok

    gamma = 100 * 500.0 * lam  # the step rescaled to stay as accurate: 0.1 / (nbeta lam + gamma)
    dominated = {**chosen, "localization": gamma, "lr": 0.1 / (500.0 * lam + gamma)}
    d1 = estimate_llc(model, x, y, half_mse, dominated, seed=1, backend="fast")
    d2 = estimate_llc(model, x, y, half_mse, {**dominated, "nbeta": 250.0}, seed=1,
                      backend="fast")  # fmt: skip
    assert d1.localisation_dominated and not d1.valid
    assert "localisation-dominated" in d1.invalid_reason
    assert math.log2(d1.llc_mean / d2.llc_mean) > 0.5


def test_reduced_rank_regression_gives_aoyagis_lambda():
    """M=3, N=2, H=2, r=1: lambda = 2.5 while d/2 = 5. The calibration (diagonal Gauss-Newton
    sampler, the one whose flat directions relax within the budget) finds a valid setting by
    itself, including the layer-rescaling check (A -> cA, B -> B/c), and its estimate is lambda
    within 10%."""
    M, N, H, r = 3, 2, 2, 1
    model, x, y = reduced_rank_problem(M, N, H, r)
    lam = aoyagi_lambda(M, N, H, r)
    res = cal.calibrate_sampler(
        model, x, y, half_mse,
        base={**FULL_BATCH, "batch_size": len(x), "max_steps": 6000, "target_ess": 400},
        grid={"kind": ["gn_diag"], "nbeta": [1000.0], "localization": [10.0],
              "lr_scaled": [0.1, 0.03]},
        num_steps=3000, seed=0,
    )  # fmt: skip
    assert res.chosen_valid, res.reason
    row = res.table[res.table["chosen"]].iloc[0]
    assert row["kind"] == "gn_diag" and bool(row["valid"])
    assert math.isfinite(row["rescale_change"])  # the symmetry of the deep linear net ran
    assert row["llc_mean"] == pytest.approx(lam, rel=0.10)
    assert abs(row["llc_mean"] - 5.0) > 1.5  # far from d/2: the test tells them apart


def test_calibrate_checkpoints_keeps_one_setting_and_says_when_none_is_valid():
    """Two checkpoints, the final one a minimum and the first one not (w* + 0.3): the setting
    valid at the final one fails at the first (the chains descend, the estimate goes negative),
    so nothing is valid for both; the table has rows at both checkpoints, the same setting is
    marked chosen at both, flagged not valid, and the reason says so."""
    model, x, y = regular_problem(q=4, n=200)
    final = {"weight": model.weight.detach().clone()}
    early = {"weight": final["weight"] + 0.3}
    res = cal.calibrate_checkpoints(
        model, [early, final], x, y, half_mse, base={**FULL_BATCH, "batch_size": len(x)},
        grid={"kind": ["sgld"], "nbeta": [300.0], "localization": [10.0],
              "lr_scaled": [0.3, 0.1]},
        num_steps=800, labels=[100, 900], symmetry=None,
    )  # fmt: skip
    assert not res.chosen_valid and res.chosen is not None
    assert len(res.table[res.table["chosen"]]) == 2  # the fallback is shown at both
    assert res.reason.startswith("no setting (sgld) passed every check")
    table = res.table
    assert set(table["step"]) == {100, 900}
    chosen = table[table["chosen"]]
    assert sorted(chosen["step"]) == [100, 900] and not table["chosen_valid"].any()
    early_row = chosen[chosen["step"] == 100].iloc[0]
    assert early_row["llc_mean"] < 0 and not early_row["valid"]
    settings, valid, reason = cal.chosen_sampler(table)
    assert settings == res.chosen and not valid and reason == res.reason


def test_symmetries_leave_the_function_unchanged():
    net = QuadraticNet(5, 4, generator=torch.Generator().manual_seed(0))
    x = torch.tensor([[0, 1], [2, 3], [4, 4]])
    state = dict(net.named_parameters())
    sym = cal.model_symmetry(net)
    assert sym is cal.quadratic_rescaling
    other = QuadraticNet(5, 4)
    other.load_state_dict(sym(state, 3.0))
    torch.testing.assert_close(other(x), net(x))
    assert torch.equal(other.W, 3.0 * net.W)

    deep = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    sym = cal.model_symmetry(deep)
    moved = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))
    moved.load_state_dict(sym(dict(deep.named_parameters()), 0.5))
    torch.testing.assert_close(moved(z), deep(z))
    assert torch.equal(moved[0].weight, 0.5 * deep[0].weight)
    assert cal.model_symmetry(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))) is None
    assert cal.model_symmetry(nn.Linear(3, 2, bias=False)) is None


def test_top_curvature_is_the_largest_hessian_eigenvalue():
    model, x, y = regular_problem(q=5, n=100, seed=3)
    params = dict(model.named_parameters())
    hess = x.T @ x / len(x)  # Hessian of half_mse in the weights
    assert cal.top_curvature(model, params, x, y, half_mse) == pytest.approx(
        float(torch.linalg.eigvalsh(hess).max()), rel=1e-3
    )
    g = torch.linspace(0.5, 2.0, 5)
    precond = {"weight": g.reshape(1, 5)}
    scaled = g.sqrt()[:, None] * hess * g.sqrt()[None, :]
    assert cal.top_curvature(model, params, x, y, half_mse, precond=precond) == pytest.approx(
        float(torch.linalg.eigvalsh(scaled).max()), rel=1e-3
    )


def test_grid_defaults_and_validation():
    grid = cal.default_grid(1124)
    base = 1124 / math.log(1124)
    assert grid["nbeta"] == pytest.approx([base, 8 * base, 64 * base], rel=1e-3)
    assert grid["nbeta"][-1] > 50 * base  # well above n / ln n
    assert grid["localization"] == [10.0, 100.0, 1000.0]
    full, given = cal._normalise_grid({"lr": [1e-5, 1e-4]}, 100)
    assert full["lr"] == [1e-4, 1e-5] and "lr_scaled" not in full and not given
    assert full["kind"] == ["sgld"]
    with pytest.raises(ValueError, match="unknown key"):
        cal._normalise_grid({"gamma": [1.0]}, 100)
    with pytest.raises(ValueError, match="not both"):
        cal._normalise_grid({"lr": [1.0], "lr_scaled": [1.0]}, 100)
    with pytest.raises(ValueError, match="unknown kind"):
        cal._normalise_grid({"kind": ["adam"]}, 100)


def test_chosen_sampler_reads_the_chosen_settings_back():
    settings = {"lr": 1e-4, "nbeta": 160.0, "localization": 100.0, "batch_size": 128}
    table = pd.DataFrame({
        "chosen": [False, True, True],
        "chosen_valid": [False, True, True],
        "reason": ["why"] * 3,
        "settings": [json.dumps({**settings, "lr": 1e-3}), json.dumps(settings),
                     json.dumps(settings)],
    })  # fmt: skip
    got, valid, reason = cal.chosen_sampler(table)
    assert got == settings and valid and reason == "why"
    with pytest.raises(ValueError, match="chose no setting: why"):
        cal.chosen_sampler(table.assign(chosen=False))
    with pytest.raises(ValueError, match="2 different"):
        cal.chosen_sampler(table.assign(chosen=True))


def test_stage_writes_one_table_with_the_choice(tmp_path):
    """run_calibrate_sampler on a tiny trained run: one Parquet, one row per (checkpoint,
    setting), run_id and step labels, the chosen columns and a settings column that
    chosen_sampler turns back into estimate_llc's sampler."""
    from grokking_llc.config import TrainConfig
    from grokking_llc.data import make_split
    from grokking_llc.stages.calibrate import checkpoint_indices, run_calibrate_sampler
    from grokking_llc.train import train_run

    assert checkpoint_indices(11, [0.1, 0.5, 1.0]) == [1, 5, 10]
    assert checkpoint_indices(3, [0.0, 0.1, 1.0]) == [0, 2]
    with pytest.raises(ValueError, match="outside"):
        checkpoint_indices(3, [1.5])
    cfg = TrainConfig(p=5, width=4, lr=1e-2, weight_decay=0.0, batch_size=8, max_steps=60,
                      checkpoint_every=30)  # fmt: skip
    split = make_split(5, cfg.train_frac, 0)
    split_path = tmp_path / "split.parquet"
    split.to_parquet(split_path)
    ckpt_path = tmp_path / "checkpoints.pt"
    train_run(cfg, split, log_path=tmp_path / "log.parquet", checkpoints_path=ckpt_path,
              work_dir=tmp_path / "work")  # fmt: skip
    out = tmp_path / "calibration.parquet"
    calibration = {
        "checkpoints": [0.5, 1.0], "num_steps": 200,
        "grid": {"nbeta": [20.0], "localization": [100.0], "lr_scaled": [0.1]},
        "base": {"batch_size": 8, "num_chains": 4, "num_burnin_steps": 20, "seed": 3,
                 "num_init_loss_batches": 2},
    }  # fmt: skip
    df = run_calibrate_sampler([str(ckpt_path)], [str(split_path)], [cfg.to_dict()],
                               calibration, str(out), device="cpu")  # fmt: skip
    back = pd.read_parquet(out)
    assert len(back) == len(df) >= 1
    for col in ("run_id", "step", "kind", "lr", "nbeta", "localization", "llc_mean", "valid",
                "stationary", "mala_acceptance", "chosen", "chosen_valid", "reason",
                "settings"):  # fmt: skip
        assert col in back, col
    assert set(back["run_id"]) == {cfg.run_id} and back["step"].max() == 60
    settings, valid, _ = cal.chosen_sampler(back)
    assert settings["batch_size"] == 8 and settings["seed"] == 3
    assert not valid  # one step size: no flatness check, so never valid
    with pytest.raises(ValueError, match="unknown key"):
        run_calibrate_sampler([str(ckpt_path)], [str(split_path)], [cfg.to_dict()],
                              {"gird": {}}, str(out), device="cpu")  # fmt: skip


def test_nbeta_elasticity_column_matches_the_half_temperature_run():
    """The calibration's nbeta check is the estimate at nbeta/2 with the same eps and gamma."""
    model, x, y = regular_problem(q=3, n=100, seed=5)
    res = cal.calibrate_sampler(model, x, y, half_mse, base={**FULL_BATCH, "batch_size": 100},
                                grid={"nbeta": [200.0], "localization": [5.0],
                                      "lr_scaled": [0.3, 0.1]}, num_steps=600)  # fmt: skip
    row = res.table[res.table["chosen"]].iloc[0]
    half = estimate_llc(model, x, y, half_mse, {**res.chosen, "nbeta": 100.0}, seed=0,
                        backend="fast")  # fmt: skip
    assert row["llc_nbeta_half"] == half.llc_mean
    assert row["nbeta_elasticity"] == pytest.approx(np.log2(row["llc_mean"] / half.llc_mean))
