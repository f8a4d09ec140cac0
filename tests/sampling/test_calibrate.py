"""The calibration of SPEC section 10 (grokking_llc.sampling.calibrate; its module docstring is the
rule).

Most tests replace ``estimate_llc``, ``top_curvature`` and ``_preconditioner`` by a synthetic
world (:class:`World`) whose estimate is a formula of the settings -- it converges geometrically
as gamma halves (a bias ``B / kappa`` at resolution ``kappa = nbeta lambda / gamma``), has a
step-size bias linear in the fraction of the stability edge, a temperature effect ``T / nbeta``,
is not valid below a resolution and not stationary above one -- so every branch of the ladder,
the checks and the fallback runs in milliseconds and the expected choice follows from the
docstring by hand. Tolerances are tested exactly at their edge (numbers whose ratios are exact
in binary, e.g. 21 / 20 - 1 == 0.05) and just beyond. A few real tiny runs check what a fake
cannot: the stage entry point on a trained run, ``top_curvature`` against a known Hessian, the
preconditioners by hand and that the symmetries leave the function unchanged. The slow
known-answer calibrations are in tests/test_calibrate_known.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
import torch
from known_answers import deep_linear_problem, reduced_rank_problem, regular_problem, rescale
from torch import nn

import grokking_llc.sampling.calibrate as cal
from grokking_llc.core.model import QuadraticNet
from grokking_llc.core.settings import SamplerConfig
from grokking_llc.sampling import validity
from grokking_llc.sampling.chosen import chosen_sampler
from grokking_llc.sampling.llc import LLCResult, estimate_llc
from grokking_llc.science.sampler_checks import calibration_points

from .helpers import half_mse

torch.set_num_threads(1)


LAM = 2.0  # largest Hessian eigenvalue at every target (times the target's curvature factor)


GN = 0.5  # every entry of gn_diag's preconditioner: lambda_G = GN lambda, g_max = GN


P, WIDTH = 3, 2  # the quadratic net of the targets (its symmetry is the rescaling check's)


def target_state(k: int) -> dict[str, torch.Tensor]:
    """Target k's checkpoint: W = 0.5 + k, V = 1 everywhere, so a loaded state tells which
    target it is and by which factor it was rescaled (W -> cW, V -> V / c^2)."""
    return {"W": torch.full((2 * P, WIDTH), 0.5 + k), "V": torch.ones(WIDTH, P)}


def identify(state) -> tuple[int, float]:
    """(target k, rescaling c) of a loaded state (target_state)."""
    c = 1.0 / math.sqrt(float(state["V"].detach()[0, 0]))
    k = round(float(state["W"].detach()[0, 0]) / c - 0.5)
    return k, round(c, 6)


@dataclass
class Call:
    """One estimate the calibration asked for, with what the world reads off it."""

    kind: str
    nbeta: float
    gamma: float
    lr: float
    k: int  # target
    c: float  # rescaling factor
    seed: int
    lr_scaled: float  # lr as a fraction of this state's own stability edge
    kappa: float  # resolution nbeta lambda / gamma of the unrescaled target

    @property
    def rung(self) -> float:
        """kappa rounded to its power of two (gamma is rounded to 4 digits by the ladder)."""
        return 2.0 ** round(math.log2(self.kappa))

    @property
    def frac(self) -> float:
        """lr_scaled rounded to 3 digits (the step is rounded to 4 by the calibration)."""
        return float(f"{self.lr_scaled:.3g}")


@dataclass
class World:
    """``estimate = L0 (1 - B / kappa) (1 + S lr_scaled) (1 + T / nbeta)`` (the same at any
    rescaling: the true LLC is invariant, and kappa is the unrescaled target's); not valid
    (localisation-dominated) below ``kappa_min``, not stationary above ``kappa_max``; targets in
    ``not_min`` are not minima (negative estimate); ``curv[k]`` scales target k's curvature.
    ``tweak(call)`` may return overrides: llc, se, valid, stationary, at_minimum, reason."""

    L0: float = 10.0
    B: float = 3.2
    S: float = 0.25
    T: float = 50.0
    kappa_min: float = 64.0
    kappa_max: float = math.inf
    not_min: tuple = ()
    curv: dict = field(default_factory=dict)
    tweak: Callable[[Call], dict | None] | None = None
    calls: list = field(default_factory=list)
    mala_calls: list = field(default_factory=list)
    mala: Callable[[dict], LLCResult] | None = None

    def lam(self, k: int, c: float) -> float:
        """Largest Hessian eigenvalue of target k rescaled by c (grows as c^2, as W's scale)."""
        return LAM * self.curv.get(k, 1.0) * c**2

    def scale(self, kind: str, k: int, c: float) -> tuple[float, float]:
        """(lambda of G^(1/2) H G^(1/2), g_max) of ``kind``."""
        g = GN if kind == "gn_diag" else 1.0
        return self.lam(k, c) * g, g

    # the three functions the calibration calls
    def estimate_llc(self, model, x, y, loss_fn, settings, *, seed, backend, device, diag_every):
        k, c = identify(dict(model.named_parameters()))
        kind = settings.get("kind", "sgld")
        nbeta, gamma, lr = settings["nbeta"], settings["localization"], settings["lr"]
        lam, gmax = self.scale(kind, k, c)
        call = Call(kind, nbeta, gamma, lr, k, c, seed, lr * (nbeta * lam + gamma * gmax),
                    nbeta * self.lam(k, 1.0) / gamma)  # fmt: skip
        self.calls.append(call)
        llc = (self.L0 * (1 - self.B / call.kappa) * (1 + self.S * call.lr_scaled)
               * (1 + self.T / nbeta))  # fmt: skip
        out = dict(llc=llc, se=1e-4 * abs(llc), valid=True, stationary=True, at_minimum=True,
                   reason="")  # fmt: skip
        if call.kappa < self.kappa_min:
            out.update(valid=False, reason="localisation-dominated (grad/loc 0.5)")
        if call.kappa > self.kappa_max:
            out.update(valid=False, stationary=False, reason="r_hat 1.3 >= 1.1")
        if k in self.not_min:
            out.update(llc=-5.0, valid=False, at_minimum=False,
                       reason="not_a_minimum: the chains found lower loss than w*")  # fmt: skip
        if self.tweak is not None:
            out.update(self.tweak(call) or {})
        return result(**out, nbeta=nbeta, kind=kind)

    def top_curvature(self, model, params, x, y, loss_fn, *, precond=None, iters=30, seed=0):
        k, c = identify(params)
        return self.lam(k, c) * (GN if precond is not None else 1.0)

    def preconditioner(self, model, params, x, y, loss_fn, opts, batch_size, seed):
        if opts.kind == "sgld":
            return None
        return {k: torch.full_like(v, GN) for k, v in params.items()}

    def estimate_llc_mala(self, model, x, y, loss_fn, **kw):
        self.mala_calls.append({**kw, "state": identify(dict(model.named_parameters()))})
        return self.mala(kw) if self.mala else result(12.0, nbeta=kw["nbeta"])

    # what a test reads back
    def of(self, **where) -> list[Call]:
        return [c for c in self.calls if all(getattr(c, k) == v for k, v in where.items())]


def result(llc, *, se=None, valid=True, stationary=True, at_minimum=True, reason="", nbeta=1.0,
           kind="sgld") -> LLCResult:  # fmt: skip
    status = validity.VALID if valid else (
        validity.INVALID if at_minimum else validity.NOT_A_MINIMUM)  # fmt: skip
    return LLCResult(
        llc_mean=llc, llc_std=0.0, llc_per_chain=np.full(4, llc), loss_trace=np.zeros((4, 3)),
        init_loss=0.0, nbeta=nbeta, num_burnin_steps=0,
        llc_se=1e-4 * abs(llc) if se is None else se, r_hat=1.01 if stationary else 1.3,
        stationary=stationary, step_ok=True, localisation_dominated="dominated" in reason,
        at_minimum=at_minimum, valid=valid, status=status,
        invalid_reason="" if valid else (reason or "not valid"), sampler_kind=kind,
    )  # fmt: skip


def loss(pred, y):
    return ((pred - y) ** 2).mean()


def make_targets(n: int = 1) -> list[cal.Target]:
    model = QuadraticNet(P, width=WIDTH, generator=torch.Generator().manual_seed(0))
    x = torch.tensor([[0, 1], [1, 2], [2, 0], [1, 1]])
    y = torch.zeros(4, P)
    return [cal.Target(model, target_state(k), x, y, loss, seed=10 + k,
                       labels={"step": 100 * k}) for k in range(n)]  # fmt: skip


BASE = {"num_chains": 4, "num_burnin_steps": 0, "batch_size": 4}


GRID = {"kind": ["sgld"], "nbeta": [1000.0]}  # the default ladder and steps


def calibrate(monkeypatch, world: World, *, n: int = 1, targets=None, grid=GRID, **kw):
    """calibrate_targets on ``n`` targets of the world (the quadratic net's symmetry)."""
    monkeypatch.setattr(cal, "estimate_llc", world.estimate_llc)
    monkeypatch.setattr(cal, "top_curvature", world.top_curvature)
    monkeypatch.setattr(cal, "_preconditioner", world.preconditioner)
    from grokking_llc.sampling import mala

    monkeypatch.setattr(mala, "estimate_llc_mala", world.estimate_llc_mala)
    kw.setdefault("symmetry", cal.quadratic_rescaling)
    kw.setdefault("base", BASE)
    kw.setdefault("num_steps", 100)
    return cal.calibrate_targets(targets or make_targets(n), grid=grid, **kw)


def gamma_at(kappa: float, nbeta: float = 1000.0, k: int = 0, world=None) -> float:
    """The ladder's gamma at resolution kappa (4 significant digits, as the calibration)."""
    lam = (world or World()).lam(k, 1.0)
    return float(f"{nbeta * lam / kappa:.4g}")


def lr_of(frac: float, nbeta: float, gamma: float, lam: float = LAM, gmax: float = 1.0) -> float:
    """The absolute step at ``frac`` of the stability edge (4 significant digits)."""
    return float(f"{frac / (nbeta * lam + gamma * gmax):.4g}")


def rows(res, role, **where) -> pd.DataFrame:
    t = res.table
    mask = t["role"] == role
    for key, value in where.items():
        mask &= t[key] == value
    return t[mask]


def ladder_value(world: World, kappa: float, frac: float = 0.2, nbeta: float = 1000.0) -> float:
    return world.L0 * (1 - world.B / kappa) * (1 + world.S * frac) * (1 + world.T / nbeta)


def ladder_values(values: dict[float, float]):
    """A tweak: the estimate at rung kappa (unrescaled, full nbeta, lr_scaled 0.2) is
    values[kappa]; the checks' runs read 20 (they agree with the candidate)."""

    def tweak(call: Call):
        if call.c == 1.0 and call.nbeta == 1000.0 and call.frac == 0.2 and call.k == 0:
            return {"llc": values.get(call.rung, 20.0), "se": 1e-3}
        return {"llc": 20.0, "se": 1e-3}

    return tweak


def check_values(candidate: float, final: int = 0, **others: float):
    """A tweak: at the final target every rung of the ladder estimates ``candidate`` (so the
    ladder has converged at rung 256); each check's run estimates ``others[role]`` (step: a
    step below 0.2 of the edge, which becomes the candidate's; nbeta, x2, x05), by default
    ``candidate``. ``final``: the index of the final target."""

    def tweak(call: Call):
        if call.k != final:
            return None
        if call.c != 1.0:
            value = others.get("x2" if call.c == 2.0 else "x05", candidate)
        elif call.nbeta == 500.0:
            value = others.get("nbeta", candidate)
        elif call.frac < 0.2:
            value = others.get("step", candidate)
        else:
            value = candidate
        return {"llc": value, "se": 1e-3}

    return tweak


def failing_nbeta(nbetas):
    """A tweak: the nbeta check fails (moves 50%) for candidates at these nbeta."""

    def tweak(call: Call):
        if call.k == 0 and call.c == 1.0 and 2 * call.nbeta in nbetas and call.rung == 256:
            return {"llc": 30.0, "se": 1e-3}
        return None

    return tweak


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


def test_default_search_is_the_documented_one():
    base = 1124 / math.log(1124)
    got = cal.default_search(1124)
    assert got == {
        "kind": ["gn_diag"],
        "nbeta": [float(f"{512 * base:.4g}"), float(f"{64 * base:.4g}")],
        "resolution": [32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0],
        "lr_scaled": [0.2, 0.1, 0.05, 0.025],
    }
    assert got["nbeta"] == [81920.0, 10240.0]  # n / ln n = 160.0 at n = 1124
    assert cal.default_grid(1124) == got
    assert cal.default_search(2)["nbeta"] == [512.0, 64.0]  # n / ln n needs n > 2
    assert cal._DEFAULTS["max_steps"] == 20_000 and cal.RESCALE_FACTORS == (2.0, 0.5)
    assert cal.REFERENCE_TOL == 0.05


def test_grid_is_sorted_deduplicated_and_filled_with_defaults():
    out = cal._normalise_grid({"nbeta": [10, 1000.0, 10.0], "resolution": [256, 64, 128],
                               "lr_scaled": [0.05, 0.2], "kind": ["sgld", "gn_diag"],
                               "localization": None}, 100)  # fmt: skip
    assert out == {"kind": ["sgld", "gn_diag"], "nbeta": [1000.0, 10.0],
                   "resolution": [64.0, 128.0, 256.0], "lr_scaled": [0.2, 0.05]}  # fmt: skip
    # an explicit ladder of localisations replaces the resolutions, largest gamma first
    out = cal._normalise_grid({"localization": [1.0, 100.0, 10.0]}, 100)
    assert out["localization"] == [100.0, 10.0, 1.0] and "resolution" not in out
    assert out["nbeta"] == cal.default_search(100)["nbeta"]
    assert cal._normalise_grid(None, 50) == cal.default_search(50)


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"gamma": [1.0], "lr": [1e-3]}, r"unknown key\(s\) \['gamma', 'lr'\]; use \('kind'"),
        ({"localization": [1.0], "resolution": [64.0]}, "give localization or resolution"),
        ({"kind": ["adam"]}, "unknown kind 'adam'; choose from"),
        ({"nbeta": []}, "nbeta needs positive values"),
        ({"nbeta": [100.0, 0.0]}, "nbeta needs positive values"),
        ({"localization": [-1.0]}, "localization needs positive values"),
        ({"resolution": [math.nan]}, "resolution needs positive values"),
        ({"lr_scaled": [0.1, -0.1]}, "lr_scaled needs positive values"),
    ],
)
def test_bad_grids_are_refused_naming_the_key(grid, message):
    with pytest.raises(ValueError, match=f"^calibration grid: {message}"):
        cal._normalise_grid(grid, 100)


