"""Sampler calibration: SGLD settings whose LLC estimates pass SPEC section 10's checks.

:func:`calibrate_targets` (with :func:`calibrate_checkpoints` and :func:`calibrate_sampler` for
checkpoints of one model) chooses ONE setting for the targets given: in the pipeline the final
checkpoint of the first run of one model shape (model, p, width), since every shape a figure
compares is calibrated on its own (:mod:`grokking_llc.pipeline.plan`); a setting's estimates are
valid at any shape only where its checks passed there.

Search (the defaults of :func:`default_search`, each overridable in the config's
``llc.calibration.grid``). For each sampler kind (by default ``gn_diag`` alone: its diagonal
Gauss-Newton preconditioner relaxes the flat directions fastest, measured at K=256; see
:data:`DEFAULT_KINDS`) and inverse temperature
``nbeta`` (``(n / ln n) x {512, 64}``, the larger first), a ladder of localisations
``gamma = nbeta lambda_H / kappa`` over resolutions ``kappa = 32, 64, ..., 4096`` (``lambda_H``
the largest Hessian eigenvalue at the final target, :func:`top_curvature`, whatever the kind, so
that ``kappa`` is the same scale-free resolution for every kind; ``nbeta / gamma`` doubles per
rung). Each rung runs at the step size ``eps = lr_scaled / (nbeta lambda + gamma g_max)``
(``lambda`` the largest eigenvalue of ``G^(1/2) H G^(1/2)`` for the kind's preconditioner ``G``,
``g_max = max G``, both 1-based for SGLD; ``lr_scaled = 1`` is the stability edge of SPEC
section 10; the first value of ``lr_scaled`` is the ladder's). A rung whose chains are not
stationary within ``max_steps`` at a minimum ends the ladder (a finer resolution relaxes more
slowly still). The first rung that is valid (:mod:`grokking_llc.sampling.validity`) with the two
before it valid too, and whose series has little left to gain -- the geometric extrapolation of the
last two changes, :func:`validity.remaining_bias`, at most :data:`validity.GAMMA_TOL` of the
estimate -- is the candidate: its estimate no longer counts more directions as the localisation
loosens. (One comparison at a fixed tolerance is not enough: the singular known answers converge
with a ratio ~0.7 per halving, so a 10% change can leave 20% to go.)

Checks of a candidate (:mod:`grokking_llc.sampling.validity` states the tolerances; each
comparison is a :func:`validity.compare`, precise enough to tell or failed as too noisy):

1. step size: walk ``lr_scaled`` down the grid until a step and the next smaller one agree
   within :data:`validity.EPS_TOL`; the smaller of that pair becomes the candidate's step (its
   bias, about linear in the step, is then about the pair's difference);
2. gamma: the ladder's remaining bias (above; a property of the posterior: the step's bias
   moves every rung alike, so the ladder is not redone at the smaller step);
3. nbeta: at ``nbeta / 2, gamma / 2`` (the same resolution, a higher temperature; the same
   fraction of that setting's own stability edge) the estimate moves by at most
   :data:`validity.SENSITIVITY_TOL`;
4. rescaling: under the model's function-preserving rescaling (the quadratic net's
   ``W -> cW, V -> V / c^2``, a deep linear net's layer scaling; c = 2 and 1/2; SPEC section
   10), run at the same fraction of the *rescaled* state's own stability edge, the same;
5. reference (optional, ``reference="mala"``): a full-batch Metropolis-adjusted chain
   (:mod:`grokking_llc.sampling.mala`) at the same nbeta, gamma and weight decay agrees within
   :data:`REFERENCE_TOL`;
6. every other target: the candidate's estimate (at the final target's absolute step: one
   setting for all) is valid there, or the target is not a minimum (``not_a_minimum``: the LLC
   is not defined there, which vetoes nothing).

The first candidate that passes everything is chosen (``chosen_valid`` True). At most
``max_candidates`` candidates are checked over all kinds and temperatures. If none passes, the
candidate that passed most checks (else the rung with the best stationarity) is chosen and
marked NOT valid, and ``reason`` lists every check that failed, with the target where it failed.

Every random draw is seeded: all settings at a target use the target's seed (common random
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

from grokking_llc.core import columns
from grokking_llc.core.settings import PRECONDITIONER_KEYS, SamplerConfig, schema_defaults
from grokking_llc.sampling import validity
from grokking_llc.sampling.edge import preconditioner as _preconditioner
from grokking_llc.sampling.edge import step_at_edge, top_curvature
from grokking_llc.sampling.llc import LLCResult, estimate_llc
from grokking_llc.sampling.sgld import KINDS

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
State = Mapping[str, torch.Tensor]
Symmetry = Callable[[State, float], dict[str, torch.Tensor]]

# gn_diag only: in the default run plain SGLD was never chosen -- every shape that passed, and
# every known answer, passed with gn_diag first -- and where gn_diag failed (p=23, K=64, K=128)
# SGLD's ladders failed too, at 40-60% of those calibrations' time (README, "Measured").
# grid.kind: [gn_diag, sgld] restores the wider search.
DEFAULT_KINDS = ("gn_diag",)
DEFAULT_NBETA_FACTORS = (512.0, 64.0)  # times n / ln n, the larger first
DEFAULT_RESOLUTIONS = (32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0)  # kappa
DEFAULT_LR_SCALED = (0.2, 0.1, 0.05, 0.025)  # fractions of the stability edge
RESCALE_FACTORS = (2.0, 0.5)
REFERENCE_TOL = 0.05  # SGLD against the Metropolis-adjusted reference (issue 19)
# what a grid may search; everything else comes from ``base``
GRID_KEYS = ("kind", "nbeta", "localization", "resolution", "lr_scaled")
# calibrate_targets' defaults: the schema's llc.calibration and sampler backend (written once)
_DEFAULTS = {**schema_defaults("llc", "calibration"),
             "backend": schema_defaults("llc", "samplers", "*")["backend"]}  # fmt: skip


@dataclass
class Calibration:
    """Result of a calibration: ``table`` (one row per checkpoint and setting tried),
    ``chosen`` (settings usable as :func:`grokking_llc.sampling.llc.estimate_llc`'s ``sampler``, or
    None),
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
    from grokking_llc.core.model import QuadraticNet

    if isinstance(model, QuadraticNet):
        return quadratic_rescaling
    if isinstance(model, nn.Sequential):
        layers = list(model.named_children())
        linear = [(n, m) for n, m in layers if isinstance(m, nn.Linear) and m.bias is None]
        if len(layers) >= 2 and len(linear) == len(layers):
            return layer_rescaling(f"{layers[0][0]}.weight", f"{layers[1][0]}.weight")
    return None


