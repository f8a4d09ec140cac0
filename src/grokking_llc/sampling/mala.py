"""A Metropolis-adjusted reference sampler for the LLC: full-batch MALA (SPEC sections 4 and 10).

It samples the localised tempered posterior of SPEC section 4 exactly (up to Monte Carlo
error), so SGLD's discretisation and minibatch bias can be measured against it wherever the
full training set fits in one batch (n = 1,124 here). The potential is

    U(w) = nbeta L_n(w) + (gamma/2) |w - w*|^2 + (lambda_wd/2) |w|^2,      p(w) ~ exp(-U(w)),

with ``L_n`` the FULL-batch training loss (``loss_fn(model(x), y)``, a mean over the n rows)
and the weight-decay term only when ``weight_decay`` is given (SPEC section 4 names it
lambda_wd). The estimate is ``llc = nbeta (E[L_n] - L_n(w*))`` (SPEC section 4), averaged over
chains by :func:`grokking_llc.sampling.llc.llc_from_traces`.

Proposal (Roberts and Tweedie 1996; with a fixed diagonal preconditioner ``G``, Girolami and
Calderhead 2011's constant-metric case):

    w' = w - (eps/2) G grad U(w) + sqrt(eps G) xi,      xi ~ N(0, I),

accepted with probability ``min(1, exp(log a))``,

    log a = U(w) - U(w') + log q(w | w') - log q(w' | w),
    log q(b | a) = -|b - a + (eps/2) G grad U(a)|^2_{G^-1} / (2 eps) + const,

which for ``G = 1`` is SPEC section 10's formula. With ``S = grad U(w) + grad U(w')`` it equals
exactly ``U(w) - U(w') - (eps/8) S.G S + (sqrt(eps)/2) xi.(sqrt(G) S)`` (expand the reverse
residual ``(eps/2) G S - sqrt(eps G) xi``); that form, used here (as in
:mod:`grokking_llc.sampling.sgld`'s diagnostics), avoids cancelling two ``|xi|^2 ~ d`` terms, and
the
tests compare it with the two Gaussian proposal densities computed directly.

Preconditioner (``precond``): ``None`` for ``G = 1``, or ``"gn_diag"``:
``G = 1 / (diag(GN) + damping * mean(diag(GN)))`` per parameter tensor, with ``diag(GN)`` the
Gauss-Newton diagonal of the full-batch loss at w*
(:func:`grokking_llc.sampling.sgld.gauss_newton_diagonal`,
``gn_probes`` random probes) and ``damping = gn_damping`` (default 1). ``G`` is fixed for the
whole run, so the chain is an exact MCMC for any ``G``; a tensor whose diagonal is all zero gets
``G = 1``. Under a function-preserving rescaling of the layers ``G`` scales as the squared
parameter scale, so the sampler moves in the rescaled coordinates as it did in the old ones.

Step size: one ``eps`` shared by all chains (so every chain runs the same kernel and R-hat
compares like with like). It starts from a doubling/halving search at w* (Hoffman and Gelman
2014, Algorithm 4: the first ``eps`` at which one proposal's mean acceptance crosses 0.5), then
is adapted during the warm-up only, by dual averaging on ``log eps`` (Hoffman and Gelman 2014,
section 3.2; Nesterov 2009) toward ``target_accept`` (default 0.6, near MALA's asymptotically
optimal 0.574, Roberts and Rosenthal 1998), the statistic being the chains' mean acceptance
probability of each warm-up transition. The dual-averaging state restarts at the middle of the
warm-up from the step reached there, so the early transitions near w* (where acceptance is
atypically high) do not weigh on the final step. After the warm-up ``eps`` is frozen at the
averaged iterate, so the draws are an exact, time-homogeneous MCMC.

Mixing, measured on the known-answer problems (tests/sampling/test_known_answers.py): a singular
posterior is funnel-shaped (for a redundant unit ``|a|^2 |b|^2``: where a is large, b is
stiff), so a fixed ``G`` must take the step of the stiffest arm and a flat direction relaxes to
the prior radius in ~``nbeta / gamma^2`` transitions (times the arm's dimension), while the
localisation's bias falls as that same ratio grows (tests/known_answers.py,
:func:`cross_expected_llc`). At nbeta 1000, gamma 1, 32 chains and 3,000 transitions the
estimates are within 2% of lambda with loss R-hat <= 1.01, but the distance ``|w - w*|`` is
still spreading (its R-hat 1.9-2.5), and the draws' acceptance sits at 0.48-0.54 rather than
0.6 since the chains keep entering stiffer parts of the funnel after the warm-up.

Trace and draws: every chain starts at w*. ``trace[c, t]`` is chain c's full-batch loss after
transition t (``t = 0 .. num_warmup + num_draws - 1``, accepted or not); the first
``num_warmup`` columns are the warm-up (``burn_in="fixed"``, ``num_burnin_steps = num_warmup``)
and the last ``num_draws`` the draws, each produced by the frozen kernel. ``init_loss`` is the
full-batch loss at w*.

Random numbers: ``numpy.random.SeedSequence(seed)`` gives four 64-bit seeds, for (1) the
proposal noise (one ``torch.randn((C, d))`` per transition, parameters flattened in
``named_parameters()`` order), (2) the acceptance uniforms (one ``torch.rand(C)`` in float64 per
transition), (3) the initial step-size search, (4) the Gauss-Newton probes. Each is a
``torch.Generator`` on the sampling device, so the same seed gives the same numbers.

Cost per transition: one forward and one backward pass of the full batch for every chain (a
``torch.func.vmap`` of the forward over the chain axis, then one backward of the summed losses;
the gradient at the current state is carried over from the previous transition), plus a few
passes over the ``C x d`` parameters and one ``C x d`` Gaussian draw: about ``n / batch_size``
SGLD steps of the same chains. ``gn_diag`` adds ``gn_probes`` Jacobian-vector products of the
full batch once, at the start, and the step-size search a few gradient evaluations. Measured
on this kind of machine (one thread, 2 cores shared with other jobs, load ~3.5): the
known-answer problems of the tests (d <= 33, 32 chains) 1.1-1.7 ms a transition, nearly all
torch overhead (4 to 64 chains cost about the same), so 2-4 s an estimate of 1,000-3,000
transitions; the quadratic net at p = 53, K = 256 (d = 40,704), n = 1,124, 4 chains, 24-32 ms a
transition, so ~75-95 s for 1,000 + 2,000, plus 1.4-2.2 s of ``gn_diag`` set-up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, vmap

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PRECONDITIONERS = (None, "gn_diag")

# Dual averaging constants (Hoffman and Gelman 2014, section 3.2: gamma, t0, kappa).
DA_GAMMA = 0.05
DA_T0 = 10.0
DA_KAPPA = 0.75
MAX_SEARCH = 60  # doublings / halvings of the initial step-size search
# estimate_llc_mala's run unless told otherwise (sample_mala has no defaults for these)
ESTIMATE_RUN = {"num_warmup": 1000, "num_draws": 2000, "seed": 0}
# what estimate_llc_mala copies from the samples into its diagnostics (and seconds_per_step)
_RECORDS = ("step_size", "acceptance_rate", "step_sizes", "precond", "seconds", "setup_seconds")


@dataclass
class MalaSamples:
    """What :func:`sample_mala` returns (module docstring).

    ``trace`` (chains, T) float64: full-batch loss after every transition, T = num_warmup +
    num_draws; ``init_loss``: the loss at w*; ``num_params``: d. Per chain and transition
    (chains, T): ``log_accept`` (the log MH ratio, NaN where the proposal was not finite),
    ``accepted`` (bool), ``distance`` ``|w_t - w*|``, ``grad_norm`` ``|nbeta grad L_n(w_t)|``,
    ``loc_norm`` ``|gamma (w_t - w*)|`` (all of the state after transition t). ``step_sizes``
    (T,): the eps of each transition; ``step_size``: the frozen eps of the draws;
    ``precond``: ``G`` flattened like the parameters (d,), float64 (ones without one);
    ``num_warmup``; ``seconds``: wall time of the transitions (setup excluded).
    """

    trace: np.ndarray
    init_loss: float
    num_params: int
    log_accept: np.ndarray
    accepted: np.ndarray
    distance: np.ndarray
    grad_norm: np.ndarray
    loc_norm: np.ndarray
    step_sizes: np.ndarray
    step_size: float
    precond: np.ndarray
    num_warmup: int
    seconds: float = 0.0
    setup_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def acceptance_rate(self) -> float:
        """Fraction of the draws' proposals accepted, all chains together."""
        return float(self.accepted[:, self.num_warmup :].mean())

    @property
    def mean_accept_prob(self) -> float:
        """Mean of ``min(1, exp(log_accept))`` over the draws (NaN counts as 0)."""
        la = self.log_accept[:, self.num_warmup :]
        with np.errstate(over="ignore", invalid="ignore"):
            prob = np.where(np.isfinite(la), np.minimum(1.0, np.exp(np.minimum(la, 0.0))), 0.0)
        return float(prob.mean())