def test_bad_arguments_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="at least one target"):
        cal.calibrate_targets([])
    with pytest.raises(ValueError, match="reference 'hmc': choose 'mala' or None"):
        calibrate(monkeypatch, World(), reference="hmc")
    with pytest.raises(ValueError, match="num_steps 20 leaves too few draws after the burn-in"):
        calibrate(monkeypatch, World(), base={**BASE, "num_burnin_steps": 5}, num_steps=20)
    calibrate(monkeypatch, World(), base={**BASE, "num_burnin_steps": 4}, num_steps=20)  # 16 ok
    with pytest.raises(Exception, match="unknown key"):
        calibrate(monkeypatch, World(), base={**BASE, "nbetaa": 3.0})
    with pytest.raises(ValueError, match="unknown kind"):
        calibrate(monkeypatch, World(), grid={"kind": ["adam"]})
    model = QuadraticNet(P, width=WIDTH)
    x = torch.zeros(4, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="needs at least one checkpoint"):
        cal.calibrate_checkpoints(model, [], x, torch.zeros(4, P), loss)


def test_a_valid_choice_the_ladder_stops_at_the_third_valid_rung(monkeypatch):
    """Rung 32 is localisation-dominated; 64, 128, 256 are valid and the rest of their
    geometric series (bias B / kappa halves per rung, q = 1/2) is (B/256) / (1 - B/256) = 1.3%
    <= 5%: the candidate is rung 256. Halving its step (0.2 of the edge) moves the estimate by
    1.025 / 1.05 - 1 = -2.4%, so the smaller step, 0.1, is the candidate's; it passes every
    check."""
    w = World()
    res = calibrate(monkeypatch, w)
    assert res.chosen_valid, res.reason
    ladder = rows(res, "ladder")
    assert ladder["resolution"].tolist() == pytest.approx([32, 64, 128, 256], rel=1e-3)
    assert ladder["valid"].tolist() == [False, True, True, True]
    assert [c.rung for c in w.of(kind="sgld", c=1.0, nbeta=1000.0, frac=0.2)] == [32, 64, 128,
                                                                                 256]  # fmt: skip
    vals = [ladder_value(w, k) for k in (64, 128, 256)]
    # gamma_change from the second valid rung on, gamma_bias from the third
    assert ladder["gamma_change"].isna().tolist() == [True, True, False, False]
    assert ladder["gamma_change"].iloc[3] == pytest.approx((vals[2] - vals[1]) / vals[1], rel=1e-3)
    # (gamma is rounded to 4 digits: kappa = 128.04, 256.02, and q is not quite 1/2)
    assert ladder["gamma_bias"].iloc[3] == pytest.approx((3.2 / 256) / (1 - 3.2 / 256), rel=1e-2)
    gamma = gamma_at(256)
    assert res.chosen == {**BASE, "lr": lr_of(0.1, 1000.0, gamma), "nbeta": 1000.0,
                          "localization": gamma, "num_draws": 100, "num_burnin_steps": 0,
                          "max_steps": cal._DEFAULTS["max_steps"]}  # fmt: skip
    assert res.reason == (
        f"sgld lr={res.chosen['lr']:.3g} nbeta=1000 gamma={gamma:.4g} passed every check "
        "(step size, gamma, nbeta, rescaling) at 1 target(s)."
    )
    [cand] = rows(res, "candidate").itertuples()
    assert cand.gamma_bias == ladder["gamma_bias"].iloc[3] and cand.checks_passed
    assert cand.check_failures == "" and cand.resolution == pytest.approx(256, rel=1e-3)
    assert cand.lr_scaled == 0.1 and cand.eps_change == pytest.approx(1.025 / 1.05 - 1, rel=1e-3)
    assert rows(res, "step")["lr_scaled"].tolist() == [0.2, 0.1]