# --------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------


def default_search(n: int) -> dict[str, list]:
    """The default search (module docstring), for ``n`` training samples."""
    base = n / math.log(n) if n > 2 else 1.0
    return {
        "kind": list(DEFAULT_KINDS),
        "nbeta": [float(f"{base * f:.4g}") for f in DEFAULT_NBETA_FACTORS],
        "resolution": list(DEFAULT_RESOLUTIONS),
        "lr_scaled": list(DEFAULT_LR_SCALED),
    }


def default_grid(n: int) -> dict[str, list]:
    """Alias of :func:`default_search` (the config key is ``llc.calibration.grid``)."""
    return default_search(n)


def _normalise_grid(
    grid: Mapping[str, Any] | None, n: int, backend: str = "fast"
) -> dict[str, list]:
    """The search with the defaults filled in: ``kind`` (in order; devinterp's sampler is plain
    SGLD, the one kind it can search), ``nbeta`` (largest first), the ladder as
    ``localization`` (largest first) or ``resolution`` (smallest first), the steps
    ``lr_scaled`` (largest first: the first is the ladder's, the others the step-size
    check's)."""
    out = default_search(n)
    if backend == "devinterp":
        out["kind"] = ["sgld"]
    grid = {k: v for k, v in dict(grid or {}).items() if v is not None}
    unknown = set(grid) - set(GRID_KEYS)
    if unknown:
        raise ValueError(f"calibration grid: unknown key(s) {sorted(unknown)}; use {GRID_KEYS}")
    if "localization" in grid and "resolution" in grid:
        raise ValueError("calibration grid: give localization or resolution, not both")
    if "localization" in grid:
        out.pop("resolution")
    out.update({k: list(v) for k, v in grid.items()})
    for kind in out["kind"]:
        if kind not in KINDS:
            raise ValueError(f"calibration grid: unknown kind {kind!r}; choose from {KINDS}")
    for key in ("nbeta", "localization", "resolution", "lr_scaled"):
        if key in out:
            if not out[key] or any(not (float(v) > 0) for v in out[key]):
                raise ValueError(f"calibration grid: {key} needs positive values")
            out[key] = sorted({float(v) for v in out[key]}, reverse=key != "resolution")
    return out


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