def log_accept_ratio(
    u0: torch.Tensor,
    u1: torch.Tensor,
    g0: torch.Tensor,
    g1: torch.Tensor,
    xi: torch.Tensor,
    eps: float,
    G: torch.Tensor | None = None,
) -> torch.Tensor:
    """The log Metropolis-Hastings ratio of a (preconditioned) MALA proposal (module docstring).

    ``u0``, ``u1`` (C,): U at the current state w and at the proposal w'; ``g0``, ``g1``
    (C, d): grad U there; ``xi`` (C, d): the noise with ``w' = w - (eps/2) G g0 +
    sqrt(eps G) xi``; ``G`` (d,) or None (identity). Returns ``U(w) - U(w') - (eps/8) S.G S +
    (sqrt(eps)/2) xi.(sqrt(G) S)`` with ``S = g0 + g1``, in float64.
    """
    u0, u1, g0, g1, xi = (t.double() for t in (u0, u1, g0, g1, xi))
    s = g0 + g1
    if G is None:
        quad = s.square().sum(dim=1)
        cross = (xi * s).sum(dim=1)
    else:
        G = G.double()
        quad = (s.square() * G).sum(dim=1)
        cross = (xi * G.sqrt() * s).sum(dim=1)
    return (u0 - u1) - eps / 8.0 * quad + 0.5 * math.sqrt(eps) * cross


