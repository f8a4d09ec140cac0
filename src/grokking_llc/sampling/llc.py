"""Local learning coefficient estimation (SPEC section 4).

``llc = n_beta * (E_w[L_n(w)] - L_n(w*))``, the expectation over the localised tempered posterior
``p(w) ~ exp(-n_beta L_n(w) - (gamma/2) ||w - w*||^2)`` sampled by SGLD, averaged over chains.

:func:`estimate_llc` is generic over any ``torch.nn.Module`` and any ``loss_fn(pred, target)``
returning a scalar mean loss; the sampler backend is a choice. Both backends produce loss traces
(one row per chain, one column per SGLD step, burn-in included) and share
:func:`llc_from_traces`, the one place where burn-in is dropped and diverged chains are left out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from grokking_llc.core import columns
from grokking_llc.core.settings import SamplerConfig

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

BACKENDS = ("devinterp", "fast")

# A chain whose mean loss after burn-in exceeds the starting loss by more than this many
# multiples of 1/n_beta per parameter-free unit is called runaway (see llc_from_traces).
RUNAWAY_FACTOR = 1e3

# The LLCResult fields of what _diagnostic_means returns, in its order.
DIAGNOSTIC_MEANS = ("mala_acceptance", "mean_distance", "grad_loc_ratio", "r_hat_distance")


@dataclass
class LLCResult:
    """One LLC estimate with its diagnostics and validity (SPEC sections 4 and 10).

    ``loss_trace`` has shape (num_chains, steps run): the minibatch loss at every SGLD step,
    burn-in included, so a trace plot shows it; the estimate uses the draws after ``burn_in``
    steps only. ``llc_mean`` and ``llc_std`` (sample std across chains, ddof=1; 0 for one
    chain) use the chains that did not diverge; NaN with ``reason`` set when none is left.
    ``llc_se`` is the standard error of ``llc_mean``: the larger of
    ``nbeta * sqrt(var(draws) / ess)`` and the chain-to-chain ``llc_std / sqrt(chains)``
    (minibatch noise makes the loss's autocorrelation fall fast, so the ESS alone can miss a
    slow mode that the chains' spread shows).

    Validity (:mod:`grokking_llc.sampling.validity` holds the thresholds): ``r_hat`` and
    ``r_hat_tail``
    (ArviZ's rank-normalised split-R-hat of the loss on the draws and on their last half),
    ``ess`` and ``ess_tail`` (bulk and tail ESS), ``drift_z`` (first- vs last-quarter drift in
    standard errors) and ``drift_se`` (that drift's standard error in LLC units),
    ``r_hat_distance`` (R-hat of ``|w - w*|`` over the draws; reported, not required, see
    :mod:`grokking_llc.sampling.validity`), ``mala_acceptance`` (mean MALA acceptance probability of
    the
    steps, SPEC section 10), ``mean_distance`` (mean ``|w - w*|`` over the draws) beside
    ``prior_radius`` = ``sqrt(d / gamma)``, ``grad_loc_ratio`` (mean ``|nbeta grad L|`` over
    mean ``|gamma (w - w*)|``, draws only), ``burn_in`` (steps dropped: the configured
    ``num_burnin_steps`` or more, where the trace reaches its plateau), ``num_steps`` (steps
    run per chain), ``llc_bound`` (:func:`llc_bound`), ``grad_norm`` (full-batch gradient norm
    at w*) and ``gradient_bias`` (:func:`grokking_llc.sampling.validity.gradient_bias`), and the
    booleans ``stationary``, ``localisation_dominated``, ``step_ok``, ``at_minimum``, ``valid``
    with ``status`` (``valid`` / ``not_a_minimum`` / ``invalid``) and ``invalid_reason`` (""
    when valid). ``diagnostics`` keeps the per-chain, per-step arrays the scalars come from
    (not part of :meth:`summary`).
    """

    llc_mean: float
    llc_std: float
    llc_per_chain: np.ndarray
    loss_trace: np.ndarray
    init_loss: float
    nbeta: float
    num_burnin_steps: int
    diverged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    reason: str = ""
    r_hat: float = math.nan
    ess: float = math.nan
    llc_se: float = math.nan
    r_hat_tail: float = math.nan
    r_hat_distance: float = math.nan
    drift_z: float = math.nan
    mala_acceptance: float = math.nan
    mean_distance: float = math.nan
    prior_radius: float = math.nan
    grad_loc_ratio: float = math.nan
    burn_in: int = 0
    num_steps: int = 0
    sampler_kind: str = "sgld"
    ess_tail: float = math.nan
    drift_se: float = math.nan
    llc_bound: float = math.inf
    grad_norm: float = math.nan
    gradient_bias: float = math.nan
    stationary: bool = False
    localisation_dominated: bool = True
    step_ok: bool = False
    at_minimum: bool = False
    valid: bool = False
    status: str = "invalid"
    invalid_reason: str = ""
    diagnostics: dict = field(default_factory=dict, repr=False)

    @property
    def num_chains(self) -> int:
        return int(self.loss_trace.shape[0])

    def summary(self) -> dict[str, Any]:
        """The scalar columns of an LLC results row (the one source of them): every field but
        the arrays (``llc_per_chain``, ``loss_trace``, ``diverged``, ``diagnostics``), plus
        ``num_diverged``."""
        return {
            "llc_mean": float(self.llc_mean),
            "llc_std": float(self.llc_std),
            "llc_se": float(self.llc_se),
            "init_loss": float(self.init_loss),
            "nbeta": float(self.nbeta),
            "num_burnin_steps": int(self.num_burnin_steps),
            "burn_in": int(self.burn_in),
            "num_steps": int(self.num_steps),
            "num_diverged": int(np.sum(self.diverged)),
            "reason": self.reason,
            "r_hat": float(self.r_hat),
            "r_hat_tail": float(self.r_hat_tail),
            "r_hat_distance": float(self.r_hat_distance),
            "drift_z": float(self.drift_z),
            "ess": float(self.ess),
            "mala_acceptance": float(self.mala_acceptance),
            "mean_distance": float(self.mean_distance),
            "prior_radius": float(self.prior_radius),
            "grad_loc_ratio": float(self.grad_loc_ratio),
            "sampler_kind": self.sampler_kind,
            "ess_tail": float(self.ess_tail),
            "drift_se": float(self.drift_se),
            "llc_bound": float(self.llc_bound),
            "grad_norm": float(self.grad_norm),
            "gradient_bias": float(self.gradient_bias),
            "stationary": bool(self.stationary),
            "localisation_dominated": bool(self.localisation_dominated),
            "step_ok": bool(self.step_ok),
            "at_minimum": bool(self.at_minimum),
            "valid": bool(self.valid),
            "status": self.status,
            "invalid_reason": self.invalid_reason,
        }


SUMMARY_COLUMNS = columns.LLC_ESTIMATE


def _split_draws(trace: np.ndarray, num_burnin_steps: int, burn_in: str):
    """(burn-in used, non-finite chains). ``"auto"``: where the finite chains' mean loss trace
    reaches its plateau (SPEC section 10), at least ``num_burnin_steps``; ``"fixed"``: exactly
    ``num_burnin_steps``. The distance ``|w - w*|`` is not consulted: it is not what is
    estimated, and in singular directions it relaxes long after the loss has
    (:mod:`grokking_llc.sampling.validity`)."""
    from grokking_llc.sampling.diagnostics import plateau_burn_in

    finite = np.isfinite(trace).all(axis=1)
    if burn_in == "fixed" or not finite.any():
        return int(num_burnin_steps), ~finite
    if burn_in != "auto":
        raise ValueError(f"burn_in {burn_in!r}: choose 'auto' or 'fixed'")
    return int(plateau_burn_in(trace[finite], minimum=num_burnin_steps)), ~finite


def _distance_series(diagnostics):
    """(distance (chains, D), steps (D,)) of the diagnostics, or (None, None): the per-step
    ``distance_trace`` when recorded, else the diagnostic steps' ``distance``."""
    if diagnostics and np.size(diagnostics.get("distance_trace", ())):
        distance = np.asarray(diagnostics["distance_trace"], dtype=np.float64)
        return distance, np.arange(distance.shape[1])
    if not diagnostics or "distance" not in diagnostics:
        return None, None
    distance = np.asarray(diagnostics["distance"], dtype=np.float64)
    if distance.ndim != 2 or distance.shape[1] == 0:
        return None, None
    steps = np.asarray(diagnostics.get("steps", np.arange(distance.shape[1])))
    return distance, steps


def _stationarity_stats(draws: np.ndarray, nbeta: float) -> dict[str, float]:
    """R-hat (draws, tail), bulk and tail ESS, the drift in SEs and its SE in LLC units
    (``nbeta`` times that of the mean loss) of the kept chains' draws (SPEC section 10)."""
    from grokking_llc.sampling import diagnostics as dg

    if not len(draws):
        nan = math.nan
        return dict(r_hat=nan, r_hat_tail=nan, ess=nan, ess_tail=nan, drift_z=nan, drift_se=nan)
    multi = len(draws) > 1
    _, drift_se = dg.drift(draws)
    return {
        "r_hat": dg.r_hat(draws) if multi else math.nan,
        "r_hat_tail": dg.r_hat_tail(draws) if multi else math.nan,
        "ess": dg.effective_sample_size(draws),
        "ess_tail": dg.tail_ess(draws),
        "drift_z": dg.drift_z(draws),
        "drift_se": float(nbeta) * drift_se,
    }


def _draws_are_enough(
    trace: np.ndarray,
    init_loss: float,
    nbeta: float,
    num_burnin_steps: int,
    burn_in: str,
    target_ess: float,
    min_steps: int | None = None,
) -> bool:
    """Stop rule of an adaptive run: every chain finite and the draws stationary by the
    checks of :func:`grokking_llc.sampling.validity.stationarity_problems` with an ESS (bulk and
    tail)
    of at least ``target_ess`` (SPEC section 10); or no finite chain left, or the chains below
    L(w*) or still running downhill (:func:`grokking_llc.sampling.validity.descending`): more steps
    cannot help there. Stationary draws stop the run only from ``min_steps`` on."""
    from grokking_llc.sampling.validity import descending, stationarity_problems

    burn, bad = _split_draws(trace, num_burnin_steps, burn_in)
    if bad.all():
        return True
    if bad.any() or trace.shape[1] - burn < 16:
        return False
    draws = trace[:, burn:]
    llc = float(nbeta) * (float(draws.mean()) - float(init_loss))
    stats = _stationarity_stats(draws, nbeta)
    if llc <= 0 or descending(llc, stats["drift_z"], stats["drift_se"]):
        return True  # running downhill: no minimum here, more steps cannot help
    if min_steps is not None and trace.shape[1] < min_steps:
        return False  # still settling after the climb (SamplerConfig.min_steps)
    problems = stationarity_problems(
        llc_mean=llc, num_good_chains=len(draws), ess_min=target_ess, **stats
    )
    return not problems


def llc_from_traces(
    loss_trace: np.ndarray,
    init_loss: float,
    nbeta: float,
    num_burnin_steps: int,
    *,
    burn_in: str = "auto",
    localization: float = math.nan,
    num_params: int | None = None,
    diagnostics: Mapping[str, np.ndarray] | None = None,
    sampler_kind: str = "sgld",
    mala_note: str = "",
    llc_bound: float = math.inf,
    grad_norm: float = math.nan,
    grad_curvature: float = math.nan,
    exact: bool = False,
) -> LLCResult:
    """LLC per chain ``n_beta * (mean_draws L - L(w*))`` with burn-in excluded (SPEC section 4),
    and its validity (SPEC section 10, :mod:`grokking_llc.sampling.validity`).

    Burn-in: ``burn_in="auto"`` drops where the finite chains' mean trace reaches its plateau
    (:func:`grokking_llc.sampling.diagnostics.plateau_burn_in`, at least ``num_burnin_steps`` and at
    most
    half the steps beyond it); ``"fixed"`` drops exactly ``num_burnin_steps``.

    A chain is marked diverged when any of its losses is NaN or infinite, or when its mean
    loss over the draws exceeds ``init_loss`` by more than ``RUNAWAY_FACTOR * max(1, |init_loss|)``.
    Diverged chains are left out of the mean and std, never averaged in silently; R-hat, the
    ESS and the drift are computed on the draws of the chains that remain.

    ``diagnostics`` (optional): per-step arrays of the sampler, each (chains, D) at the steps
    ``diagnostics["steps"]`` (D,): ``distance``, ``grad_norm``, ``loc_norm`` and optionally
    ``log_accept`` (:class:`grokking_llc.sampling.sgld.ChainSamples`, or the same keys with one
    column per
    step and no ``steps``). Only steps after the burn-in and chains that did not diverge count:
    ``mala_acceptance`` is the mean of ``min(1, exp(log_accept))``, ``mean_distance`` the mean
    distance, ``grad_loc_ratio = mean(grad_norm) / mean(loc_norm)``. Without them these are NaN
    and the estimate is not valid. ``prior_radius = sqrt(num_params / localization)``.
    ``mala_note`` says why MALA is missing, when it is.

    At w* (:func:`point_checks`): ``llc_bound`` (the largest LLC the model can have, inf when
    unknown), ``grad_norm`` and ``grad_curvature`` (the full-batch gradient's norm and the
    curvature along it; NaN when not measured, and then the estimate is not valid), from which
    :func:`grokking_llc.sampling.validity.gradient_bias` decides whether w* is a minimum at this
    sampler's nbeta and gamma. ``exact``: the chains are Metropolis-adjusted (no step error).
    """
    from grokking_llc.sampling.diagnostics import standard_error
    from grokking_llc.sampling.validity import assess, gradient_bias

    trace = np.asarray(loss_trace, dtype=np.float64)
    if trace.ndim != 2 or trace.shape[1] <= num_burnin_steps:
        raise ValueError(
            f"loss_trace of shape {trace.shape} has no draws after {num_burnin_steps} burn-in steps"
        )
    burn, nonfinite = _split_draws(trace, num_burnin_steps, burn_in)
    draws = trace[:, burn:]
    with np.errstate(invalid="ignore", over="ignore"):
        mean_loss = draws.mean(axis=1)
        per_chain = nbeta * (mean_loss - init_loss)
    runaway = ~nonfinite & (mean_loss - init_loss > RUNAWAY_FACTOR * max(1.0, abs(init_loss)))
    diverged = nonfinite | runaway
    good = per_chain[~diverged]
    reason = ""
    if not math.isfinite(init_loss):
        reason, good = "non-finite loss at the checkpoint itself", good[:0]
    elif good.size == 0:
        reason = "all chains diverged (NaN/inf or runaway loss)"
    kept = draws[~diverged]
    stats = _stationarity_stats(kept, nbeta)
    llc_se = nbeta * standard_error(kept) if len(kept) else math.nan
    if good.size > 1:  # chain-to-chain spread catches slow modes the ESS misses
        llc_se = max(llc_se, float(good.std(ddof=1)) / math.sqrt(good.size))
    means = dict(
        zip(DIAGNOSTIC_MEANS, _diagnostic_means(diagnostics, burn, ~diverged), strict=True)
    )
    if num_params is not None and localization > 0:
        prior_radius = math.sqrt(num_params / localization)
    elif num_params is not None and localization == 0:
        prior_radius = math.inf
    else:
        prior_radius = math.nan
    llc_mean = float(good.mean()) if good.size else math.nan
    bias = gradient_bias(grad_norm, grad_curvature, nbeta, localization)
    verdict = assess(
        llc_mean=llc_mean,
        num_good_chains=int(good.size),
        num_diverged=int(diverged.sum()),
        mala_acceptance=means["mala_acceptance"],
        grad_loc_ratio=means["grad_loc_ratio"],
        gradient_bias=bias,
        llc_bound=float(llc_bound),
        exact=exact,
        mala_note=mala_note,
        **stats,
    )
    return LLCResult(
        llc_mean=llc_mean,
        llc_std=float(good.std(ddof=1)) if good.size > 1 else (0.0 if good.size else math.nan),
        llc_per_chain=per_chain,
        loss_trace=trace,
        init_loss=float(init_loss),
        nbeta=float(nbeta),
        num_burnin_steps=int(num_burnin_steps),
        diverged=diverged,
        reason=reason,
        llc_se=float(llc_se),
        prior_radius=prior_radius,
        burn_in=int(burn),
        num_steps=int(trace.shape[1]),
        sampler_kind=sampler_kind,
        llc_bound=float(llc_bound),
        grad_norm=float(grad_norm),
        gradient_bias=float(bias),
        diagnostics=dict(diagnostics or {}),
        **means,
        **_verdict_fields(verdict),
        **stats,
    )


def _verdict_fields(verdict) -> dict[str, Any]:
    """The fields of a :class:`grokking_llc.sampling.validity.Validity` that an
    :class:`LLCResult` carries: all but ``below_bound`` (a failed bound is in
    ``invalid_reason``)."""
    return {k: v for k, v in asdict(verdict).items() if k != "below_bound"}


def _diagnostic_means(diagnostics, burn: int, keep: np.ndarray):
    """(mean MALA acceptance, mean distance, force ratio, distance R-hat) over the draws of the
    kept chains; NaN where the diagnostics do not say."""
    nan4 = (math.nan,) * 4
    series, series_steps = _distance_series(diagnostics)
    if series is None or "distance" not in diagnostics:
        return nan4
    steps = np.asarray(diagnostics.get("steps", np.arange(np.shape(diagnostics["distance"])[1])))
    cols = steps >= burn
    if not cols.any() or not keep.any():
        return nan4

    def part(key):
        return np.asarray(diagnostics[key], dtype=np.float64)[keep][:, cols]

    from grokking_llc.sampling.diagnostics import r_hat

    mala = math.nan
    if "log_accept" in diagnostics and np.size(diagnostics["log_accept"]):
        with np.errstate(over="ignore", invalid="ignore"):
            mala = float(np.minimum(1.0, np.exp(part("log_accept"))).mean())
    grad_mean, loc_mean = float(part("grad_norm").mean()), float(part("loc_norm").mean())
    if loc_mean > 0:
        ratio = grad_mean / loc_mean
    else:
        ratio = math.inf if grad_mean > 0 else math.nan
    dist = series[keep][:, series_steps >= burn]
    rhat_dist = r_hat(dist) if len(dist) > 1 else math.nan
    return mala, float(part("distance").mean()), float(ratio), float(rhat_dist)


@dataclass(frozen=True)
class PointChecks:
    """What is measured at w* itself, before sampling (SPEC section 10): the full-batch loss,
    the norm of its gradient and the curvature along the gradient (``g^T H g / |g|^2``), and
    the largest LLC the model can have there (:func:`llc_bound`)."""

    loss: float
    grad_norm: float
    grad_curvature: float
    llc_bound: float


def llc_bound(num_params: int, num_samples: int, pred_shape: tuple, loss_fn: LossFn) -> float:
    """The largest LLC possible (SPEC section 10): ``d / 2`` and half the dimension of what the
    loss sees of the predictions on the ``n`` training samples. The loss depends on the
    parameters only through those predictions, so near a point where their Jacobian has
    locally constant rank (every point of an open dense set) the LLC is at most half that
    rank, itself at most half the dimension: ``(n - 1) p / 2`` for the centred loss (each
    output column centred over the samples: 29,759.5 at p = 53, n = 1,124), ``n (p - 1) / 2``
    for the cross-entropy (logits matter up to a shift per sample), ``n p / 2`` otherwise
    (``pred_shape`` = (n, p, ...) of the model's output on the training inputs)."""
    from grokking_llc.core.model import centred_mse, cross_entropy

    outputs = int(np.prod(pred_shape[1:])) if len(pred_shape) > 1 else 1
    if loss_fn is centred_mse:
        seen = (num_samples - 1) * outputs
    elif loss_fn is cross_entropy:
        seen = num_samples * (outputs - 1)
    else:
        seen = num_samples * outputs
    return 0.5 * min(int(num_params), seen)


def point_checks(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], x, y, loss_fn: LossFn
) -> PointChecks:
    """:class:`PointChecks` at ``state`` (float64, full batch, the model's buffers as they are):
    one gradient and one Hessian-vector product (forward-over-reverse) of the training loss.
    Attention runs on its math kernel there: the fused ones have no forward-mode derivative."""
    from torch.func import functional_call, grad, jvp
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = [name for name, _ in model.named_parameters()]
    params = {name: state[name].detach().to(torch.float64) for name in names}
    buffers = {k: (b.double() if b.is_floating_point() else b) for k, b in model.named_buffers()}
    x64 = x.double() if x.is_floating_point() else x
    y64 = y.double() if y.is_floating_point() else y

    def loss(p):
        return loss_fn(functional_call(model, (p, buffers), (x64,)), y64)

    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        g = grad(loss)(params)
        gn2 = sum(float((v * v).sum()) for v in g.values())
        value, hg = jvp(grad(loss), (params,), ({k: v.detach() for k, v in g.items()},))
        with torch.no_grad():
            full = float(loss(params))
            pred_shape = tuple(functional_call(model, (params, buffers), (x64[:1],)).shape)
    curvature = sum(float((hg[k] * g[k]).sum()) for k in names) / gn2 if gn2 > 0 else 0.0
    d = sum(v.numel() for v in params.values())
    bound = llc_bound(d, len(x), (len(x), *pred_shape[1:]), loss_fn)
    return PointChecks(full, math.sqrt(gn2), float(curvature), bound)


def default_diag_every(num_steps: int) -> int:
    """Diagnostic-step spacing: ~30 diagnostic steps per run, every 20th to 100th step. A
    diagnostic step (two float64 loss-and-gradient evaluations and the MALA terms) costs about
    four plain steps, so diagnostics add at most ~20% to a run (benchmarks/RESULTS.md)."""
    return int(min(100, max(20, num_steps // 30)))


def estimate_llc(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    sampler: Mapping[str, Any] | SamplerConfig,
    *,
    seed: int = 0,
    backend: str = "devinterp",
    device: str | torch.device | None = None,
    diag_every: int | None = None,
) -> LLCResult:
    """Estimate the LLC of ``model`` at its current parameters w* (SPEC section 4), with the
    validity checks of SPEC section 10.

    ``x`` and ``y`` are the full training inputs and targets (any shapes ``model`` and
    ``loss_fn`` accept, first dimension n); SGLD draws minibatches of ``sampler.batch_size``.
    ``sampler`` is a :class:`SamplerConfig` or a mapping of its keys (lr, nbeta, localization,
    num_chains, num_burnin_steps, num_draws, batch_size, kind, burn_in, max_steps, target_ess,
    ...; the rest at their defaults). ``seed`` fixes every random draw (noise and minibatches).
    The model's parameters are left unchanged.

    With ``max_steps`` above ``num_burnin_steps + num_draws`` the fast backend runs adaptively:
    after that many steps, and then whenever the run has grown by half, it stops once the chains
    are stationary with an ESS of at least ``target_ess`` (or all diverged), else at
    ``max_steps``; ``num_steps`` of the result records the steps used. The devinterp backend
    always runs ``num_burnin_steps + num_draws`` steps.

    ``diag_every``: spacing of the fast backend's diagnostic steps (MALA acceptance, distances,
    forces); None: :func:`default_diag_every`; 0: none (the estimate is then not valid).
    """
    state = {name: p.detach() for name, p in model.named_parameters()}
    [res] = estimate_llc_many(
        model, [state], x, y, loss_fn, sampler, seeds=[seed], backend=backend, device=device,
        diag_every=diag_every,
    )  # fmt: skip
    return res


def estimate_llc_many(
    model: torch.nn.Module,
    states: list[Mapping[str, torch.Tensor]],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    sampler: Mapping[str, Any] | SamplerConfig,
    *,
    seeds: list[int],
    backend: str = "devinterp",
    device: str | torch.device | None = None,
    diag_every: int | None = None,
) -> list[LLCResult]:
    """:func:`estimate_llc` at several checkpoints of one model: ``states[s]`` maps every
    parameter name to checkpoint s's value, sampled with ``seeds[s]``. The fast backend stacks
    the checkpoints along the chain axis (one batched computation; every checkpoint's numbers
    are those of its own :func:`estimate_llc` call, tested); devinterp runs them one by one.
    The model's parameters are left unchanged."""
    from grokking_llc.core.model import check_loss_samples

    cfg = SamplerConfig.from_mapping(sampler)
    if len(seeds) != len(states):
        raise ValueError(f"{len(states)} states but {len(seeds)} seeds")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
    if cfg.batch_size > len(x):
        raise ValueError(f"sampler batch_size {cfg.batch_size} exceeds the {len(x)} samples")
    check_loss_samples(loss_fn, cfg.batch_size, "sampler batch_size")  # SPEC section 2
    if device is None:
        device = next(model.parameters()).device
    nbeta = cfg.resolved_nbeta
    common = dict(burn_in=cfg.burn_in, localization=cfg.localization, sampler_kind=cfg.kind)
    checks = [point_checks(model, state, x.to(device), y.to(device), loss_fn) for state in states]
    if backend == "devinterp":
        from grokking_llc.sampling import devinterp_backend

        if cfg.max_steps is not None and cfg.max_steps > cfg.num_steps:
            log.warning("devinterp backend: fixed length %d steps (no adaptive length)",
                        cfg.num_steps)  # fmt: skip
        saved = {name: p.detach().clone() for name, p in model.named_parameters()}
        results = []
        try:
            for state, seed, check in zip(states, seeds, checks, strict=True):
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        p.copy_(state[name])
                out = devinterp_backend.sample_chains(
                    model, x, y, loss_fn, cfg, seed=seed, device=str(device)
                )
                diag = {k: out[k] for k in ("distance", "grad_norm", "loc_norm")}
                results.append(
                    llc_from_traces(
                        out["trace"],
                        out["init_loss"],
                        nbeta,
                        cfg.num_burnin_steps,
                        num_params=out["num_params"],
                        diagnostics=diag,
                        mala_note="no MALA acceptance from devinterp 2.0.1",
                        **common,
                        **_point_kwargs(check),
                    )  # fmt: skip
                )
        finally:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(saved[name])
        return results
    if backend != "fast":
        raise ValueError(f"unknown LLC backend {backend!r}; choose one of {BACKENDS}")
    from grokking_llc.sampling import sgld
    from grokking_llc.sampling.validity import MINIMUM_TOL, gradient_bias

    # A checkpoint whose gradient term alone exceeds a tenth of the largest LLC possible is no
    # minimum whatever the chains say: its run is not lengthened (SPEC section 10).
    hopeless = [
        gradient_bias(c.grad_norm, c.grad_curvature, nbeta, cfg.localization)
        > MINIMUM_TOL * c.llc_bound
        for c in checks
    ]

    def enough(s: int, trace: np.ndarray, diag: Mapping[str, np.ndarray]) -> bool:
        return hopeless[s] or _draws_are_enough(
            trace, diag["init_loss"], nbeta, cfg.num_burnin_steps, cfg.burn_in, cfg.target_ess,
            cfg.min_steps,
        )  # fmt: skip

    adaptive = cfg.max_steps is not None and cfg.max_steps > cfg.num_steps
    cap = cfg.max_steps if adaptive else cfg.num_steps
    every = default_diag_every(cfg.num_steps) if diag_every is None else int(diag_every)
    samples = sgld.sample_chains_many(
        model, states, x, y, loss_fn, cfg, seeds=list(seeds), device=device, diag_every=every,
        max_steps=cap, stop=enough if adaptive else None,
    )  # fmt: skip
    results = []
    for res, check in zip(samples, checks, strict=True):
        diag = {"steps": res.diag_steps, "log_accept": res.log_accept, "distance": res.distance,
                "grad_norm": res.grad_norm, "loc_norm": res.loc_norm,
                "distance_trace": res.distance_trace}  # fmt: skip
        results.append(
            llc_from_traces(
                res.trace,
                res.init_loss,
                nbeta,
                cfg.num_burnin_steps,
                num_params=res.num_params,
                diagnostics=diag,
                **common,
                **_point_kwargs(check),
            )  # fmt: skip
        )
    return results


def _point_kwargs(check: PointChecks) -> dict[str, float]:
    return {"llc_bound": check.llc_bound, "grad_norm": check.grad_norm,
            "grad_curvature": check.grad_curvature}  # fmt: skip