@dataclass(frozen=True)
class Setting:
    """One sampler setting of the search: kind, nbeta, gamma and the step as a fraction
    ``lr_scaled`` of the stability edge (the absolute step follows per target and rescaling)."""

    kind: str
    nbeta: float
    gamma: float
    lr_scaled: float

    def with_(self, **kw) -> Setting:
        return Setting(**{**self.__dict__, **kw})


class _Runner:
    """Runs and caches one estimate per (target, setting, rescaling); keeps the table's rows."""

    def __init__(self, targets, base, num_steps, backend, device, diag_every, symmetry):
        self.targets = targets
        self.base, self.num_steps = dict(base), num_steps
        self.backend, self.device, self.diag_every = backend, device, diag_every
        self.symmetry = symmetry
        self.cache: dict[tuple, LLCResult] = {}
        self.scales: dict[tuple, tuple[float, float]] = {}
        self.rows: list[dict] = []
        self.work = {id(t.model): copy.deepcopy(t.model) for t in targets}

    @property
    def final(self) -> int:
        return len(self.targets) - 1

    def state(self, k: int, rescale: float) -> State:
        target = self.targets[k]
        if rescale == 1.0:
            return target.state
        symmetry = target.symmetry or self.symmetry
        return symmetry(target.state, rescale)

    def scale(self, k: int, kind: str, rescale: float = 1.0) -> tuple[float, float]:
        """(lambda, g_max) of ``kind`` at target k (rescaled): the largest eigenvalue of
        ``G^(1/2) H G^(1/2)`` and the largest entry of ``G`` (1 for SGLD)."""
        key = (k, kind, rescale)
        if key not in self.scales:
            t = self.targets[k]
            state = self.state(k, rescale)
            params = {name: state[name] for name, _ in t.model.named_parameters()}
            cfg = SamplerConfig(kind=kind, **_precond_options(self.base))
            bs = min(int(self.base.get("batch_size", cfg.batch_size)), len(t.x))
            G = _preconditioner(t.model, params, t.x, t.y, t.loss_fn, cfg, bs, t.seed)
            lam = top_curvature(t.model, params, t.x, t.y, t.loss_fn, precond=G, seed=t.seed)
            gmax = 1.0 if G is None else max(float(g.max()) for g in G.values())
            self.scales[key] = (lam, gmax)
        return self.scales[key]

    def lr(self, k: int, s: Setting, rescale: float = 1.0) -> float:
        """The absolute step of ``s`` at target k: ``lr_scaled / (nbeta lambda + gamma g_max)``."""
        lam, gmax = self.scale(k, s.kind, rescale)
        return step_at_edge(s.lr_scaled, s.nbeta, s.gamma, lam, gmax)

    def settings(self, s: Setting, lr: float) -> dict[str, Any]:
        burn = int(self.base.get("num_burnin_steps", 0))
        out = {**self.base, "lr": float(lr), "nbeta": float(s.nbeta),
               "localization": float(s.gamma), "num_draws": self.num_steps - burn,
               "num_burnin_steps": burn}  # fmt: skip
        if s.kind != "sgld":
            out["kind"] = s.kind
        else:
            out.pop("kind", None)
        return out

    def run(self, k: int, s: Setting, role: str, *, rescale: float = 1.0, lr: float | None = None):
        """The estimate of ``s`` at target k (at ``lr`` if given, else at its own fraction of
        the edge), recorded as a table row with ``role``; (result, row)."""
        lr = self.lr(k, s, rescale) if lr is None else float(lr)
        settings = self.settings(s, lr)
        key = (k, json.dumps(settings, sort_keys=True), rescale)
        fresh = key not in self.cache
        if fresh:
            t0 = time.perf_counter()
            res = self._estimate(k, settings, rescale)
            res.diagnostics["seconds"] = time.perf_counter() - t0
            self.cache[key] = res
        res = self.cache[key]
        lam, gmax = self.scale(k, s.kind, rescale)
        lam_h = self.scale(k, "sgld", rescale)[0]
        row = {
            "target": k, "role": role, "kind": s.kind, "lr": lr, "lr_scaled": s.lr_scaled,
            "nbeta": s.nbeta, "localization": s.gamma, "rescale": rescale,
            "resolution": s.nbeta * lam_h / s.gamma if s.gamma > 0 else math.inf,
            "curvature": lam, "precond_max": gmax,
            "seconds": res.diagnostics["seconds"] if fresh else 0.0,
            **_summary(res), "settings": json.dumps(settings, sort_keys=True),
        }  # fmt: skip
        self.rows.append(row)
        return res, row

    def _estimate(self, k: int, settings: Mapping[str, Any], rescale: float) -> LLCResult:
        target = self.targets[k]
        work = self.work[id(target.model)]
        with torch.no_grad():
            for name, p in work.named_parameters():
                p.copy_(self.state(k, rescale)[name])
        res = estimate_llc(
            work, target.x, target.y, target.loss_fn, settings, seed=target.seed,
            backend=self.backend, device=self.device, diag_every=self.diag_every,
        )  # fmt: skip
        log.info(
            "%s %s%s: llc %.4g +- %.2g, %s", target.labels, _short(settings),
            f" rescaled x{rescale:g}" if rescale != 1.0 else "", res.llc_mean, res.llc_se,
            "valid" if res.valid else res.invalid_reason,
        )  # fmt: skip
        return res