def _seeds(seed: int) -> list[int]:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(4, dtype=np.uint64)]


def _generator(seed: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


class _Potential:
    """Full-batch loss, U and grad U of C stacked chains, parameters flattened to (C, d)."""

    def __init__(self, model, x, y, loss_fn, *, nbeta, gamma, wd, dtype, device):
        named = list(model.named_parameters())
        if not named:
            raise ValueError("the model has no parameters to sample")
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.d = int(sum(self.sizes))
        self.center = torch.cat([p.detach().reshape(-1) for _, p in named]).to(device, dtype)
        self.nbeta, self.gamma, self.wd = float(nbeta), float(gamma), float(wd)
        buffers = {
            k: (b.to(device, dtype) if b.is_floating_point() else b.to(device))
            for k, b in model.named_buffers()
        }
        self.x = xs = x.to(device, dtype) if x.is_floating_point() else x.to(device)
        self.y = ys = y.to(device, dtype) if y.is_floating_point() else y.to(device)

        def loss_of(theta):
            params, off = {}, 0
            for name, shape, k in zip(self.names, self.shapes, self.sizes, strict=True):
                params[name] = theta[off : off + k].view(shape)
                off += k
            return loss_fn(functional_call(model, (params, buffers), (xs,)), ys)

        self._loss_of = loss_of
        self._losses = vmap(loss_of)

    def __call__(self, theta: torch.Tensor):
        """(loss (C,), U (C,), grad U (C, d)) at the chains' parameters ``theta`` (C, d).

        One vmapped forward over the chain axis and one backward of the summed losses: the
        chains do not interact, so row c of that gradient is chain c's own."""
        with torch.enable_grad():
            leaf = theta.detach().requires_grad_(True)
            loss = self._losses(leaf)
            (g,) = torch.autograd.grad(loss.sum(), leaf)
        loss = loss.detach()
        diff = theta - self.center
        u = self.nbeta * loss + 0.5 * self.gamma * diff.square().sum(dim=1)
        gu = g.mul(self.nbeta).add_(diff, alpha=self.gamma)
        if self.wd:
            u = u + 0.5 * self.wd * theta.square().sum(dim=1)
            gu.add_(theta, alpha=self.wd)
        return loss.detach(), u.detach(), gu.detach()

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        out, off = {}, 0
        for name, shape, k in zip(self.names, self.shapes, self.sizes, strict=True):
            out[name] = vec[off : off + k].view(shape)
            off += k
        return out


def gn_diag_preconditioner(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    damping: float = 1.0,
    num_probes: int = 64,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """``G = 1 / (diag(GN) + damping * mean(diag(GN)))`` per parameter tensor at the model's
    current parameters (module docstring); a tensor with an all-zero diagonal gets ``G = 1``."""
    from grokking_llc.sampling.sgld import gauss_newton_diagonal

    if not damping > 0:
        raise ValueError(f"gn_damping must be > 0, got {damping}")
    params = {name: p.detach() for name, p in model.named_parameters()}
    diag = gauss_newton_diagonal(model, params, x, y, loss_fn, num_probes=num_probes, seed=seed)
    out = {}
    for name, h in diag.items():
        floor = damping * float(h.mean())
        out[name] = (1.0 / (h + floor)) if floor > 0 else torch.ones_like(h)
    return out


def _cast_model(model: torch.nn.Module, dtype: torch.dtype, device) -> torch.nn.Module:
    """The model itself when dtype and device already match, else a converted copy."""
    p0 = next(model.parameters())
    if p0.dtype == dtype and p0.device == torch.device(device):
        return model
    import copy

    return copy.deepcopy(model).to(device=device, dtype=dtype)


def sample_mala(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    nbeta: float,
    localization: float,
    num_warmup: int,
    num_draws: int,
    seed: int,
    num_chains: int = 4,
    weight_decay: float = 0.0,
    precond: str | None = "gn_diag",
    gn_damping: float = 1.0,
    gn_probes: int = 64,
    target_accept: float = 0.6,
    step_size: float | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> MalaSamples:
    """Full-batch MALA chains at the model's current parameters w* (module docstring).

    ``x``, ``y``: the whole training set (one batch). ``num_warmup`` >= 0 transitions adapt
    ``eps`` (none: ``step_size`` must be given and is used throughout); ``num_draws`` >= 1 are
    kept. ``step_size``: the starting eps (None: the search of the module docstring).
    ``dtype``: sampling dtype (None: the model's; float64 makes the MH ratio exact to
    rounding). The model is not modified.
    """
    if precond not in PRECONDITIONERS:
        raise ValueError(f"precond {precond!r}: choose one of {PRECONDITIONERS}")
    if num_warmup < 0 or num_draws < 1:
        raise ValueError(f"need num_warmup >= 0 and num_draws >= 1, got {num_warmup}, {num_draws}")
    if num_chains < 1:
        raise ValueError(f"num_chains must be >= 1, got {num_chains}")
    if not (nbeta > 0 and localization >= 0 and weight_decay >= 0):
        raise ValueError("need nbeta > 0, localization >= 0 and weight_decay >= 0")
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must lie in (0, 1), got {target_accept}")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    if num_warmup == 0 and step_size is None:
        raise ValueError("num_warmup 0 (no adaptation) needs an explicit step_size")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
    start_setup = time.perf_counter()
    device = torch.device(device if device is not None else next(model.parameters()).device)
    dtype = dtype or next(model.parameters()).dtype
    model = _cast_model(model, dtype, device)
    seed_noise, seed_accept, seed_search, seed_probes = _seeds(seed)
    pot = _Potential(model, x, y, loss_fn, nbeta=nbeta, gamma=localization, wd=weight_decay,
                     dtype=dtype, device=device)  # fmt: skip
    d, C = pot.d, int(num_chains)
    if precond == "gn_diag":
        blocks = gn_diag_preconditioner(
            model, pot.x, pot.y, loss_fn, damping=gn_damping,
            num_probes=gn_probes, seed=seed_probes,
        )  # fmt: skip
        G = torch.cat([blocks[name].reshape(-1) for name in pot.names]).to(device, dtype)
    else:
        G = None
    sqrt_G = G.sqrt() if G is not None else None

    theta = pot.center.unsqueeze(0).repeat(C, 1)
    loss, u, gu = pot(theta)
    init_loss = float(loss[0].double())

    def propose(theta, gu, eps, gen):
        xi = torch.randn((C, d), generator=gen, dtype=dtype, device=device)
        drift = gu if G is None else G * gu
        noise = xi if sqrt_G is None else sqrt_G * xi
        return theta - 0.5 * eps * drift + math.sqrt(eps) * noise, xi

    def accept_prob(log_a):
        la = torch.nan_to_num(log_a, nan=-math.inf)
        return torch.exp(torch.clamp(la, max=0.0))

    # initial step size: Hoffman and Gelman 2014, Algorithm 4, on the chains' mean acceptance
    if step_size is None:
        gen_search = _generator(seed_search, device)
        eps = 1.0 / (float(nbeta) + float(localization) + float(weight_decay))
        direction = 0
        for _ in range(MAX_SEARCH):
            prop, xi = propose(theta, gu, eps, gen_search)
            _, u1, g1 = pot(prop)
            mean_a = float(accept_prob(log_accept_ratio(u, u1, gu, g1, xi, eps, G)).mean())
            step = 1 if mean_a > 0.5 else -1
            if direction and step != direction:
                break
            direction = step
            eps = eps * 2.0 if step > 0 else eps / 2.0
    else:
        eps = float(step_size)

    T = int(num_warmup) + int(num_draws)
    gen_noise, gen_accept = _generator(seed_noise, device), _generator(seed_accept, device)
    # per-transition records stay on the device until the end (no host sync per step)
    trace = torch.empty(T, C, dtype=torch.float64, device=device)
    log_acc = torch.empty_like(trace)
    accepted = torch.empty(T, C, dtype=torch.bool, device=device)
    distance = torch.empty_like(trace)
    grad_norm = torch.empty_like(trace)
    steps = np.empty(T, dtype=np.float64)

    # dual averaging state (Hoffman and Gelman 2014, section 3.2), restarted mid warm-up
    def da_start(eps0):
        return {"mu": math.log(10.0 * eps0), "hbar": 0.0, "xbar": 0.0, "m": 0}

    da = da_start(eps)
    restart = num_warmup // 2
    setup_seconds = time.perf_counter() - start_setup
    start = time.perf_counter()
    with torch.no_grad():
        for t in range(T):
            steps[t] = eps
            prop, xi = propose(theta, gu, eps, gen_noise)
            loss1, u1, g1 = pot(prop)
            log_a = log_accept_ratio(u, u1, gu, g1, xi, eps, G)
            draw = torch.rand(C, generator=gen_accept, dtype=torch.float64, device=device)
            take = torch.log(draw) < log_a  # NaN (non-finite proposal) is never accepted
            theta = torch.where(take[:, None], prop, theta)
            loss = torch.where(take, loss1, loss)
            u = torch.where(take, u1, u)
            gu = torch.where(take[:, None], g1, gu)
            diff = theta - pot.center
            trace[t] = loss
            log_acc[t] = log_a
            accepted[t] = take
            distance[t] = torch.linalg.vector_norm(diff.double(), dim=1)
            grad_l = gu - localization * diff - (weight_decay * theta if weight_decay else 0.0)
            grad_norm[t] = torch.linalg.vector_norm(grad_l.double(), dim=1)
            if t < num_warmup:
                if t == restart and restart > 0:
                    da = da_start(math.exp(da["xbar"]))
                da["m"] += 1
                m = da["m"]
                alpha = float(accept_prob(log_a).mean())
                w = 1.0 / (m + DA_T0)
                da["hbar"] = (1.0 - w) * da["hbar"] + w * (target_accept - alpha)
                log_eps = da["mu"] - math.sqrt(m) / DA_GAMMA * da["hbar"]
                eta = m ** (-DA_KAPPA)
                da["xbar"] = eta * log_eps + (1.0 - eta) * da["xbar"]
                eps = math.exp(log_eps) if t + 1 < num_warmup else math.exp(da["xbar"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start

    def host(a):
        return a.T.cpu().numpy().copy()

    dist = host(distance)
    return MalaSamples(
        trace=host(trace),
        init_loss=init_loss,
        num_params=d,
        log_accept=host(log_acc),
        accepted=host(accepted),
        distance=dist,
        grad_norm=host(grad_norm),
        loc_norm=float(localization) * dist,
        step_sizes=steps,
        step_size=float(eps),
        precond=(G.double().cpu().numpy() if G is not None else np.ones(d)),
        num_warmup=int(num_warmup),
        seconds=seconds,
        setup_seconds=setup_seconds,
    )


def estimate_llc_mala(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, **options: Any
):
    """The LLC at the model's current parameters w* by full-batch MALA (module docstring):
    ``nbeta (E[L_n] - L_n(w*))`` over the draws (SPEC section 4), as a
    :class:`grokking_llc.sampling.llc.LLCResult` built by
    :func:`grokking_llc.sampling.llc.llc_from_traces`
    (``burn_in="fixed"``, ``num_burnin_steps = num_warmup``, ``sampler_kind="mala"``), so R-hat,
    ESS, standard error and the other columns are those of every estimate.

    The chains are those of :func:`sample_mala`, and ``options`` its keywords: ``nbeta`` and
    ``localization`` required, the run ``num_warmup``, ``num_draws`` and ``seed`` by default
    those of :data:`ESTIMATE_RUN` (1,000 + 2,000 transitions, seed 0), the others
    (``num_chains``, ``weight_decay``, ``precond``, ...) with its defaults.

    Its ``mala_acceptance`` is the draws' mean MH acceptance probability (near
    ``target_accept`` by design). The step-size check of SPEC section 10 (``step_ok``: the
    discretisation error of an unadjusted step) does not apply to a Metropolis-adjusted chain,
    whose draws are exact for any step size: ``step_ok`` is True and validity is assessed on the
    other checks. ``diagnostics`` also holds ``step_size`` (frozen eps), ``acceptance_rate``
    (fraction accepted in the draws), ``step_sizes`` (eps per transition), ``precond``,
    ``seconds`` and ``seconds_per_step`` (wall time of the transitions, all chains together).
    """
    from grokking_llc.sampling.llc import llc_from_traces, point_checks

    options = ESTIMATE_RUN | options
    s = sample_mala(model, x, y, loss_fn, **options)
    nbeta, localization = options["nbeta"], options["localization"]
    diag = {k: getattr(s, k) for k in ("log_accept", "distance", "grad_norm", "loc_norm")}
    check = point_checks(model, {k: v.detach() for k, v in model.named_parameters()}, x, y,
                         loss_fn)  # fmt: skip
    res = llc_from_traces(
        s.trace, s.init_loss, nbeta, s.num_warmup, burn_in="fixed", localization=localization,
        num_params=s.num_params, diagnostics=diag, sampler_kind="mala", exact=True,
        llc_bound=check.llc_bound, grad_norm=check.grad_norm,
        grad_curvature=check.grad_curvature,
    )  # fmt: skip
    for key in _RECORDS:
        res.diagnostics[key] = getattr(s, key)
    res.diagnostics["seconds_per_step"] = s.seconds / s.trace.shape[1]
    return res