@pytest.mark.parametrize("B, stop", [(0.5, 256), (3.2, 256), (16.0, 512), (40.0, 1024)])
def test_the_ladder_stops_where_the_remaining_bias_is_within_tolerance(monkeypatch, B, stop):
    """B = 16: at 256 the bias left is (16/256) / (1 - 16/256) = 6.7% > 5%, at 512 3.2%.
    B = 40: 512 leaves 8.5%, 1024 4.1%."""
    w = World(B=B)
    res = calibrate(monkeypatch, w)
    assert res.chosen_valid
    assert rows(res, "ladder")["resolution"].max() == pytest.approx(stop, rel=1e-3)
    assert res.chosen["localization"] == gamma_at(stop)
    bias = (B / stop) / (1 - B / stop)
    assert rows(res, "candidate")["gamma_bias"].iloc[0] == pytest.approx(bias, rel=1e-2)


@pytest.mark.parametrize(
    "values, stop",
    [
        # d1 = 2, d2 = 1, q = 1/2: the rest of the series is 1 / 20 = 5% exactly: accepted
        ({64: 17.0, 128: 19.0, 256: 20.0, 512: 20.0}, 256),
        # d2 = 1.02, q = 0.51: 5.3%: not accepted; 128, 256, 512 converge
        ({64: 16.98, 128: 18.98, 256: 20.0, 512: 20.4}, 512),
        # the ladder diverges (q >= 1): inf, until it converges
        ({64: 19.0, 128: 19.5, 256: 20.5, 512: 20.5}, 512),
    ],
)
def test_the_remaining_bias_is_accepted_at_the_tolerance_not_beyond(monkeypatch, values, stop):
    res = calibrate(monkeypatch, World(tweak=ladder_values(values)))
    ladder = rows(res, "ladder")
    assert ladder["resolution"].max() == pytest.approx(stop, rel=1e-3)
    biases = ladder["gamma_bias"].tolist()
    assert biases[-1] <= validity.GAMMA_TOL
    assert all(not b <= validity.GAMMA_TOL for b in biases[:-1])
    if stop == 256:
        assert biases[-1] == validity.GAMMA_TOL


def test_an_invalid_rung_restarts_the_count_of_valid_ones(monkeypatch):
    """Rung 128 not valid: 64 | 256, 512, 1024 -- the candidate is rung 1024."""
    w = World(tweak=lambda c: {"valid": False, "reason": "ess 10 < 400"} if c.rung == 128 else None)
    res = calibrate(monkeypatch, w)
    assert rows(res, "ladder")["resolution"].tolist() == pytest.approx(
        [32, 64, 128, 256, 512, 1024], rel=1e-3
    )
    assert res.chosen["localization"] == gamma_at(1024) and res.chosen_valid