def _precond_options(base: Mapping[str, Any]) -> dict[str, Any]:
    """The preconditioner constants a base may set (gn_damping, gn_probes, rmsprop_*)."""
    return {k: base[k] for k in PRECONDITIONER_KEYS if k in base}


def _summary(res: LLCResult) -> dict[str, Any]:
    out = res.summary()
    out["llc_reason"] = out.pop("reason")
    return out


def _short(s: Mapping[str, Any]) -> str:
    return (f"{s.get('kind', 'sgld')} lr={s['lr']:.3g} nbeta={s['nbeta']:.4g} "
            f"gamma={s['localization']:.4g}")  # fmt: skip


def _ladder(runner: _Runner, grid, kind: str, nbeta: float, c0: float):
    """The localisation ladder at one (kind, nbeta) (module docstring): ``(candidate,
    remaining bias)`` or ``(None, nan)``. The rungs' gammas are ``nbeta lambda_H / kappa``
    with ``lambda_H`` the largest Hessian eigenvalue (the plain one, whatever the kind, so that
    kappa means the same resolution for every kind); a rung is the candidate when it and the
    two before it are valid and the rest of their geometric series
    (:func:`validity.remaining_bias`) is within :data:`validity.GAMMA_TOL`."""
    lam_h, _ = runner.scale(runner.final, "sgld")
    if "localization" in grid:
        gammas = list(grid["localization"])
    else:
        gammas = [nbeta * lam_h / kappa for kappa in grid["resolution"]] if lam_h > 0 else []
    valid: list[LLCResult] = []
    for gamma in gammas:
        s = Setting(kind, nbeta, float(f"{gamma:.4g}"), c0)
        res, row = runner.run(runner.final, s, "ladder")
        valid = [*valid, res] if res.valid else []
        if len(valid) >= 2:
            row["gamma_change"] = (valid[-1].llc_mean - valid[-2].llc_mean) / abs(
                valid[-2].llc_mean
            )
        if len(valid) >= 3:
            last = valid[-3:]
            bias, _ = validity.remaining_bias([r.llc_mean for r in last], [r.llc_se for r in last])
            row["gamma_bias"] = bias
            if bias <= validity.GAMMA_TOL:
                return s, bias
        if not res.stationary and not math.isnan(res.llc_mean) and res.at_minimum:
            return None, math.nan  # a finer resolution relaxes more slowly still
    return None, math.nan


