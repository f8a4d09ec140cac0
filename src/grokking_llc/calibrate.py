"""Sampler calibration: which SGLD settings give LLC estimates that pass SPEC section 10's checks.

:func:`calibrate_checkpoints` (and :func:`calibrate_sampler`, its one-checkpoint case) tries a
grid of settings and chooses ONE for all the checkpoints given (settings stay fixed within a
comparison, SPEC section 4).

Grid. Sampler kinds (``kind``: ``"sgld"`` first; the preconditioned kinds of
:mod:`grokking_llc.sgld` only when plain SGLD has no valid setting, unless the grid names kinds),
inverse temperatures ``nbeta``, localisations ``localization`` and step sizes. Step sizes are
either absolute (``lr``) or relative to the fastest rate of the linearised sampler
(``lr_scaled``): ``eps = lr_scaled / (nbeta * lambda + gamma * g_max)`` with ``lambda`` the largest
eigenvalue of ``G^(1/2) H G^(1/2)`` (``H`` the full-batch Hessian of the loss, ``G`` the kind's
preconditioner at w*, 1 for SGLD; power iteration, :func:`top_curvature`) and ``g_max = max G``,
both taken as the maximum over the checkpoints so that the step sizes are the same at all of
them. SPEC section 10: a step is stable when ``eps * nbeta * lambda_max <~ 1``, so
``lr_scaled`` = 1 is the stability edge and smaller values are the candidates. The default grid
(:func:`default_grid`) is ``nbeta = (n / ln n) * {1, 8, 64}``, ``gamma in {10, 100, 1000}`` and
``lr_scaled in {1, 0.3, 0.1, 0.03, 0.01}``.

Selection rule (written for the README too):

1. At the final checkpoint (the last one given), for each (kind, nbeta, gamma), walk the step
   sizes from the largest down to the first pair of adjacent step sizes that give the same
   estimate within 10% or 3 standard errors (the estimate is flat in eps there), the smaller
   of them with a high MALA acceptance (>= 0.9), and at least one of them stationary
   (split-R-hat of loss and distance < 1.1 on draws and tail over >= 4 chains, drift within
   3 SE, ESS >= 100) with a high MALA acceptance. Take the smaller step of the pair if it is
   such, else the larger: the step's bias grows about linearly in eps, so when the pair agrees
   within 10% (a grid factor of ~3) the smaller step's bias is below ~5%, the larger one's
   below ~15%. The walk stops early once a step is accurate (MALA ok) but not stationary,
   since smaller steps relax more slowly still.
2. Candidates are these picks that are not localisation-dominated (gradient-to-localisation
   force ratio >= 1), ordered by nbeta (largest first: the smallest temperature bias), then
   gamma (smallest first: the least localisation bias). The groups are walked in this order
   and each candidate checked (step 3) as soon as it is found, so the search ends at the first
   setting that passes (``exhaustive=True`` walks the whole grid anyway, for the figure).
3. For each candidate in turn (at most ``max_checks``), at every checkpoint: the estimate must
   be valid (:mod:`grokking_llc.validity`), must not scale with nbeta (the estimate at nbeta / 2,
   same eps and gamma, gives an elasticity ``log2(llc(nbeta) / llc(nbeta / 2)) <= 0.5``), and
   must not move under the model's function-preserving rescaling (the quadratic net's
   ``W -> cW, V -> V / c^2`` for c = 2 and 1/2, SPEC section 10; a deep linear net's layer
   scaling; any hook given) by more than 10% or 3 SE. The first candidate passing everywhere is
   chosen, ``chosen_valid`` True.
4. If none passes (or there is none), the preconditioned kinds are tried the same way (when the
   grid does not name kinds). If still none: say so, and choose the best stationary setting
   at the final checkpoint (most checks passed, then the order of step 2), ``chosen_valid``
   False; with no stationary setting at all, the one with the smallest R-hat, also marked not
   valid. The chosen setting is run at every checkpoint, so the table shows it everywhere.

Every random draw is seeded: all settings at a checkpoint use the same seed (common random
numbers make their comparisons sharper).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, grad, jvp

from grokking_llc import validity
from grokking_llc.config import SamplerConfig
from grokking_llc.llc import LLCResult, estimate_llc
from grokking_llc.sgld import KINDS, SamplerOptions, gauss_newton_diagonal, split_sampler

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
State = Mapping[str, torch.Tensor]
Symmetry = Callable[[State, float], dict[str, torch.Tensor]]

DEFAULT_NBETA_FACTORS = (1.0, 8.0, 64.0)  # times n / ln n
DEFAULT_LOCALIZATION = (10.0, 100.0, 1000.0)
DEFAULT_LR_SCALED = (1.0, 0.3, 0.1, 0.03, 0.01)
FALLBACK_KINDS = ("rmsprop", "gn_diag")
RESCALE_FACTORS = (2.0, 0.5)
# settings a grid may search; everything else comes from ``base``
GRID_KEYS = ("kind", "nbeta", "localization", "lr", "lr_scaled")


@dataclass
class Calibration:
    """Result of a calibration: ``table`` (one row per checkpoint and setting tried),
    ``chosen`` (settings usable as :func:`grokking_llc.llc.estimate_llc`'s ``sampler``, or None),
    ``chosen_valid`` and ``reason`` (one sentence), ``seconds`` (wall time)."""

    table: pd.DataFrame
    chosen: dict[str, Any] | None
    chosen_valid: bool
    reason: str
    seconds: float = math.nan


# --------------------------------------------------------------------------------------------
# Symmetries (SPEC section 10: the true LLC is invariant under them)
# --------------------------------------------------------------------------------------------


def quadratic_rescaling(state: State, c: float) -> dict[str, torch.Tensor]:
    """The quadratic net's ``W -> cW, V -> V / c^2``: ``(cXW)^2 V / c^2 = (XW)^2 V``."""
    return {"W": state["W"] * c, "V": state["V"] / c**2}


def layer_rescaling(first: str, second: str) -> Symmetry:
    """Scale parameter ``first`` by c and ``second`` by 1/c: a symmetry of any net in which they
    are consecutive bias-free linear maps (``W2 W1 = (W2 / c)(c W1)``), e.g. a deep linear net."""

    def rescale(state: State, c: float) -> dict[str, torch.Tensor]:
        out = dict(state)
        out[first], out[second] = state[first] * c, state[second] / c
        return out

    return rescale


def model_symmetry(model: nn.Module) -> Symmetry | None:
    """The rescaling symmetry of known architectures: the quadratic net (SPEC section 10), or a
    ``nn.Sequential`` of at least two bias-free ``nn.Linear`` layers (its first two layers)."""
    from grokking_llc.model import QuadraticNet

    if isinstance(model, QuadraticNet):
        return quadratic_rescaling
    if isinstance(model, nn.Sequential):
        layers = list(model.named_children())
        linear = [(n, m) for n, m in layers if isinstance(m, nn.Linear) and m.bias is None]
        if len(layers) >= 2 and len(linear) == len(layers):
            return layer_rescaling(f"{layers[0][0]}.weight", f"{layers[1][0]}.weight")
    return None


# --------------------------------------------------------------------------------------------
# Curvature scale of the step-size grid
# --------------------------------------------------------------------------------------------


def _preconditioner(model, params, x, y, loss_fn, opts: SamplerOptions, batch_size: int, seed):
    """The kind's diagonal ``G`` at w* ({name: tensor}), or None for SGLD.

    gn_diag: the sampler's own (:func:`grokking_llc.sgld.gauss_newton_diagonal`, damped).
    rmsprop: its stationary value ``1 / (sqrt(E[g^2]) + delta)`` with ``E[g^2]`` the mean squared
    minibatch gradient at w* over 8 minibatches of ``batch_size`` (the sampler's running average
    starts at 0, so early steps have larger ``G``; a rough scale only).
    """
    if opts.kind == "sgld":
        return None
    if opts.kind == "gn_diag":
        diag = gauss_newton_diagonal(
            model, params, x, y, loss_fn, num_probes=opts.gn_probes, seed=0
        )
        out = {}
        for name, h in diag.items():
            floor = opts.gn_damping * float(h.mean())
            out[name] = 1.0 / (h + (floor if floor > 0 else 1.0))
        return out
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    buffers = dict(model.named_buffers())
    sq = {k: torch.zeros_like(v) for k, v in params.items()}
    for _ in range(8):
        rows = torch.randperm(len(x), generator=gen, device=x.device)[:batch_size]
        g = grad(lambda p, r=rows: loss_fn(functional_call(model, (p, buffers), (x[r],)), y[r]))(
            dict(params)
        )
        for k in sq:
            sq[k] += g[k].detach() ** 2 / 8
    return {k: 1.0 / (v.sqrt() + opts.rmsprop_eps) for k, v in sq.items()}


def top_curvature(
    model: nn.Module,
    params: State,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    precond: State | None = None,
    iters: int = 30,
    seed: int = 0,
) -> float:
    """Largest |eigenvalue| of ``G^(1/2) H G^(1/2)``, ``H`` the Hessian of the full-batch loss at
    ``params`` (SPEC section 10's ``lambda_max`` when ``G = 1``), by power iteration on
    Hessian-vector products (forward-over-reverse)."""
    names = list(params)
    buffers = dict(model.named_buffers())
    p0 = {k: v.detach() for k, v in params.items()}
    half = {k: precond[k].sqrt() for k in names} if precond is not None else None

    def loss(p):
        return loss_fn(functional_call(model, (p, buffers), (x,)), y)

    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    v = {k: torch.randn(p0[k].shape, generator=gen, device=x.device, dtype=p0[k].dtype)
         for k in names}  # fmt: skip
    value = 0.0
    with torch.enable_grad():
        for _ in range(iters):
            norm = math.sqrt(sum(float((t**2).sum()) for t in v.values()))
            if norm == 0:
                return 0.0
            v = {k: t / norm for k, t in v.items()}
            u = {k: v[k] * half[k] for k in names} if half else v
            _, hu = jvp(grad(loss), (p0,), (u,))
            w = {k: hu[k].detach() * half[k] for k in names} if half else hu
            value = sum(float((w[k] * v[k]).sum()) for k in names)
            v = {k: w[k].detach() for k in names}
    return abs(value)


# --------------------------------------------------------------------------------------------
# Grid
# --------------------------------------------------------------------------------------------


def default_grid(n: int) -> dict[str, list]:
    """The default search (module docstring): nbeta from ``n / ln n`` to 64 times it."""
    base = n / math.log(n) if n > 2 else 1.0
    return {
        "nbeta": [float(f"{base * f:.4g}") for f in DEFAULT_NBETA_FACTORS],
        "localization": list(DEFAULT_LOCALIZATION),
        "lr_scaled": list(DEFAULT_LR_SCALED),
    }


def _normalise_grid(grid: Mapping[str, Any] | None, n: int) -> tuple[dict[str, list], bool]:
    """Grid with defaults filled in; and whether the kinds were given (no fallback then)."""
    out = default_grid(n)
    grid = dict(grid or {})
    unknown = set(grid) - set(GRID_KEYS)
    if unknown:
        raise ValueError(f"calibration grid: unknown key(s) {sorted(unknown)}; use {GRID_KEYS}")
    if "lr" in grid and "lr_scaled" in grid:
        raise ValueError("calibration grid: give lr or lr_scaled, not both")
    if "lr" in grid:
        out.pop("lr_scaled")
    out.update({k: list(v) for k, v in grid.items()})
    kinds_given = "kind" in grid
    out["kind"] = list(out.get("kind", ["sgld"]))
    for kind in out["kind"]:
        if kind not in KINDS:
            raise ValueError(f"calibration grid: unknown kind {kind!r}; choose from {KINDS}")
    for key in ("nbeta", "localization", "lr", "lr_scaled"):
        if key in out:
            if not out[key] or any(not (v >= 0) for v in out[key]):
                raise ValueError(f"calibration grid: {key} needs non-negative values")
            out[key] = sorted({float(v) for v in out[key]}, reverse=key.startswith("lr"))
    return out, kinds_given


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    """One place to calibrate at: a model (a copy is loaded with ``state`` when sampled), a
    checkpoint ``state``, the training data, the loss, the seed of its estimates, ``labels``
    (extra table columns, e.g. ``{"run_id": ..., "step": ...}``) and the model's rescaling
    ``symmetry`` (None: the calibration's, if any)."""

    model: nn.Module
    state: State
    x: torch.Tensor
    y: torch.Tensor
    loss_fn: LossFn
    seed: int
    labels: dict[str, Any]
    symmetry: Symmetry | None = None

    def params(self) -> dict[str, torch.Tensor]:
        return {name: self.state[name] for name, _ in self.model.named_parameters()}


class _Runner:
    """Runs and caches one estimate per (target, settings, rescaling)."""

    def __init__(self, targets, base, num_steps, backend, device, diag_every):
        self.targets = targets
        self.base, self.num_steps = dict(base), num_steps
        self.backend, self.device, self.diag_every = backend, device, diag_every
        self.cache: dict[tuple, tuple[LLCResult, float]] = {}
        self.work = {id(t.model): copy.deepcopy(t.model) for t in targets}

    def settings(self, kind: str, lr: float, nbeta: float, gamma: float) -> dict[str, Any]:
        burn = int(self.base.get("num_burnin_steps", 0))
        s = {**self.base, "lr": float(lr), "nbeta": float(nbeta), "localization": float(gamma),
             "num_draws": self.num_steps - burn, "num_burnin_steps": burn}  # fmt: skip
        if kind != "sgld":
            s["kind"] = kind
        else:
            s.pop("kind", None)
        return s

    def run(self, k: int, settings: Mapping[str, Any], rescale: float = 1.0, symmetry=None):
        key = (k, json.dumps(settings, sort_keys=True), rescale)
        if key not in self.cache:
            target = self.targets[k]
            if rescale != 1.0:
                symmetry = target.symmetry or symmetry
            state = target.state if rescale == 1.0 else symmetry(target.state, rescale)
            work = self.work[id(target.model)]
            with torch.no_grad():
                for name, p in work.named_parameters():
                    p.copy_(state[name])
            t0 = time.perf_counter()
            res = estimate_llc(
                work, target.x, target.y, target.loss_fn, settings, seed=target.seed,
                backend=self.backend, device=self.device, diag_every=self.diag_every,
            )  # fmt: skip
            self.cache[key] = (res, time.perf_counter() - t0)
            log.info(
                "%s %s%s: llc %.4g +- %.2g, %s", target.labels, _short(settings),
                f" rescaled x{rescale:g}" if rescale != 1.0 else "", res.llc_mean, res.llc_se,
                "valid" if res.valid else res.invalid_reason,
            )  # fmt: skip
        return self.cache[key]


def _short(s: Mapping[str, Any]) -> str:
    return (f"{s.get('kind', 'sgld')} lr={s['lr']:.3g} nbeta={s['nbeta']:.4g} "
            f"gamma={s['localization']:.4g}")  # fmt: skip


def _ok(res: LLCResult) -> bool:
    """Stationary with an accurate step (the per-estimate half of the step-size walk)."""
    return bool(res.stationary and res.step_ok and math.isfinite(res.llc_mean))


def _same(a: LLCResult, b: LLCResult, tol: float) -> bool:
    return validity.within(a.llc_mean, b.llc_mean, a.llc_se, b.llc_se, tol)


def calibrate_checkpoints(
    model: nn.Module,
    states: Sequence[State],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    base: Mapping[str, Any] | SamplerConfig | None = None,
    grid: Mapping[str, Any] | None = None,
    num_steps: int = 2000,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    labels: Sequence[int] | None = None,
    backend: str = "fast",
    device: str | torch.device | None = None,
    symmetry: Symmetry | str | None = "auto",
    max_checks: int = 3,
    diag_every: int | None = None,
    exhaustive: bool = False,
) -> Calibration:
    """Choose one sampler setting for all of ``states`` (checkpoints of ``model``; the last is
    the final one) by the rule of the module docstring.

    ``base``: settings that are not searched (batch_size, num_chains, num_burnin_steps as the
    minimum burn-in, weight_decay, num_init_loss_batches, and options such as ``max_steps``);
    ``grid``: lists under :data:`GRID_KEYS` (missing keys take :func:`default_grid`'s values);
    ``num_steps``: SGLD steps per chain for every setting tried. Checkpoint k is sampled with
    ``seeds[k]`` (default ``seed + k``) and labelled ``labels[k]`` in the table's ``step``
    column (default k). ``symmetry``: ``"auto"`` (:func:`model_symmetry`), None (no rescaling
    check) or a function ``(state, c) -> state``. ``max_checks``: candidates checked per kind.
    """
    if not states:
        raise ValueError("calibrate_checkpoints needs at least one checkpoint")
    if device is None:
        device = next(model.parameters()).device
    seeds = list(seeds) if seeds is not None else [seed + k for k in range(len(states))]
    labels = list(labels) if labels is not None else list(range(len(states)))
    x, y = x.to(device), y.to(device)
    targets = [
        Target(model, {k: v.detach().to(device) for k, v in st.items()}, x, y, loss_fn,
               int(sd), {"step": int(lab)})
        for st, sd, lab in zip(states, seeds, labels, strict=True)
    ]  # fmt: skip
    if symmetry == "auto":
        symmetry = model_symmetry(model)
    return calibrate_targets(
        targets, base=base, grid=grid, num_steps=num_steps, backend=backend, device=device,
        symmetry=symmetry, max_checks=max_checks, diag_every=diag_every, exhaustive=exhaustive,
    )  # fmt: skip


def calibrate_targets(
    targets: Sequence[Target],
    *,
    base: Mapping[str, Any] | SamplerConfig | None = None,
    grid: Mapping[str, Any] | None = None,
    num_steps: int = 2000,
    backend: str = "fast",
    device: str | torch.device | None = None,
    symmetry: Symmetry | None = None,
    max_checks: int = 3,
    diag_every: int | None = None,
    exhaustive: bool = False,
) -> Calibration:
    """The calibration of the module docstring over any targets (checkpoints, possibly of
    several runs with their own models and data): the step-size walk at the last target, the
    checks at every target, one setting for all. ``symmetry`` applies to every target's state
    (None: no rescaling check). The table has one row per (target, setting) tried, with the
    target's labels and ``target`` (its index)."""
    t_start = time.perf_counter()
    if not targets:
        raise ValueError("calibration needs at least one target")
    if device is None:
        device = next(targets[0].model.parameters()).device
    base = _base_settings(base)
    if int(base.get("num_burnin_steps", 0)) + 16 > num_steps:
        raise ValueError(f"num_steps {num_steps} leaves too few draws after the burn-in")
    full_grid, kinds_given = _normalise_grid(grid, min(len(t.x) for t in targets))
    runner = _Runner(list(targets), base, num_steps, backend, device, diag_every)
    rows: dict[tuple, dict] = {}
    fallback = [] if kinds_given else [k for k in FALLBACK_KINDS if k not in full_grid["kind"]]
    if backend == "devinterp":
        fallback = [k for k in fallback if k != "gn_diag"]
    chosen, tried_kinds = None, []
    for kind in full_grid["kind"] + fallback:
        tried_kinds.append(kind)
        chosen = _calibrate_kind(runner, kind, full_grid, symmetry, max_checks, rows, exhaustive)
        if chosen is not None:
            break
    table = _table(rows, runner.targets)
    if chosen is not None:
        key, valid = chosen, True
        reason = (
            f"{_short(runner.settings(*key))} is valid at all {len(targets)} checkpoint(s): "
            f"stationary, accurate step, flat in eps, not localisation-dominated, not scaling "
            f"with nbeta{', invariant under rescaling' if symmetry else ''}."
        )
    else:
        key, why = _best_fallback(table)
        valid = False
        if key is not None:  # show the fallback at every checkpoint, as a valid choice is
            for k in range(len(targets)):
                if (k, key) not in rows:
                    res, sec = runner.run(k, runner.settings(*key))
                    rows[(k, key)] = _row(res, sec, key, math.nan, k, (math.nan, math.nan))
            table = _table(rows, runner.targets)
        tried = ", ".join(tried_kinds)
        reason = f"no setting ({tried}) passed every check at every checkpoint; " + (
            f"chose {_short(runner.settings(*key))}, {why}, NOT valid." if key else why
        )
    settings = runner.settings(*key) if key is not None else None
    mask = _setting_mask(table, key)
    table["chosen"] = mask
    table["chosen_valid"] = mask & valid
    table["reason"] = reason
    table["settings"] = [json.dumps(runner.settings(*_row_key(r)), sort_keys=True)
                         for r in table.itertuples()]  # fmt: skip
    seconds = time.perf_counter() - t_start
    log.info("calibration (%.0fs): %s", seconds, reason)
    return Calibration(table, settings, bool(valid and settings is not None), reason, seconds)


def calibrate_sampler(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    base: Mapping[str, Any] | SamplerConfig | None = None,
    grid: Mapping[str, Any] | None = None,
    num_steps: int = 2000,
    seed: int = 0,
    backend: str = "fast",
    device: str | torch.device | None = None,
    symmetry: Symmetry | str | None = "auto",
    max_checks: int = 3,
    diag_every: int | None = None,
    exhaustive: bool = False,
) -> Calibration:
    """Calibrate at the model's current parameters: :func:`calibrate_checkpoints` with this one
    checkpoint (the selection rule is in the module docstring)."""
    state = {k: v.detach().clone() for k, v in model.named_parameters()}
    return calibrate_checkpoints(
        model, [state], x, y, loss_fn, base=base, grid=grid, num_steps=num_steps, seed=seed,
        backend=backend, device=device, symmetry=symmetry, max_checks=max_checks,
        diag_every=diag_every, exhaustive=exhaustive,
    )  # fmt: skip


def _base_settings(base) -> dict[str, Any]:
    if base is None:
        base = {}
    if isinstance(base, SamplerConfig):
        cfg, opts = split_sampler(base)
        from dataclasses import asdict

        base = {**asdict(cfg), **opts.non_default()}
    base = dict(base)
    for key in ("lr", "nbeta", "localization", "num_draws", "kind"):
        base.pop(key, None)
    split_sampler(base)  # validates the keys
    return base


def _row_key(r) -> tuple:
    return (r.kind, r.lr, r.nbeta, r.localization)


def _setting_mask(table: pd.DataFrame, key) -> np.ndarray:
    if key is None or table.empty:
        return np.zeros(len(table), dtype=bool)
    kind, lr, nbeta, gamma = key

    # relative tolerance only: step sizes of 1e-9 and 3e-9 are different settings
    def same(column, value):
        return np.isclose(table[column], value, rtol=1e-12, atol=0.0)

    mask = (table["kind"] == kind) & same("lr", lr) & same("nbeta", nbeta)
    return (mask & same("localization", gamma)).to_numpy()


def _step_sizes(runner: _Runner, kind: str, grid, nbeta: float, gamma: float, scale) -> list:
    if "lr" in grid:
        return [(float(v), math.nan) for v in grid["lr"]]
    lam, gmax = scale
    rate = nbeta * lam + gamma * gmax
    return [(float(f"{c / rate:.4g}"), c) for c in grid["lr_scaled"]]


def _curvature_scale(runner: _Runner, kind: str) -> tuple[float, float]:
    """(lambda, g_max) of the step-size grid for this kind: the largest eigenvalue of
    ``G^(1/2) H G^(1/2)`` and the largest entry of ``G``, each the maximum over targets."""
    opts = SamplerOptions(kind=kind)
    bs_base = int(runner.base.get("batch_size", SamplerConfig().batch_size))
    lams, gmaxes = [], []
    for t in runner.targets:
        params = t.params()
        G = _preconditioner(t.model, params, t.x, t.y, t.loss_fn, opts, min(bs_base, len(t.x)),
                            t.seed)  # fmt: skip
        lams.append(top_curvature(t.model, params, t.x, t.y, t.loss_fn, precond=G,
                                  seed=t.seed))  # fmt: skip
        gmaxes.append(1.0 if G is None else max(float(g.max()) for g in G.values()))
    return max(lams), max(gmaxes)


def _calibrate_kind(
    runner: _Runner, kind, grid, symmetry, max_checks, rows, exhaustive=False
) -> tuple | None:
    """Steps 1-3 of the rule for one kind; the chosen key (kind, lr, nbeta, gamma) or None.
    Groups (nbeta, gamma) are walked in the candidates' order and each pick is checked at once,
    so the walk ends at the first setting that passes (``exhaustive``: walk every group anyway,
    for a complete table). Fills ``rows`` {(target, key): row}."""
    final = len(runner.targets) - 1
    scale = (math.nan, math.nan) if "lr" in grid else _curvature_scale(runner, kind)
    checked, chosen = 0, None
    for nbeta in sorted(grid["nbeta"], reverse=True):
        for gamma in sorted(grid["localization"]):
            if chosen is not None and not exhaustive:
                return chosen
            pick = _walk_step_sizes(runner, kind, grid, nbeta, gamma, scale, rows)
            if pick is None or rows[(final, pick)]["_res"].localisation_dominated:
                continue
            if chosen is None and checked < max_checks:
                checked += 1
                if all(_check(runner, k, pick, symmetry, rows) for k in reversed(range(final + 1))):
                    chosen = pick
    return chosen


def _walk_step_sizes(runner: _Runner, kind, grid, nbeta, gamma, scale, rows) -> tuple | None:
    """Step 1 of the rule for one (kind, nbeta, gamma) at the final target: the picked key or
    None."""
    final = len(runner.targets) - 1
    prev = None
    for lr, lr_scaled in _step_sizes(runner, kind, grid, nbeta, gamma, scale):
        key = (kind, lr, nbeta, gamma)
        res, sec = runner.run(final, runner.settings(*key))
        row = _row(res, sec, key, lr_scaled, final, scale)
        rows[(final, key)] = row
        if prev is not None and res.step_ok:
            before = rows[(final, prev)]["_res"]
            pick = key if _ok(res) else (prev if _ok(before) else None)
            if pick is not None:
                same = _same(before, res, validity.EPS_FLAT_TOL)
                rows[(final, prev)]["eps_flat"] = row["eps_flat"] = same
                if same:
                    return pick
        if res.step_ok and not res.stationary:
            return None  # accurate but not stationary: smaller steps relax more slowly
        prev = key
    return None


def _check(runner: _Runner, k: int, key, symmetry, rows) -> bool:
    """Step 3 at checkpoint k: valid, nbeta elasticity, rescaling invariance (fills the row)."""
    settings = runner.settings(*key)
    res, sec = runner.run(k, settings)
    row = rows.setdefault((k, key), _row(res, sec, key, math.nan, k, (math.nan, math.nan)))
    if not res.valid:
        row["checks_passed"] = False
        return False
    kind, lr, nbeta, gamma = key
    half, _ = runner.run(k, runner.settings(kind, lr, nbeta / 2, gamma))
    row["llc_nbeta_half"] = half.llc_mean
    row["nbeta_elasticity"] = validity.nbeta_elasticity(res.llc_mean, half.llc_mean)
    ok = row["nbeta_elasticity"] <= validity.NBETA_ELASTICITY_MAX
    symmetry = runner.targets[k].symmetry or symmetry
    if symmetry is not None:
        changes = []
        for c in RESCALE_FACTORS:
            other, _ = runner.run(k, settings, rescale=c, symmetry=symmetry)
            row[f"llc_rescaled_{c:g}"] = other.llc_mean
            changes.append(abs(other.llc_mean - res.llc_mean) / abs(res.llc_mean))
            ok = ok and _same(other, res, validity.RESCALE_TOL)
        row["rescale_change"] = max(changes)
    row["checks_passed"] = bool(ok)
    return bool(ok)


def _row(res: LLCResult, seconds: float, key, lr_scaled: float, k: int, scale) -> dict:
    kind, lr, nbeta, gamma = key
    summary = res.summary()
    summary["llc_reason"] = summary.pop("reason")
    return {
        "target": k, "kind": kind, "lr": lr, "lr_scaled": lr_scaled,
        "localization": gamma, **summary, "nbeta": nbeta, "curvature": scale[0],
        "precond_max": scale[1], "seconds": seconds, "eps_flat": None,
        "llc_nbeta_half": math.nan, "nbeta_elasticity": math.nan,
        "llc_rescaled_2": math.nan, "llc_rescaled_0.5": math.nan, "rescale_change": math.nan,
        "checks_passed": None, "_res": res,
    }  # fmt: skip


def _table(rows: dict, targets: Sequence[Target]) -> pd.DataFrame:
    records = []
    for row in rows.values():
        rec = {k: v for k, v in row.items() if k != "_res"}
        records.append({**targets[row["target"]].labels, **rec})
    df = pd.DataFrame(records)
    if df.empty:
        return df
    df["eps_flat"] = df["eps_flat"].astype("boolean")
    df["checks_passed"] = df["checks_passed"].astype("boolean")
    order = ["target", "kind", "nbeta", "localization", "lr"]
    labels = [c for c in targets[0].labels if c in df]
    df = df[labels + order + [c for c in df.columns if c not in order and c not in labels]]
    return df.sort_values(order, ascending=[True, True, False, True, False], ignore_index=True)


def _best_fallback(table: pd.DataFrame) -> tuple[tuple | None, str]:
    """Step 4's fallback: the best stationary setting (most checks passed), else the smallest
    R-hat; with the phrase saying which."""
    if table.empty:
        return None, "nothing was run"
    final = table[table["target"] == table["target"].max()]
    finite = final[np.isfinite(final["llc_mean"])]
    if finite.empty:
        return None, "no setting gave a finite estimate"
    stationary = finite[finite["stationary"]]
    if stationary.empty:
        best = finite.sort_values("r_hat").iloc[0]
        return _row_key(best), f"no stationary setting: the smallest R-hat ({best.r_hat:.3g})"
    score = (
        stationary["step_ok"].astype(int)
        + (~stationary["localisation_dominated"]).astype(int)
        + stationary["eps_flat"].fillna(False).astype(int)
        + stationary["checks_passed"].fillna(False).astype(int)
        + (stationary["llc_mean"] > 0).astype(int)
    )
    ranked = stationary.assign(_score=score).sort_values(
        ["_score", "nbeta", "localization", "lr"], ascending=[False, False, True, False]
    )
    best = ranked.iloc[0]
    failed = best.invalid_reason or "valid alone but not flat in eps or failing the nbeta or "
    if not best.invalid_reason:
        failed += "rescaling checks"
    return _row_key(best), f"the best stationary setting ({failed})"


def chosen_sampler(table: pd.DataFrame) -> tuple[dict[str, Any], bool, str]:
    """The settings a calibration table chose (its ``chosen`` rows' ``settings``), whether they
    are valid, and the calibration's reason. Raises ValueError when nothing was chosen."""
    if "chosen" not in table or not table["chosen"].fillna(False).astype(bool).any():
        reason = str(table["reason"].iloc[0]) if "reason" in table and len(table) else ""
        raise ValueError(f"the calibration chose no setting: {reason}")
    rows = table[table["chosen"].fillna(False).astype(bool)]
    settings = {json.dumps(json.loads(s), sort_keys=True) for s in rows["settings"]}
    if len(settings) != 1:
        raise ValueError(f"the calibration table marks {len(settings)} different settings")
    return (
        json.loads(settings.pop()),
        bool(rows["chosen_valid"].fillna(False).astype(bool).all()),
        str(rows["reason"].iloc[0]),
    )