def test_a_rung_not_stationary_at_a_minimum_ends_the_ladder(monkeypatch):
    """kappa_max 200: rung 256 is not stationary and finer ones would relax more slowly still,
    so the ladder stops there; two valid rungs make no candidate; the fallback is the rung
    that got furthest (valid, then stationary, then the finest), marked NOT valid."""
    w = World(kappa_max=200.0)
    res = calibrate(monkeypatch, w)
    assert [c.rung for c in w.calls] == [32, 64, 128, 256]
    assert not res.chosen_valid and res.chosen["localization"] == gamma_at(128)
    assert res.reason == (
        "no setting reached a candidate (no ladder had three valid rungs whose remaining bias "
        f"was within 5% as gamma halved); chose sgld lr={res.chosen['lr']:.3g} nbeta=1000 "
        f"gamma={gamma_at(128):.4g}, the rung that got furthest, NOT valid at step 0: valid, "
        "but its ladder did not converge."
    )
    chosen = res.table[res.table["chosen"]]
    assert set(chosen["role"]) == {"ladder", "candidate"} and not chosen["chosen_valid"].any()
    # the same at a target that is not a minimum there: the ladder goes on
    w = World(kappa_max=200.0, tweak=lambda c: {"at_minimum": False} if c.rung >= 256 else None)
    calibrate(monkeypatch, w)
    assert [c.rung for c in w.calls][-1] == 4096


def test_the_fallback_rung_prefers_valid_to_finer(monkeypatch):
    """Rung 256 is stationary but not valid, 512 not stationary (the ladder ends): the valid
    rung 128 is the fallback, not the finer 256."""
    w = World(
        kappa_max=300.0,
        tweak=lambda c: {"valid": False, "reason": "ess 10 < 400"} if c.rung == 256 else None,
    )
    res = calibrate(monkeypatch, w)
    assert [c.rung for c in w.calls] == [32, 64, 128, 256, 512]
    assert res.chosen["localization"] == gamma_at(128) and not res.chosen_valid


def test_no_valid_rung_falls_back_to_the_finest_stationary_one(monkeypatch):
    w = World(kappa_min=math.inf, kappa_max=600.0)
    res = calibrate(monkeypatch, w)
    assert res.chosen["localization"] == gamma_at(512) and not res.chosen_valid
    assert res.reason.endswith("NOT valid at step 0: localisation-dominated (grad/loc 0.5).")


def test_no_finite_estimate_still_chooses_the_coarsest_rung_marked_not_valid(monkeypatch):
    """Every chain diverged everywhere: the first rung tried (the coarsest resolution of the
    first kind and nbeta, at the ladder's step) is chosen, NOT valid, so the pipeline's
    estimates of that shape are still made (and flagged) instead of stopped by a missing
    setting; the reason says every chain diverged and where."""
    res = calibrate(monkeypatch, World(tweak=lambda c: {"llc": math.nan, "valid": False}))
    table = res.table
    first = table[table["role"] == "ladder"].iloc[0]
    assert res.chosen is not None and not res.chosen_valid
    assert res.chosen["lr"] == first["lr"] and res.chosen["localization"] == first["localization"]
    assert res.reason.startswith("no setting gave a finite estimate at step ")
    assert "the coarsest rung tried, NOT valid" in res.reason
    assert table["chosen"].any() and not table["chosen_valid"].any()
    settings, valid, reason = chosen_sampler(table)
    assert settings == res.chosen and not valid and reason == res.reason


def test_the_step_walk_stops_at_the_first_step_a_smaller_one_does_not_move(monkeypatch):
    """S = 1: 0.2 -> 0.1 moves the estimate by 1.1 / 1.2 - 1 = -8.3% (> 5%), 0.1 -> 0.05 by
    1.05 / 1.1 - 1 = -4.5%: the candidate's step is the smaller of that pair, 0.05 of the
    edge, and the other checks run there."""
    w = World(S=1.0)
    res = calibrate(monkeypatch, w)
    gamma = gamma_at(256)
    assert res.chosen_valid and res.chosen["lr"] == lr_of(0.05, 1000.0, gamma)
    assert [c.frac for c in w.of(nbeta=1000.0, c=1.0, rung=256)] == [0.2, 0.1, 0.05]
    [cand] = rows(res, "candidate").itertuples()
    assert cand.lr_scaled == 0.05 and cand.eps_change == pytest.approx(1.05 / 1.1 - 1, rel=1e-3)
    assert rows(res, "step")["lr_scaled"].tolist() == [0.2, 0.1, 0.05]
    assert [c.frac for c in w.of(nbeta=500.0)] == [0.05]  # nbeta check at the chosen fraction
    assert all(c.frac == 0.05 for c in w.calls if c.c != 1.0)


def test_a_smaller_step_that_agrees_but_is_not_valid_fails_the_candidate(monkeypatch):
    """0.1 of the edge agrees with 0.2 (S = 0.25) and becomes the candidate's step, but its
    estimate is not valid there: the candidate fails, saying so."""
    w = World(tweak=lambda c: {"valid": False, "reason": "ess 10 < 400"}
              if c.frac == 0.1 and c.nbeta == 1000.0 and c.c == 1.0 else None)  # fmt: skip
    res = calibrate(monkeypatch, w)
    assert not res.chosen_valid and "estimate at step 0: ess 10 < 400" in res.reason
    assert "step size" in res.reason.split("passed most (")[1].split(")")[0]


def test_the_step_walk_fails_when_the_smaller_step_is_not_valid(monkeypatch):
    w = World(S=1.0, tweak=lambda c: {"valid": False, "reason": "ess 10 < 400"}
              if c.frac == 0.1 else None)  # fmt: skip
    res = calibrate(monkeypatch, w)
    assert not res.chosen_valid
    assert "step size at step 0: moves -8.3% (> 5%); the smaller step is not valid" in res.reason
    assert res.chosen["lr"] == lr_of(0.2, 1000.0, gamma_at(256))


def test_the_step_walk_can_run_out_of_steps(monkeypatch):
    res = calibrate(monkeypatch, World(S=10.0))
    assert not res.chosen_valid
    assert "step size at step 0: no smaller step left to compare with" in res.reason
    assert rows(res, "candidate")["lr_scaled"].tolist() == [0.025]  # the last step reached
    assert rows(res, "step")["lr_scaled"].tolist() == [0.2, 0.1, 0.05, 0.025]
    res = calibrate(monkeypatch, World(), grid={**GRID, "lr_scaled": [0.2]})
    assert "step size at step 0: no smaller step left to compare with" in res.reason
    assert math.isnan(rows(res, "candidate")["eps_change"].iloc[0])


@pytest.mark.parametrize("step, chosen", [(21.0, 0.1), (19.0, 0.1), (21.02, 0.05)])
def test_the_step_check_at_its_tolerance_and_just_beyond(monkeypatch, step, chosen):
    """Halving the step moves 20 to 21 (+5% exactly): the pair agrees and its smaller step,
    0.1, is the candidate's; to 21.02 (+5.1%): the walk goes on, 0.05 does not move 0.1's
    estimate, so 0.05 is the candidate's step, and the checks run there."""
    res = calibrate(monkeypatch, World(tweak=check_values(20.0, step=step)))
    assert res.chosen_valid, res.reason
    assert res.chosen["lr"] == lr_of(chosen, 1000.0, gamma_at(256))
    [cand] = rows(res, "candidate").itertuples()
    assert cand.lr_scaled == chosen and cand.llc_mean == step
    assert cand.eps_change == pytest.approx(step / 20 - 1 if chosen == 0.1 else 0)
    assert rows(res, "nbeta")["lr_scaled"].tolist() == [chosen]