@dataclass
class _Outcome:
    setting: Setting
    lr: float
    passed: list[str]
    failed: list[str]  # "check at target: why"

    @property
    def ok(self) -> bool:
        return not self.failed


def _where(runner: _Runner, k: int) -> str:
    labels = runner.targets[k].labels
    return ", ".join(f"{key} {value}" for key, value in labels.items()) or f"target {k}"


def _check(runner: _Runner, grid, cand: Setting, gamma_bias: float, reference) -> _Outcome:
    """Checks 1-6 of the module docstring for one candidate; every result goes into the
    candidate's row (role ``candidate``) at the final target."""
    final, ladder_steps = runner.final, grid["lr_scaled"]
    where = _where(runner, final)
    passed, failed = [], []
    s = cand
    # 1. step size: walk lr_scaled down until a smaller step changes nothing; the smaller step
    # of the first pair that agrees is the candidate's (its bias is about the pair's change)
    i = ladder_steps.index(cand.lr_scaled)
    res, _ = runner.run(final, s, "step")
    eps_ok, eps_change = False, math.nan
    while True:
        if i + 1 >= len(ladder_steps):
            failed.append(f"step size at {where}: no smaller step left to compare with")
            break
        smaller = s.with_(lr_scaled=ladder_steps[i + 1])
        res_small, _ = runner.run(final, smaller, "step")
        cmp = validity.compare(res.llc_mean, res_small.llc_mean, res.llc_se, res_small.llc_se,
                               validity.EPS_TOL)  # fmt: skip
        eps_change = cmp.change
        if not cmp.ok and not res_small.valid:
            failed.append(f"step size at {where}: {cmp.why}; the smaller step is not valid")
            break
        s, res, i = smaller, res_small, i + 1
        if cmp.ok:
            eps_ok = True
            break
    _, row = runner.run(final, s, "candidate")
    row["eps_change"] = eps_change
    if eps_ok:
        passed.append("step size")
    if not res.valid:
        failed.append(f"estimate at {where}: {res.invalid_reason}")
    lr = runner.lr(final, s)
    # 2. gamma: the ladder's remaining bias (a property of the posterior; the step's bias
    # moves every rung alike, so it is not redone at a smaller step)
    row["gamma_bias"] = gamma_bias
    passed.append("gamma")
    # 3. nbeta: half the temperature's inverse at the same resolution, at the same fraction of
    # its own stability edge
    res_n, _ = runner.run(final, s.with_(nbeta=s.nbeta / 2, gamma=s.gamma / 2), "nbeta")
    cmp = validity.compare(res.llc_mean, res_n.llc_mean, res.llc_se, res_n.llc_se,
                           validity.SENSITIVITY_TOL)  # fmt: skip
    row["nbeta_change"] = cmp.change
    (passed.append("nbeta") if cmp.ok else failed.append(f"nbeta at {where}: {cmp.why}"))
    # 4. rescaling, at the rescaled state's own stability edge
    symmetry = runner.targets[final].symmetry or runner.symmetry
    if symmetry is not None:
        worst = 0.0
        for c in RESCALE_FACTORS:
            res_c, _ = runner.run(final, s, f"rescale x{c:g}", rescale=c)
            row[f"llc_rescaled_{c:g}"] = res_c.llc_mean
            cmp = validity.compare(res.llc_mean, res_c.llc_mean, res.llc_se, res_c.llc_se,
                                   validity.SENSITIVITY_TOL)  # fmt: skip
            worst = max(worst, abs(cmp.change)) if math.isfinite(cmp.change) else math.nan
            if not cmp.ok:
                failed.append(f"rescaling x{c:g} at {where}: {cmp.why}")
        row["rescale_change"] = worst
        if all(not f.startswith("rescaling") for f in failed):
            passed.append("rescaling")
    # 5. a Metropolis-adjusted reference
    if reference == "mala":
        ref = _reference(runner, final, s)
        row["reference_llc"] = ref.llc_mean
        cmp = validity.compare(ref.llc_mean, res.llc_mean, ref.llc_se, res.llc_se, REFERENCE_TOL)
        row["reference_change"] = cmp.change
        if ref.valid and cmp.ok:
            passed.append("reference")
        else:
            why = cmp.why if ref.valid else f"the reference is not valid ({ref.invalid_reason})"
            failed.append(f"MALA reference at {where}: {why}")
    # 6. every other target, at the same absolute step
    for k in range(final):
        res_k, _ = runner.run(k, s, "target", lr=lr)
        if not (res_k.valid or res_k.status == validity.NOT_A_MINIMUM):
            failed.append(f"estimate at {_where(runner, k)}: {res_k.invalid_reason}")
    row["checks_passed"] = not failed
    row["check_failures"] = "; ".join(failed)
    return _Outcome(s, lr, passed, failed)


def _reference(runner: _Runner, k: int, s: Setting) -> LLCResult:
    """A full-batch MALA estimate (:mod:`grokking_llc.sampling.mala`) of the same localised
    posterior
    (the base's weight decay), gn_diag-preconditioned with the base's damping and probes, with
    the base's chains and as many draws as an SGLD run starts with (at least 1,000)."""
    from grokking_llc.sampling import mala

    target = runner.targets[k]
    work = runner.work[id(target.model)]
    with torch.no_grad():
        for name, p in work.named_parameters():
            p.copy_(target.state[name])
    t0 = time.perf_counter()
    burn = max(int(runner.base.get("num_burnin_steps", 0)), 500)
    precond = SamplerConfig(**_precond_options(runner.base))
    res = mala.estimate_llc_mala(
        work, target.x, target.y, target.loss_fn, nbeta=s.nbeta, localization=s.gamma,
        num_chains=int(runner.base.get("num_chains", 4)), num_warmup=burn,
        num_draws=max(runner.num_steps - burn, 1000), seed=target.seed, device=runner.device,
        weight_decay=float(runner.base.get("weight_decay", 0.0)),
        gn_damping=precond.gn_damping, gn_probes=precond.gn_probes,
    )  # fmt: skip
    runner.rows.append({"target": k, "role": "reference", "kind": "mala", "lr": math.nan,
                        "lr_scaled": math.nan, "nbeta": s.nbeta, "localization": s.gamma,
                        "rescale": 1.0, "seconds": time.perf_counter() - t0, **_summary(res),
                        "settings": ""})  # fmt: skip
    return res