@pytest.mark.parametrize(
    "role, value, failure",
    [
        ("nbeta", 22.0, None),  # +10% exactly
        ("nbeta", 18.0, None),  # -10% exactly
        ("nbeta", 22.02, "nbeta at step 0: moves +10.1% (> 10%)"),
        ("x2", 22.0, None),
        ("x2", 17.98, "rescaling x2 at step 0: moves -10.1% (> 10%)"),
        ("x05", 18.0, None),
        ("x05", 22.02, "rescaling x0.5 at step 0: moves +10.1% (> 10%)"),
    ],
)
def test_each_check_passes_at_its_tolerance_and_fails_just_beyond(monkeypatch, role, value,
                                                                  failure):  # fmt: skip
    res = calibrate(monkeypatch, World(tweak=check_values(20.0, **{role: value})))
    cand = rows(res, "candidate").iloc[-1]
    if role == "nbeta":
        assert cand["nbeta_change"] == pytest.approx(value / 20 - 1)
    else:
        assert cand["rescale_change"] == pytest.approx(abs(value / 20 - 1))
        assert cand[f"llc_rescaled_{role[1:].replace('05', '0.5')}"] == value
    if failure is None:
        assert res.chosen_valid, res.reason
        assert bool(cand["checks_passed"]) and cand["check_failures"] == ""
        return
    assert not res.chosen_valid and failure in res.reason
    assert cand["check_failures"] == failure and not cand["checks_passed"]


def test_a_check_too_noisy_to_tell_fails(monkeypatch):
    """The nbeta run agrees exactly but its standard error is above half the tolerance."""

    def tweak(call):
        if call.nbeta == 500.0:
            return {"llc": 20.0, "se": 0.051 * 20.0}
        return check_values(20.0)(call)

    res = calibrate(monkeypatch, World(tweak=tweak))
    assert not res.chosen_valid and "nbeta at step 0: too noisy to tell (SE 5.1%)" in res.reason


def test_the_nbeta_check_halves_nbeta_and_gamma_at_its_own_edge(monkeypatch):
    """T = 50: (1 + 50/500) / (1 + 50/1000) - 1 = 4.8% passes; T = 120: 10.7% fails."""
    w = World()
    res = calibrate(monkeypatch, w)
    gamma = gamma_at(256)
    [half] = w.of(nbeta=500.0)
    assert half.gamma == gamma / 2 and half.lr == lr_of(0.1, 500.0, gamma / 2)
    assert half.kappa == pytest.approx(256, rel=1e-3)  # the same resolution
    row = rows(res, "nbeta").iloc[0]
    assert row["nbeta"] == 500.0 and row["localization"] == gamma / 2
    cand = rows(res, "candidate").iloc[0]
    assert cand["nbeta_change"] == pytest.approx(1.1 / 1.05 - 1, rel=1e-3)
    res = calibrate(monkeypatch, World(T=120.0))
    assert not res.chosen_valid and "nbeta at step 0: moves +10.7% (> 10%)" in res.reason


def test_rescaled_states_run_at_their_own_stability_edge(monkeypatch):
    """lambda grows as c^2 under W -> cW: the x2 state runs at 0.1 / (nbeta 4 lambda + gamma),
    the x0.5 one at 0.1 / (nbeta lambda / 4 + gamma) (0.1: the candidate's fraction of the
    edge); the table records both."""
    w = World()
    res = calibrate(monkeypatch, w)
    gamma = gamma_at(256)
    [x2] = w.of(c=2.0)
    [x05] = w.of(c=0.5)
    assert x2.lr == lr_of(0.1, 1000.0, gamma, lam=4 * LAM)
    assert x05.lr == lr_of(0.1, 1000.0, gamma, lam=LAM / 4)
    assert x2.frac == x05.frac == 0.1 and x2.seed == x05.seed == 10
    r2, r05 = rows(res, "rescale x2").iloc[0], rows(res, "rescale x0.5").iloc[0]
    assert r2["rescale"] == 2.0 and r2["curvature"] == 4 * LAM and r2["lr"] == x2.lr
    assert r05["rescale"] == 0.5 and r05["curvature"] == LAM / 4
    cand = rows(res, "candidate").iloc[0]
    assert cand["llc_rescaled_2"] == r2["llc_mean"] and cand["llc_rescaled_0.5"] == r05["llc_mean"]
    assert not r2["chosen"] and not r05["chosen"]  # a rescaled run is never the chosen row


def test_rescaled_rows_are_never_chosen_even_at_the_same_step(monkeypatch):
    """A symmetry that leaves the curvature alone: the rescaled runs have the chosen settings
    exactly, and are still not the chosen rows (they are another state)."""
    w = World()
    w.lam = lambda k, c: LAM
    res = calibrate(monkeypatch, w)
    t = res.table
    rescaled = t[t["rescale"] != 1.0]
    assert len(rescaled) == 2 and set(rescaled["settings"]) == {
        json.dumps(res.chosen, sort_keys=True)
    }
    assert not rescaled["chosen"].any() and res.chosen_valid


def test_gn_diag_steps_use_its_preconditioned_curvature_and_g_max(monkeypatch):
    """gn_diag: lambda_G = GN lambda, g_max = GN, the step 0.1 / (nbeta GN lambda + gamma GN);
    the ladder's resolution uses the plain Hessian's lambda, as for SGLD."""
    w = World()
    res = calibrate(monkeypatch, w, grid={"kind": ["gn_diag"], "nbeta": [1000.0]})
    gamma = gamma_at(256)
    assert res.chosen["kind"] == "gn_diag" and res.chosen_valid
    assert res.chosen["lr"] == lr_of(0.1, 1000.0, gamma, lam=GN * LAM, gmax=GN)
    cand = rows(res, "candidate").iloc[0]
    assert cand["curvature"] == GN * LAM and cand["precond_max"] == GN
    assert cand["resolution"] == pytest.approx(256, rel=1e-3)
    [x2] = w.of(c=2.0)
    assert x2.lr == lr_of(0.1, 1000.0, gamma, lam=4 * GN * LAM, gmax=GN)


def test_without_a_symmetry_there_is_no_rescaling_check_and_a_targets_own_is_used(monkeypatch):
    w = World()
    res = calibrate(monkeypatch, w, symmetry=None)
    assert res.chosen_valid and not w.of(c=2.0) and "rescaling" not in res.reason
    assert not any(r.startswith("rescale") for r in res.table["role"])
    assert math.isnan(rows(res, "candidate")["rescale_change"].iloc[0])
    targets = make_targets()
    targets[0].symmetry = cal.quadratic_rescaling
    w = World()
    res = calibrate(monkeypatch, w, targets=targets, symmetry=None)
    assert len(w.of(c=2.0)) == len(w.of(c=0.5)) == 1 and "rescaling" in res.reason