def calibrate_targets(
    targets: Sequence[Target],
    *,
    base: Mapping[str, Any] | SamplerConfig | None = None,
    grid: Mapping[str, Any] | None = None,
    num_steps: int = _DEFAULTS["num_steps"],
    backend: str = _DEFAULTS["backend"],
    device: str | torch.device | None = None,
    symmetry: Symmetry | None = None,
    max_candidates: int = _DEFAULTS["max_candidates"],
    diag_every: int | None = None,
    exhaustive: bool = _DEFAULTS["exhaustive"],
    reference: str | None = _DEFAULTS["reference"],
    max_steps: int | None = _DEFAULTS["max_steps"],
) -> Calibration:
    """The calibration of the module docstring over any targets (checkpoints, possibly of
    several runs with their own models and data): the search and checks 1-5 at the last
    target, check 6 at the others, one setting for all. ``symmetry`` applies to every target's
    state (None: no rescaling check unless a target has its own). ``base``: sampler settings
    that are not searched (batch_size, num_chains, num_burnin_steps as the minimum burn-in,
    max_steps and target_ess of the adaptive length, ...); ``num_steps``: the base length of
    every run (``num_burnin_steps + num_draws``). The table has one row per estimate run, with
    the target's labels, ``target`` (its index) and ``role``. ``max_steps``: the cap of every
    run's adaptive length when ``base`` sets none (the chosen settings carry it, so the
    estimates made with them are as long as the calibration's)."""
    t_start = time.perf_counter()
    if not targets:
        raise ValueError("calibration needs at least one target")
    if reference not in (None, "mala"):
        raise ValueError(f"calibration reference {reference!r}: choose 'mala' or None")
    if device is None:
        device = next(targets[0].model.parameters()).device
    base = _base_settings(base)
    if base.get("max_steps") is None and max_steps is not None and max_steps > num_steps:
        base["max_steps"] = int(max_steps)  # adaptive length (SPEC section 10)
    if int(base.get("num_burnin_steps", 0)) + 16 > num_steps:
        raise ValueError(f"num_steps {num_steps} leaves too few draws after the burn-in")
    grid = _normalise_grid(grid, min(len(t.x) for t in targets), backend)
    runner = _Runner(list(targets), base, num_steps, backend, device, diag_every, symmetry)
    kinds = [k for k in grid["kind"] if not (backend == "devinterp" and k != "sgld")]
    steps = grid.get("lr_scaled")
    outcomes: list[_Outcome] = []
    chosen = None
    for kind in kinds:
        for nbeta in grid["nbeta"]:
            if len(outcomes) >= max_candidates or (chosen is not None and not exhaustive):
                break
            cand, gamma_bias = _ladder(runner, grid, kind, nbeta, steps[0])
            if cand is None:
                continue
            outcome = _check(runner, grid, cand, gamma_bias, reference)
            outcomes.append(outcome)
            if outcome.ok and chosen is None:
                chosen = outcome
    if chosen is not None:
        setting, lr, valid = chosen.setting, chosen.lr, True
        reason = (f"{_short(runner.settings(setting, lr))} passed every check ("
                  f"{', '.join(chosen.passed)}) at {len(targets)} target(s).")  # fmt: skip
    else:
        setting, lr, why = _fallback(runner, outcomes)
        valid = False
        reason = why
        if setting is not None:  # show the fallback at every target, as a valid choice is
            for k in range(len(targets)):
                runner.run(k, setting, "target" if k != runner.final else "candidate", lr=lr)
    table = _table(runner)
    settings = runner.settings(setting, lr) if setting is not None else None
    chosen_json = json.dumps(settings, sort_keys=True) if settings is not None else None
    mask = (table["settings"] == chosen_json) & (table["rescale"] == 1.0) if len(table) else []
    table["chosen"] = np.asarray(mask, dtype=bool)
    table["chosen_valid"] = table["chosen"] & valid
    table["reason"] = reason
    seconds = time.perf_counter() - t_start
    log.info("calibration (%.0fs): %s", seconds, reason)
    return Calibration(table, settings, bool(valid and settings is not None), reason, seconds)


def _fallback(runner: _Runner, outcomes: list[_Outcome]) -> tuple:
    """(setting, lr, reason) when nothing passed: the candidate with most checks passed, else
    the ladder rung that got furthest (valid, then stationary, then the finest resolution), else
    (every chain diverged) the first rung tried, so that the pipeline's estimates are still
    made -- and flagged -- rather than stopped by a missing setting."""
    if outcomes:
        best = max(outcomes, key=lambda o: (len(o.passed), -len(o.failed)))
        short = _short(runner.settings(best.setting, best.lr))
        passed = ", ".join(best.passed) or "none"
        reason = (f"no setting passed every check; chose {short}, the candidate that passed "
                  f"most ({passed}), NOT valid: {'; '.join(best.failed)}.")  # fmt: skip
        return best.setting, best.lr, reason
    rungs = [r for r in runner.rows if r["role"] == "ladder" and math.isfinite(r["llc_mean"])]
    if not rungs:
        # keep the pipeline going with the most cautious setting tried (the coarsest rung of
        # the first ladder, at its step): its estimates are made, and invalid, and say why
        first = next((r for r in runner.rows if r["role"] == "ladder"), None)
        if first is None:
            return None, None, "nothing was run: no ladder (no positive curvature at w*)"
        setting = Setting(first["kind"], first["nbeta"], first["localization"], first["lr_scaled"])
        return setting, first["lr"], (
            f"no setting gave a finite estimate at {_where(runner, runner.final)} (every chain "
            f"diverged: {first['invalid_reason'] or first['llc_reason']}); chose "
            f"{_short(runner.settings(setting, first['lr']))}, the coarsest rung tried, NOT valid."
        )  # fmt: skip
    best = max(rungs, key=lambda r: (r["valid"], r["stationary"], r["resolution"]))
    setting = Setting(best["kind"], best["nbeta"], best["localization"], best["lr_scaled"])
    why = best["invalid_reason"] or "valid, but its ladder did not converge"
    return (
        setting,
        best["lr"],
        (
            f"no setting reached a candidate (no ladder had three valid rungs whose remaining "
            f"bias was within {100 * validity.GAMMA_TOL:g}% as gamma halved); chose "
            f"{_short(runner.settings(setting, best['lr']))}, the rung that got furthest, NOT "
            f"valid at {_where(runner, runner.final)}: {why}."
        ),
    )


def calibrate_checkpoints(
    model: nn.Module,
    states: Sequence[State],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    labels: Sequence[int] | None = None,
    symmetry: Symmetry | str | None = "auto",
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> Calibration:
    """:func:`calibrate_targets` at checkpoints of one model (the last is the final one).
    Checkpoint k is sampled with ``seeds[k]`` (default ``seed + k``) and labelled ``labels[k]``
    in the table's ``step`` column (default k). ``symmetry``: ``"auto"``
    (:func:`model_symmetry`), None (no rescaling check) or a function ``(state, c) -> state``.
    Other keyword arguments go to :func:`calibrate_targets`."""
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
    return calibrate_targets(targets, device=device, symmetry=symmetry, **kwargs)


def calibrate_sampler(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, **kwargs: Any
) -> Calibration:
    """Calibrate at the model's current parameters: :func:`calibrate_checkpoints` with this one
    checkpoint (the search and checks are in the module docstring)."""
    state = {k: v.detach().clone() for k, v in model.named_parameters()}
    return calibrate_checkpoints(model, [state], x, y, loss_fn, **kwargs)


def _base_settings(base) -> dict[str, Any]:
    if base is None:
        base = {}
    if isinstance(base, SamplerConfig):
        base = base.to_dict()
    base = dict(base)
    for key in ("lr", "nbeta", "localization", "num_draws", "kind"):
        base.pop(key, None)
    SamplerConfig.from_mapping(base)  # validates the keys
    return base


def _table(runner: _Runner) -> pd.DataFrame:
    records = [{**runner.targets[r["target"]].labels, **r} for r in runner.rows]
    df = pd.DataFrame(records)
    if df.empty:
        return df
    for col in CHECK_COLUMNS:
        if col not in df:
            df[col] = math.nan if col not in ("checks_passed", "check_failures") else None
    df["checks_passed"] = df["checks_passed"].astype("boolean")
    df["check_failures"] = df["check_failures"].astype("string")
    labels = [c for c in runner.targets[0].labels if c in df]
    order = ["target", "role", "kind", "nbeta", "localization", "lr", "rescale"]
    df = df[labels + order + [c for c in df.columns if c not in order and c not in labels]]
    # one row per estimate: a cached estimate met again keeps its first role
    df = df.drop_duplicates(subset=["target", "settings", "rescale", "role"], ignore_index=True)
    return df.sort_values(["target", "kind", "nbeta"], ascending=[True, True, False],
                          kind="stable", ignore_index=True)  # fmt: skip


CHECK_COLUMNS = columns.CALIBRATION_CHECKS