@pytest.mark.parametrize(
    "llc, ref_valid, failure",
    [
        (21.0, True, None),  # +5% of the reference exactly
        (19.0, True, None),
        (21.02, True, "MALA reference at step 0: moves +5.1% (> 5%)"),
        (20.0, False, "MALA reference at step 0: the reference is not valid (r_hat 2)"),
    ],
)
def test_the_reference_check(monkeypatch, llc, ref_valid, failure):
    """A full-batch MALA estimate of 20 at the candidate's nbeta and gamma, at the final
    target's state and seed; the candidate must agree within 5% of it."""
    w = World(tweak=check_values(llc))
    w.mala = lambda kw: result(20.0, se=1e-3, valid=ref_valid, reason="r_hat 2", nbeta=kw["nbeta"])
    res = calibrate(monkeypatch, w, reference="mala")
    [kw] = w.mala_calls
    gamma = gamma_at(256)
    assert (kw["nbeta"], kw["localization"], kw["seed"], kw["state"]) == (1000.0, gamma, 10,
                                                                          (0, 1.0))  # fmt: skip
    assert kw["num_chains"] == 4 and kw["num_warmup"] == 500 and kw["num_draws"] == 1000
    row = rows(res, "reference").iloc[0]
    assert row["kind"] == "mala" and row["llc_mean"] == 20.0 and math.isnan(row["lr"])
    assert row["nbeta"] == 1000.0 and row["localization"] == gamma
    cand = rows(res, "candidate").iloc[0]
    assert cand["reference_llc"] == 20.0
    assert cand["reference_change"] == pytest.approx((llc - 20.0) / 20.0)
    if failure is None:
        assert res.chosen_valid and "rescaling, reference)" in res.reason
    else:
        assert not res.chosen_valid and failure in res.reason


def test_no_reference_by_default(monkeypatch):
    w = World()
    res = calibrate(monkeypatch, w)
    assert not w.mala_calls and "reference" not in set(res.table["role"])
    assert rows(res, "candidate")["reference_llc"].isna().all()


def test_other_targets_run_at_the_final_targets_step_with_their_own_seeds(monkeypatch):
    """Three targets, the last the final one (where the search runs); the others' curvature is
    higher, but they run at the final target's absolute step. Every estimate at target k uses
    target k's seed (common random numbers)."""
    w = World(curv={0: 3.0, 1: 5.0})
    res = calibrate(monkeypatch, w, n=3)
    assert res.chosen_valid and res.reason.endswith("at 3 target(s).")
    for k in (0, 1):
        [call] = w.of(k=k)
        assert call.lr == res.chosen["lr"] and call.nbeta == 1000.0
    assert {c.seed for c in w.calls if c.k == 2} == {12}
    assert {(c.k, c.seed) for c in w.calls} == {(0, 10), (1, 11), (2, 12)}
    # the ladder ran at the final target with its curvature (1): kappa = nbeta LAM / gamma
    assert res.chosen["localization"] == gamma_at(256, k=2, world=w)
    chosen = res.table[res.table["chosen"]]
    assert sorted(chosen["step"].unique()) == [0, 100, 200]
    assert set(chosen[chosen["step"] < 200]["role"]) == {"target"}
    assert chosen["chosen_valid"].all()
    t = res.table
    assert t["target"].tolist() == sorted(t["target"]) and t["step"].tolist() == sorted(t["step"])


def test_a_target_that_is_not_a_minimum_does_not_veto(monkeypatch):
    res = calibrate(monkeypatch, World(not_min=(0,)), n=3)
    assert res.chosen_valid, res.reason
    row = rows(res, "target", step=0).iloc[0]
    assert row["status"] == validity.NOT_A_MINIMUM and not row["valid"]


def test_an_invalid_other_target_vetoes_and_the_reason_names_it(monkeypatch):
    w = World(tweak=lambda c: {"valid": False, "reason": "ess 10 < 400"} if c.k == 1 else None)
    res = calibrate(monkeypatch, w, n=3)
    assert not res.chosen_valid
    assert res.reason.endswith("NOT valid: estimate at step 100: ess 10 < 400.")
    assert "the candidate that passed most (step size, gamma, nbeta, rescaling)" in res.reason
    cand = rows(res, "candidate", step=200).iloc[0]
    assert cand["check_failures"] == "estimate at step 100: ess 10 < 400"


def test_labels_of_several_runs_name_the_target(monkeypatch):
    targets = make_targets(2)
    targets[0].labels = {"run_id": "a", "step": 7}
    targets[1].labels = {"run_id": "b", "step": 9}
    w = World(tweak=lambda c: {"valid": False, "reason": "ess 10 < 400"} if c.k == 0 else None)
    res = calibrate(monkeypatch, w, targets=targets)
    assert "estimate at run_id a, step 7: ess 10 < 400" in res.reason
    assert list(res.table.columns[:3]) == ["run_id", "step", "target"]
    assert set(res.table["run_id"]) == {"a", "b"}


def test_kinds_are_tried_in_order_and_the_first_passing_candidate_wins(monkeypatch):
    w = World()
    res = calibrate(monkeypatch, w, grid={"nbeta": [1000.0, 100.0]})  # default kinds
    assert w.calls[0].kind == "gn_diag" and res.chosen["kind"] == "gn_diag"
    assert {c.kind for c in w.calls} == {"gn_diag"} and {c.nbeta for c in w.calls} == {
        1000.0,
        500.0,
    }
    w = World(tweak=lambda c: {"valid": False, "reason": "ess 1"} if c.kind == "sgld" else None)
    res = calibrate(monkeypatch, w, grid={"kind": ["sgld", "gn_diag"], "nbeta": [1000.0]})
    assert [c.kind for c in w.calls][:8] == ["sgld"] * 8  # the whole sgld ladder first
    assert res.chosen["kind"] == "gn_diag" and res.chosen_valid
    # devinterp has only plain SGLD
    w = World()
    calibrate(monkeypatch, w, grid={"nbeta": [1000.0]}, backend="devinterp")
    assert {c.kind for c in w.calls} == {"sgld"}


def test_max_candidates_limits_the_checks_over_kinds_and_temperatures(monkeypatch):
    grid = {"kind": ["sgld", "gn_diag"], "nbeta": [1000.0, 400.0]}
    for limit, checked in [(3, 3), (1, 1), (10, 4)]:
        w = World(T=5.0, tweak=failing_nbeta({1000.0, 400.0}))
        res = calibrate(monkeypatch, w, grid=grid, max_candidates=limit)
        assert not res.chosen_valid
        got = [(r.kind, r.nbeta) for r in rows(res, "nbeta").itertuples()]
        want = [("sgld", 500.0), ("sgld", 200.0), ("gn_diag", 500.0), ("gn_diag", 200.0)]
        assert sorted(got) == sorted(want[:checked])


def test_exhaustive_checks_every_candidate_and_keeps_the_first_that_passed(monkeypatch):
    grid = {"kind": ["sgld"], "nbeta": [1000.0, 400.0, 200.0]}
    w = World(T=5.0, tweak=failing_nbeta({1000.0}))
    res = calibrate(monkeypatch, w, grid=grid, exhaustive=True)
    assert len(rows(res, "nbeta")) == 3  # every candidate checked ...
    assert res.chosen["nbeta"] == 400.0 and res.chosen_valid  # ... the first that passed kept
    w = World(T=5.0, tweak=failing_nbeta({1000.0}))
    res = calibrate(monkeypatch, w, grid=grid)
    assert len(rows(res, "nbeta")) == 2 and res.chosen["nbeta"] == 400.0  # stops at 400


def test_the_fallback_is_the_candidate_that_passed_most_and_says_what_failed_where(monkeypatch):
    """nbeta 1000 fails the nbeta check only; nbeta 400 fails nbeta and both rescalings: the
    fallback is nbeta 1000 (3 checks passed), run at every target, marked NOT valid."""

    def tweak(call: Call):
        if call.k == 1 and call.c == 1.0 and call.rung == 256 and call.nbeta in (500.0, 200.0):
            return {"llc": 30.0, "se": 1e-3}
        if call.k == 1 and call.c != 1.0 and call.nbeta == 400.0 and call.rung == 256:
            return {"llc": 1.0, "se": 1e-3}
        return None

    w = World(tweak=tweak)
    res = calibrate(monkeypatch, w, n=2, grid={"kind": ["sgld"], "nbeta": [400.0, 1000.0]},
                    exhaustive=True)  # fmt: skip
    assert res.chosen["nbeta"] == 1000.0 and not res.chosen_valid
    short = f"sgld lr={res.chosen['lr']:.3g} nbeta=1000 gamma={gamma_at(256):.4g}"
    cand = rows(res, "candidate", nbeta=1000.0).iloc[0]
    assert res.reason == (
        f"no setting passed every check; chose {short}, the candidate that passed most (step "
        f"size, gamma, rescaling), NOT valid: nbeta at step 100: moves "
        f"{100 * cand['nbeta_change']:+.1f}% (> 10%)."
    )
    other = rows(res, "candidate", nbeta=400.0).iloc[0]
    assert other["check_failures"].count("rescaling x") == 2
    chosen = res.table[res.table["chosen"]]
    assert sorted(chosen["step"].unique()) == [0, 100] and not chosen["chosen_valid"].any()
    assert set(res.table["reason"]) == {res.reason}


def test_fallback_ties_keep_the_first_candidate():
    runner = cal._Runner([], {}, 100, "fast", "cpu", None, None)
    runner.settings = lambda s, lr: {"lr": lr, "nbeta": s.nbeta, "localization": s.gamma}
    a = cal._Outcome(cal.Setting("sgld", 10.0, 1.0, 0.2), 1e-3, ["x"], ["y"])
    b = cal._Outcome(cal.Setting("sgld", 20.0, 1.0, 0.2), 1e-3, ["x"], ["y"])
    c = cal._Outcome(cal.Setting("sgld", 30.0, 1.0, 0.2), 1e-3, ["x"], ["y", "z"])
    assert cal._fallback(runner, [c, a, b])[0].nbeta == 10.0
    assert cal._fallback(runner, [c])[0].nbeta == 30.0


def test_table_roles_columns_chosen_rows_and_settings_round_trip(monkeypatch, tmp_path):
    w = World(tweak=check_values(20.0, final=1))
    w.mala = lambda kw: result(20.0, se=1e-3, nbeta=kw["nbeta"])
    res = calibrate(monkeypatch, w, n=2, reference="mala")
    t = res.table
    assert set(t["role"]) == {"ladder", "candidate", "step", "nbeta", "rescale x2",
                              "rescale x0.5", "reference", "target"}  # fmt: skip
    for col in ("step", "target", "role", "kind", "nbeta", "localization", "lr", "rescale",
                "lr_scaled", "resolution", "curvature", "precond_max", "seconds", "llc_mean",
                "llc_se", "valid", "status", "invalid_reason", "llc_reason", "settings",
                *cal.CHECK_COLUMNS, "chosen", "chosen_valid", "reason"):  # fmt: skip
        assert col in t, col
    assert list(t.columns[:8]) == ["step", "target", "role", "kind", "nbeta", "localization",
                                   "lr", "rescale"]  # fmt: skip
    # one row per estimate and role: the cached candidate keeps its ladder row too
    assert not t.duplicated(subset=["target", "settings", "rescale", "role"]).any()
    chosen = t[t["chosen"]]
    assert sorted(chosen["role"]) == ["candidate", "step", "target"]  # 0.1 of the edge
    assert (chosen["rescale"] == 1.0).all() and chosen["chosen_valid"].all()
    assert t["chosen_valid"].sum() == 3
    assert {json.dumps(json.loads(s), sort_keys=True) for s in chosen["settings"]} == {
        json.dumps(res.chosen, sort_keys=True)
    }
    assert chosen_sampler(t) == (res.chosen, True, res.reason)
    path = tmp_path / "cal.parquet"
    t.to_parquet(path)
    back = pd.read_parquet(path)
    assert chosen_sampler(back) == (res.chosen, True, res.reason)
    assert back["checks_passed"].dtype == "boolean"
    # every row's settings run estimate_llc as written: sampler keys only
    for s in t.loc[t["role"] != "reference", "settings"]:
        SamplerConfig.from_mapping(json.loads(s))


def test_chosen_settings_carry_the_base_and_the_adaptive_cap(monkeypatch):
    base = {**BASE, "num_burnin_steps": 20, "seed": 3, "lr": 9.0, "nbeta": 1.0, "kind": "sgld",
            "num_draws": 5}  # the searched keys in a base are dropped  # fmt: skip
    res = calibrate(monkeypatch, World(), base=base, num_steps=120)
    c = res.chosen
    assert c["num_burnin_steps"] == 20 and c["num_draws"] == 100 and c["seed"] == 3
    assert c["max_steps"] == cal._DEFAULTS["max_steps"] and c["nbeta"] == 1000.0 and "kind" not in c
    assert calibrate(monkeypatch, World(), base={**BASE, "max_steps": 500}).chosen[
        "max_steps"] == 500  # fmt: skip
    assert "max_steps" not in calibrate(monkeypatch, World(), max_steps=None).chosen
    assert "max_steps" not in calibrate(monkeypatch, World(), max_steps=100).chosen  # <= steps
    cfg = SamplerConfig(batch_size=4, num_chains=4, num_burnin_steps=0)
    c = calibrate(monkeypatch, World(), base=cfg).chosen
    assert c["batch_size"] == 4 and c["lr"] == lr_of(0.1, 1000.0, gamma_at(256))


def test_calibrate_checkpoints_seeds_labels_and_the_models_symmetry(monkeypatch):
    w = World()
    monkeypatch.setattr(cal, "estimate_llc", w.estimate_llc)
    monkeypatch.setattr(cal, "top_curvature", w.top_curvature)
    monkeypatch.setattr(cal, "_preconditioner", w.preconditioner)
    model = QuadraticNet(P, width=WIDTH)
    x = torch.tensor([[0, 1], [1, 2], [2, 0], [1, 1]])
    y = torch.zeros(4, P)
    res = cal.calibrate_checkpoints(model, [target_state(0), target_state(1)], x, y, loss,
                                    seed=5, labels=[300, 900], base=BASE, grid=GRID,
                                    num_steps=100)  # fmt: skip
    assert res.chosen_valid and w.of(c=2.0)  # "auto": the quadratic net's rescaling
    assert {(c.k, c.seed) for c in w.calls} == {(0, 5), (1, 6)}
    assert sorted(res.table["step"].unique()) == [300, 900]
    w.calls.clear()
    res = cal.calibrate_checkpoints(model, [target_state(0), target_state(1)], x, y, loss,
                                    seeds=[40, 41], symmetry=None, base=BASE, grid=GRID,
                                    num_steps=100)  # fmt: skip
    assert not w.of(c=2.0) and {(c.k, c.seed) for c in w.calls} == {(0, 40), (1, 41)}
    assert sorted(res.table["step"].unique()) == [0, 1]
    # calibrate_sampler: the model's current parameters, one checkpoint
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(target_state(1)[name])
    w.calls.clear()
    res = cal.calibrate_sampler(model, x, y, loss, seed=2, base=BASE, grid=GRID, num_steps=100)
    assert {(c.k, c.seed) for c in w.calls} == {(1, 2)} and res.chosen_valid


def test_symmetries_leave_the_function_unchanged():
    net = QuadraticNet(5, 4, generator=torch.Generator().manual_seed(0))
    x = torch.tensor([[0, 1], [2, 3], [4, 4]])
    state = {k: v.detach() for k, v in net.named_parameters()}
    assert cal.model_symmetry(net) is cal.quadratic_rescaling
    for c in cal.RESCALE_FACTORS:
        moved = cal.quadratic_rescaling(state, c)
        assert torch.equal(moved["W"], c * state["W"])
        other = QuadraticNet(5, 4)
        other.load_state_dict(moved)
        torch.testing.assert_close(other(x), net(x))

    deep = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 4, bias=False),
                         nn.Linear(4, 2, bias=False))  # fmt: skip
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    sym = cal.model_symmetry(deep)
    dstate = {k: v.detach() for k, v in deep.named_parameters()}
    out = sym(dstate, 0.5)
    assert torch.equal(out["0.weight"], 0.5 * dstate["0.weight"])
    assert torch.equal(out["1.weight"], 2.0 * dstate["1.weight"])
    assert out["2.weight"] is dstate["2.weight"]
    moved = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 4, bias=False),
                          nn.Linear(4, 2, bias=False))  # fmt: skip
    moved.load_state_dict(out)
    torch.testing.assert_close(moved(z), deep(z))
    assert torch.equal(dstate["0.weight"], deep[0].weight.detach())  # the input is not changed
    # a bias, a non-linearity, one layer, another architecture: no known symmetry
    assert cal.model_symmetry(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))) is None
    assert cal.model_symmetry(nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(),
                                            nn.Linear(4, 2, bias=False))) is None  # fmt: skip
    assert cal.model_symmetry(nn.Sequential(nn.Linear(3, 4, bias=False))) is None
    assert cal.model_symmetry(nn.Linear(3, 2, bias=False)) is None


def test_the_runner_scale_of_a_real_rescaled_state_is_its_own_curvature():
    """Without fakes: a rescaled quadratic net's step uses the rescaled state's own lambda."""
    net = QuadraticNet(3, 2, generator=torch.Generator().manual_seed(0))
    state = {k: v.detach().clone() for k, v in net.named_parameters()}
    x = torch.tensor([[a, b] for a in range(3) for b in range(3)])
    y = torch.randn(9, 3, generator=torch.Generator().manual_seed(1))
    t = cal.Target(net, state, x, y, half_mse, 0, {"step": 0})
    runner = cal._Runner([t], {"batch_size": 9}, 100, "fast", "cpu", None, cal.quadratic_rescaling)
    s = cal.Setting("sgld", 100.0, 10.0, 0.2)
    for c in (1.0, 2.0):
        params = cal.quadratic_rescaling(state, c) if c != 1.0 else state
        lam = cal.top_curvature(net, params, x, y, half_mse, seed=0)
        assert runner.scale(0, "sgld", c) == (lam, 1.0)
        assert runner.lr(0, s, c) == float(f"{0.2 / (100.0 * lam + 10.0):.4g}")
    assert runner.scale(0, "sgld", 2.0)[0] != pytest.approx(runner.scale(0, "sgld", 1.0)[0])


def test_stage_writes_one_table_with_the_choice(tmp_path):
    """run_calibrate_sampler on a tiny trained run: one Parquet with run_id and step labels,
    the roles, the chosen columns and settings that chosen_sampler turns back into
    estimate_llc's sampler (real SGLD, a three-rung ladder)."""
    from grokking_llc.core.data import make_split
    from grokking_llc.core.settings import TrainConfig
    from grokking_llc.pipeline.stages.calibrate import checkpoint_indices, run_calibrate_sampler
    from grokking_llc.training.train import train_run

    assert checkpoint_indices(11, [0.1, 0.5, 1.0]) == [1, 5, 10]
    assert checkpoint_indices(3, [0.0, 0.1, 1.0]) == [0, 2]
    with pytest.raises(ValueError, match="outside"):
        checkpoint_indices(3, [1.5])
    with pytest.raises(ValueError, match="without checkpoints"):
        checkpoint_indices(0, [1.0])
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
        "checkpoints": [0.5, 1.0], "num_steps": 150, "max_steps": 150,
        "grid": {"kind": ["sgld"], "nbeta": [20.0], "localization": [100.0, 50.0, 25.0],
                 "lr_scaled": [0.1, 0.05]},
        "base": {"batch_size": 8, "num_chains": 4, "num_burnin_steps": 20, "seed": 3,
                 "num_init_loss_batches": 2},
    }  # fmt: skip
    df = run_calibrate_sampler([str(ckpt_path)], [str(split_path)], [cfg.to_dict()],
                               calibration, str(out), device="cpu")  # fmt: skip
    back = pd.read_parquet(out)
    assert len(back) == len(df) >= 3
    assert set(back["run_id"]) == {cfg.run_id} and sorted(back["step"].unique()) == [30, 60]
    assert (back.loc[back["role"] == "ladder", "step"] == 60).all()  # the search: final ckpt
    assert back.loc[back["role"] == "ladder", "localization"].tolist()[:1] == [100.0]
    settings, valid, reason = chosen_sampler(back)
    assert settings["batch_size"] == 8 and settings["seed"] == 3
    assert settings["num_draws"] == 130 and "max_steps" not in settings
    assert isinstance(valid, bool) and reason == back["reason"].iloc[0]
    chosen = back[back["chosen"]]
    assert set(chosen["step"]) <= {30, 60} and len(chosen) >= 1
    with pytest.raises(ValueError, match="unknown key"):
        run_calibrate_sampler([str(ckpt_path)], [str(split_path)], [cfg.to_dict()],
                              {"gird": {}}, str(out), device="cpu")  # fmt: skip
    with pytest.raises(ValueError, match="one checkpoints file, one split and one run config"):
        run_calibrate_sampler([], [], [], calibration, str(out), device="cpu")


def test_the_calibration_figure_draws_a_calibrations_table(monkeypatch, tmp_path):
    """The table calibrate_targets writes, through Parquet, is what the figure reads: a
    ladder line per (kind, nbeta), the candidate's check runs at its resolution, the chosen
    candidate ringed and its run at the other target."""
    from grokking_llc.figures import REGISTRY

    w = World(tweak=check_values(20.0, final=1))
    w.mala = lambda kw: result(20.0, se=1e-3, nbeta=kw["nbeta"])
    res = calibrate(monkeypatch, w, n=2, reference="mala")
    res.table.to_parquet(tmp_path / "cal.parquet")
    table = pd.read_parquet(tmp_path / "cal.parquet")
    pts = calibration_points(table)
    assert pts["kinds"] == ["sgld"] and pts["search_target"] == 1
    assert set(pts["checks"]["role"]) == {"step", "nbeta", "rescale x2", "rescale x0.5",
                                          "reference"}  # fmt: skip
    assert pts["checks"]["x"].to_numpy() == pytest.approx(256.0, rel=1e-3)
    assert pts["chosen_valid"] is True and len(pts["targets"]) == 1
    fig = REGISTRY["calibration"].draw(table, {})
    found = {a.get_gid() for a in fig.findobj(lambda a: a.get_gid() is not None)}
    assert {"ladder", "candidate", "chosen", "chosen_other", "check:step", "check:nbeta",
            "check:rescale x2", "check:rescale x0.5", "check:reference"} <= found  # fmt: skip
    import matplotlib.pyplot as plt

    plt.close(fig)


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
