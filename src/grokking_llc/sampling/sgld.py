"""The "fast" LLC backend: SGLD with all chains (and optionally several checkpoints) batched.

Same sampler as devinterp's ``SGMCMC.sgld`` (SPEC section 4): from ``w_0 = w*``, every step

    w <- w - (eps/2) * [ nbeta * grad L_batch(w) + gamma * (w - w*) + lambda_wd * w ]
           + sqrt(eps) * N(0, I)

with ``eps = cfg.lr``, ``nbeta = cfg.resolved_nbeta``, ``gamma = cfg.localization`` and
``lambda_wd = cfg.weight_decay``. ``trace[c, t]`` is the minibatch loss of chain ``c`` at step
``t`` evaluated *before* the update, i.e. the loss of the forward pass whose gradient the update
uses, which is what devinterp records; ``init_loss`` is the mean minibatch loss at ``w*`` over
``cfg.num_init_loss_batches`` minibatches. The LLC itself (SPEC section 4, burn-in dropped) is
computed from these by :func:`grokking_llc.sampling.llc.llc_from_traces`, shared with the devinterp
backend.

Sampler kinds (:class:`~grokking_llc.core.settings.SamplerConfig` ``kind``; the posterior sampled
is the same, only the proposal differs). With a diagonal preconditioner ``G`` the step is

    w <- w - (eps/2) * G * [ nbeta * grad L_batch(w) + gamma * (w - w*) + lambda_wd * w ]
           + sqrt(eps) * sqrt(G) * N(0, I)

* ``"sgld"``: ``G = 1`` (the update above).
* ``"rmsprop"``: devinterp's ``rmsprop_sgld`` (Li et al. 2016): per chain and parameter,
  ``v <- alpha v + (1 - alpha) g^2`` with ``g = grad L_batch(w)`` (``v_0 = 0``), then
  ``G = 1 / (sqrt(v) + delta)`` (``rmsprop_alpha``, ``rmsprop_eps``; devinterp's defaults 0.99
  and 0.1). No correction term for the varying ``G``, as in devinterp.
* ``"gn_diag"``: ``G = 1 / (diag(GN) + damping * mean(diag(GN)))``, fixed for the whole chain,
  with ``GN = J^T H_f J`` the Gauss-Newton matrix of the full-batch loss at ``w*`` (``J`` the
  Jacobian of the model's outputs on the training inputs, ``H_f`` the loss's Hessian in the
  outputs) and the mean taken per parameter tensor (:func:`gauss_newton_diagonal`). Under a
  function-preserving rescaling ``W -> cW, V -> V/c^2`` the diagonal scales as ``c^-2`` on W and
  ``c^4`` on V, so ``G`` scales as the squared parameter scale and the chain in rescaled
  coordinates is the rescaled chain: the estimate is invariant (SPEC section 10), which SGLD
  and RMSprop-SGLD are not.

The preconditioned kinds take the quadratic path's hand-written gradient for a plain
:class:`grokking_llc.core.model.QuadraticNet` (written into a buffer, then scaled by ``G``) and the
generic gradient (below) otherwise.

Diagnostics (``diag_every > 0``), for SPEC section 10's validity checks: at every
``diag_every``-th step t (t = k - 1, 2k - 1, ...) the sampler evaluates, in float64 and on the
step's own minibatch ``B_t``, the loss and its gradient at ``w_t`` (before the update) and at
``w_{t+1}`` (after it), and records per chain

* ``log_accept``: the log MALA acceptance probability of the step for the minibatch potential
  ``U(w) = nbeta L_{B_t}(w) + (gamma/2)|w - w*|^2 + (lambda_wd/2)|w|^2`` (SPEC section 10's
  formula, with ``lambda_wd`` included since the sampler uses it). With the step's own noise
  ``xi``, ``S = grad U(w_t) + grad U(w_{t+1})`` and ``dU = U(w_t) - U(w_{t+1})``, that formula
  equals ``dU - (eps/8) S.G S + (sqrt(eps)/2) xi.(sqrt(G) S)`` exactly (``G = 1`` for SGLD;
  the reverse move uses the same ``G``, which for RMSprop is the approximation that ``G`` does
  not change within one step), and this form avoids the cancellation of two ``|xi|^2 ~ d``
  terms. Both ends of the step use the same minibatch, so it measures the discretisation
  error of the step, not minibatch noise. It costs two extra gradient evaluations per
  diagnostic step (so ~2/diag_every of the run); the trace and the random numbers are the same
  with diagnostics on or off.
* ``distance``: ``|w_t - w*|``; ``grad_norm``: ``|nbeta grad L_{B_t}(w_t)|``; ``loc_norm``:
  ``|gamma (w_t - w*)|``.

With diagnostics on, ``|w_t - w*|`` is also recorded at every step (``distance_trace``, a
cheap pass over the parameters): its R-hat and plateau catch near-flat directions that relax
slowly although the loss trace looks stationary (:mod:`grokking_llc.sampling.validity`).

Adaptive length (``max_steps`` and ``stop`` of :func:`sample_chains_many`): the batch schedule is
drawn for ``max_steps`` steps up front, the chains run ``cfg.num_steps`` steps, then ``stop`` is
asked per checkpoint whether its trace so far suffices; if not, the run grows by half its
length, up to ``max_steps``. Every stream of random numbers is the one of the fixed-length run
at ``max_steps``, so an adaptive run's output is exactly a prefix of that run's (tested).

Two implementations of the plain SGLD step, chosen by ``_path`` (tests and benchmarks):

* ``"generic"``: any ``nn.Module`` and any ``loss_fn(pred, target) -> scalar mean loss`` that
  ``torch.func`` can transform (no data-dependent Python control flow on parameters). The
  parameters of all chains are stacked along a leading chain axis and, per checkpoint, one call
  of ``torch.func.vmap(torch.func.grad_and_value(...))`` over
  :func:`torch.func.functional_call` gives every chain's loss and gradient at once.
* ``"quadratic"``: :class:`grokking_llc.core.model.QuadraticNet` (gather forward
  ``(W[a] + W[p+b])^2 @ V``) with a hand-written backward batched over chains (``bmm``): the
  gradient of ``W`` is scattered straight into the parameters with ``index_add_`` and that of
  ``V`` with ``baddbmm_``, so no gradient tensor is materialised. The derivative of the loss
  with respect to the prediction is written out for :func:`grokking_llc.core.model.centred_mse` and
  taken with ``vmap(grad)`` for any other loss.

``"auto"`` (the default) takes the quadratic path for a plain ``QuadraticNet`` and the generic one
otherwise. Both paths draw identical random numbers (below), so for the same seed they give the
same trace up to floating-point rounding of the gradient.

Random numbers (every draw comes from a ``torch.Generator`` on ``device``): a checkpoint's
``seed`` is expanded by :class:`numpy.random.SeedSequence` into two 64-bit seeds, one for the
minibatch generator and one for the noise generator.

* Minibatches. Each epoch is a fresh ``randperm`` of the n training rows cut into ``n // m``
  batches of ``m = cfg.batch_size`` rows (the last ``n mod m`` rows of each permutation are
  skipped, like devinterp's ``drop_last=True``), so a step's rows are distinct. All chains of a
  checkpoint see the same sequence of minibatches (devinterp's default
  ``match_sampling_input_ids_across_chains=True``), and the init-loss batches are the first
  ``num_init_loss_batches`` batches of that sequence (as in devinterp). Unlike devinterp's
  default ``epoch_mode="cycle"``, which replays the *first* epoch's shuffle for the whole run
  (so the ``n mod m`` rows left out of it are never seen), every epoch here is reshuffled;
  ``_epoch_mode="cycle"`` (benchmarks) reproduces devinterp's scheme. Where the chains are
  stationary the two agree; where they are not (the paper's sampler at p=53, K=1024, 1000
  training steps: the loss climbs from 0.36 to ~260 over the 600 steps) the schedule shifts
  the LLC by ~1% (4406 +- 4 reshuffled vs 4359 +- 4 cycled, 2 seeds x 16 chains; devinterp
  4348 +- 6, 16 chains; +- SE).
* Noise. Per step, one ``normal_`` call per parameter tensor fills the noise of all chains of
  the checkpoint (shape ``(num_chains, *param.shape)``), parameters in ``named_parameters()``
  order, into a preallocated buffer of the parameters' dtype (float32 here).

Cost (SPEC section 9: at K=1024 a step was gradient 5 ms, noise 4 ms, update 3 ms). All chains'
parameters live in one flat buffer, so the non-gradient part of the update is two fused in-place
passes (``w = decay * w + pull``, ``w += sqrt(eps) * xi``); the quadratic path adds its gradient
in place (``index_add_``, ``baddbmm_``) and reuses preallocated buffers, and the gather is one
``embedding_bag``. CPU noise (mt19937, single-threaded in torch) is then ~1/3 of the step, so
a worker thread draws step t+1's noise while step t's gradient runs (same numbers; see
:func:`sample_chains_many`'s ``_overlap_noise``).

Because each checkpoint owns its generators and every batched operation acts per chain,
:func:`sample_chains_many` on several checkpoints gives the same traces as one call per
checkpoint with the same seeds (bit for bit on CPU; tested).

On CUDA the quadratic path scatters ``W``'s gradient with a one-hot ``baddbmm`` instead of
``index_add_`` (whose atomic adds are not deterministic there). The generic path on CUDA is as
deterministic as the model's own backward ops.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad, grad_and_value, jvp, vjp, vmap

from grokking_llc.core.model import QuadraticNet, centred_mse
from grokking_llc.core.settings import SamplerConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, dict[str, torch.Tensor]], None]
StopFn = Callable[[int, np.ndarray, dict[str, np.ndarray]], bool]

PATHS = ("auto", "generic", "quadratic")
EPOCH_MODES = ("reshuffle", "cycle")
KINDS = ("sgld", "rmsprop", "gn_diag")
GROWTH = 1.5  # an adaptive run grows by this factor between checks


@dataclass
class ChainSamples:
    """What the fast sampler returns for one checkpoint (module docstring).

    ``trace``: float64 (chains, steps run); ``init_loss``: mean minibatch loss at ``w*``;
    ``num_params``: d. Diagnostics (float64, (chains, D), empty when off) at the steps
    ``diag_steps`` (D,): ``log_accept``, ``distance``, ``grad_norm``, ``loc_norm``; and
    ``distance_trace`` (chains, steps run; empty when off): ``|w_t - w*|`` before every step,
    aligned with ``trace`` (one pass over the parameters per step, no gradient).
    """

    trace: np.ndarray
    init_loss: float
    num_params: int
    diag_steps: np.ndarray
    log_accept: np.ndarray
    distance: np.ndarray
    grad_norm: np.ndarray
    loc_norm: np.ndarray
    distance_trace: np.ndarray


def sample_chains_many(
    model: torch.nn.Module,
    states: Sequence[Mapping[str, torch.Tensor]],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    cfg: SamplerConfig,
    *,
    seeds: Sequence[int],
    device: str | torch.device,
    diag_every: int = 0,
    max_steps: int | None = None,
    stop: StopFn | None = None,
    _path: str = "auto",
    _epoch_mode: str = "reshuffle",
    _overlap_noise: bool | str = "auto",
    _on_step: StepCallback | None = None,
) -> list[ChainSamples]:
    """The sampler of ``cfg.kind`` (SPEC section 4; module docstring) at several checkpoints at
    once, stacked along the chain axis, with diagnostics and adaptive length.

    ``states[s]`` maps every name of ``model.named_parameters()`` to that checkpoint's value
    (a ``state_dict`` will do; other keys are ignored, buffers are taken from ``model``);
    checkpoint s is sampled with ``seeds[s]``, and its numbers are those of a call with that
    checkpoint alone (tested). Memory grows linearly with ``len(states) * cfg.num_chains``.

    ``diag_every`` (0: off; else the MALA / distance / force diagnostics of the module docstring
    every that many steps); ``max_steps`` (cap of an adaptive run, >= ``cfg.num_steps``;
    ``None``: ``cfg.num_steps``); ``stop(s, trace, diagnostics)`` (called with checkpoint s's
    trace so far, shape (chains, t), and its diagnostics so far (``steps``, the
    :class:`ChainSamples` arrays and ``init_loss``) after ``cfg.num_steps`` steps and then each
    time the run has grown by a factor 1.5; True ends that checkpoint's chains there). Without
    ``stop`` every chain runs to the cap.

    The arguments with a leading underscore are for tests and benchmarks; none changes a number
    but ``_epoch_mode``:

    * ``_path``: ``"auto"``, ``"generic"`` or ``"quadratic"`` (module docstring).
    * ``_epoch_mode``: ``"reshuffle"`` or ``"cycle"`` (devinterp's minibatch order), see
      :func:`batch_schedule`.
    * ``_overlap_noise``: draw the next step's Gaussian noise in a worker thread while the
      current step's gradient is computed. ``"auto"`` turns it on for CPU when torch's intra-op
      thread count leaves a usable core idle (e.g. ``set_num_threads(1)`` on a 2-core machine)
      and off otherwise, so as not to oversubscribe the cores.
    * ``_on_step(t, params)``: called after the update of step t with the current parameters,
      ``{name: tensor of shape (len(states) * num_chains, *shape)}``, chain c of checkpoint s at
      row ``s * num_chains + c`` (views into the sampler's state: read, don't write).
    """
    path, epoch_mode, overlap_noise, on_step = _path, _epoch_mode, _overlap_noise, _on_step
    if path not in PATHS:
        raise ValueError(f"unknown SGLD path {path!r}; choose one of {PATHS}")
    if len(seeds) != len(states):
        raise ValueError(f"{len(states)} states but {len(seeds)} seeds")
    if not states:
        return []
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
    if cfg.batch_size > len(x):
        raise ValueError(f"sampler batch_size {cfg.batch_size} exceeds the {len(x)} samples")
    if diag_every < 0:
        raise ValueError(f"diag_every must be >= 0, got {diag_every}")
    cap = cfg.num_steps if max_steps is None else int(max_steps)
    if cap < cfg.num_steps:
        raise ValueError(f"max_steps {cap} is below the {cfg.num_steps} steps of one run")
    device = torch.device(device)
    if path == "auto":
        path = "quadratic" if _is_plain_quadratic(model) else "generic"
    elif path == "quadratic" and not _is_plain_quadratic(model):
        raise ValueError("path='quadratic' needs a grokking_llc.core.model.QuadraticNet")

    sampler = _Sampler(
        model, states, x.to(device), y.to(device), loss_fn, cfg, seeds, device, epoch_mode,
        cap, diag_every,
    )  # fmt: skip
    init_losses = sampler.init_losses()
    sampler.quadratic_grads = path == "quadratic"
    if cfg.kind != "sgld":
        step = sampler.precond_step
    else:
        step = sampler.quadratic_step if path == "quadratic" else sampler.generic_step
    trace = torch.empty(cap, sampler.num_rows, dtype=sampler.flat.dtype, device=device)
    dist_trace = torch.empty(cap if diag_every else 0, sampler.num_rows, dtype=torch.float64,
                             device=device)  # fmt: skip
    if overlap_noise == "auto":
        overlap_noise = device.type == "cpu" and torch.get_num_threads() < _usable_cpus()
    if overlap_noise:
        sampler._prefetch = _NoisePrefetcher(sampler, cap)
    S, C = sampler.S, sampler.C
    stopped_at: list[int | None] = [None] * S
    t, boundary = 0, cfg.num_steps if stop is not None else cap
    try:
        with torch.no_grad():
            while True:
                while t < boundary:
                    if diag_every:
                        sampler.distance(dist_trace[t])
                    sampler.advance(t, trace[t], step)
                    if on_step is not None:
                        on_step(t, sampler.params)
                    t += 1
                if stop is None or t >= cap:
                    break
                so_far = trace[:t].T.to(device="cpu", dtype=torch.float64).numpy()
                so_far = so_far.reshape(S, C, t)
                diag = sampler.diagnostics()
                dist_so_far = dist_trace[:t].T.cpu().numpy()
                for s in range(S):
                    rows = slice(s * C, (s + 1) * C)
                    diag_s = {"steps": diag["steps"], "init_loss": init_losses[s],
                              **{k: diag[k][rows] for k in _DIAG_KEYS}}  # fmt: skip
                    if diag_every:
                        diag_s["distance_trace"] = dist_so_far[rows]
                    if stopped_at[s] is None and stop(s, so_far[s], diag_s):
                        stopped_at[s] = t
                if all(v is not None for v in stopped_at):
                    break
                boundary = min(cap, max(t + 1, math.ceil(t * GROWTH)))
    finally:
        if sampler._prefetch is not None:
            sampler._prefetch.close()
    out = trace[:t].T.to(device="cpu", dtype=torch.float64).numpy().reshape(S, C, t)
    dist_out = dist_trace[:t].T.cpu().numpy().reshape(S, C, -1)
    diag = sampler.diagnostics()
    results = []
    for s in range(S):
        used = stopped_at[s] if stopped_at[s] is not None else t
        keep = diag["steps"] < used
        rows = slice(s * C, (s + 1) * C)
        results.append(
            ChainSamples(
                trace=out[s, :, :used].copy(),
                init_loss=init_losses[s],
                num_params=sampler.num_params,
                diag_steps=diag["steps"][keep],
                distance_trace=dist_out[s, :, :used].copy(),
                **{k: diag[k][rows][:, keep].copy() for k in _DIAG_KEYS},
            )
        )
    return results


_DIAG_KEYS = ("log_accept", "distance", "grad_norm", "loc_norm")


def gauss_newton_diagonal(
    model: torch.nn.Module,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    num_probes: int = 64,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Diagonal of the Gauss-Newton matrix ``J^T H_f J`` of the loss on ``(x, y)`` at ``params``.

    ``J`` is the Jacobian of the model's outputs ``f`` on all of ``x``, ``H_f`` the Hessian of
    ``loss_fn(f, y)`` in ``f``. Estimated without forming either: for probes ``u`` with
    independent +-1 entries, ``E[(J^T u) * (J^T H_f u)] = diag(J^T H_f J)`` (since E[u u^T] =
    I), with ``J^T v`` a vector-Jacobian product and ``H_f u`` a Jacobian-vector product of the
    loss's gradient in ``f``. Averaged over ``num_probes`` probes drawn from ``seed``; negative
    entries of the estimate (noise; GN is positive semi-definite for a convex loss) are set to 0.
    Used by the ``gn_diag`` sampler kind (module docstring).
    """
    names = list(params)
    buffers = dict(model.named_buffers())

    def outputs(p):
        return functional_call(model, (p, buffers), (x,))

    with torch.enable_grad():
        pred, pull_back = vjp(outputs, dict(params))
        grad_f = grad(lambda f: loss_fn(f, y))
        gen = torch.Generator(device=pred.device).manual_seed(int(seed))
        acc = {name: torch.zeros_like(params[name]) for name in names}
        for _ in range(num_probes):
            u = torch.randint(0, 2, pred.shape, generator=gen, device=pred.device)
            u = u.to(pred.dtype).mul_(2).sub_(1)
            _, hu = jvp(grad_f, (pred.detach(),), (u,))
            (ju,) = pull_back(u)
            (jhu,) = pull_back(hu)
            for name in names:
                acc[name] += ju[name].detach() * jhu[name].detach()
    return {name: (acc[name] / num_probes).clamp_(min=0.0) for name in names}


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _use_one_hot_scatter(device: torch.device) -> bool:
    """Scatter W's gradient by a one-hot matmul (deterministic) rather than ``index_add_``.

    ``index_add_`` accumulates duplicate rows in index order on CPU but with atomic adds on
    CUDA, whose order varies from run to run.
    """
    return device.type == "cuda"


def _is_plain_quadratic(model: torch.nn.Module) -> bool:
    """A QuadraticNet whose forward is the gather forward of SPEC section 2 (not overridden)."""
    cls = type(model)
    return (
        isinstance(model, QuadraticNet)
        and cls.forward is QuadraticNet.forward
        and cls.hidden is QuadraticNet.hidden
        and {name for name, _ in model.named_parameters()} == {"W", "V"}
    )


def _generators(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """(minibatch generator, noise generator) on ``device``, both derived from ``seed``."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    batch_seed, noise_seed = np.random.SeedSequence(int(seed)).generate_state(2, dtype=np.uint64)
    gen_batch = torch.Generator(device=device)
    gen_batch.manual_seed(int(batch_seed))
    gen_noise = torch.Generator(device=device)
    gen_noise.manual_seed(int(noise_seed))
    return gen_batch, gen_noise


def batch_schedule(
    n: int,
    batch_size: int,
    num_batches: int,
    generator: torch.Generator,
    device: torch.device,
    epoch_mode: str = "reshuffle",
) -> torch.Tensor:
    """Row indices of ``num_batches`` minibatches, shape ``(num_batches, batch_size)``.

    An epoch is a permutation of the n rows cut into ``n // batch_size`` batches (the remainder
    of the permutation is skipped), so the rows of one batch are distinct. ``"reshuffle"``
    draws a fresh permutation every epoch; ``"cycle"`` replays the first epoch's batches, which
    is what devinterp 2.0.1 does by default (``epoch_mode="cycle"``: the same ``n // m``
    batches in the same order for the whole run, the remaining ``n mod m`` rows never seen).
    """
    if epoch_mode not in EPOCH_MODES:
        raise ValueError(f"unknown epoch_mode {epoch_mode!r}; choose one of {EPOCH_MODES}")
    per_epoch = n // batch_size
    epochs = -(-num_batches // per_epoch)
    perms = [
        torch.randperm(n, generator=generator, device=device)[: per_epoch * batch_size]
        for _ in range(epochs if epoch_mode == "reshuffle" else 1)
    ]
    if epoch_mode == "cycle":
        perms = perms * epochs
    return torch.cat(perms).view(-1, batch_size)[:num_batches]


class _Sampler:
    """State of ``S`` checkpoints x ``C`` chains = ``M`` stacked chains (row ``s * C + c``).

    All parameters live in one flat float buffer, parameter-major: for each parameter (in
    ``named_parameters()`` order) a contiguous block of shape ``(M, *shape)``. The linear part of
    the SGLD update (SPEC section 4),

        w <- (1 - (eps/2)(gamma + lambda_wd)) w + (eps/2) gamma w* + sqrt(eps) xi,

    is then two in-place passes over that buffer, and the gradient term
    ``-(eps/2) nbeta grad L_batch(w)`` is added per parameter. Preconditioned kinds keep the
    gradient, ``G`` and ``sqrt(G)`` in buffers of the same layout.
    """

    def __init__(
        self, model, states, x, y, loss_fn, cfg: SamplerConfig, seeds, device, epoch_mode,
        total_steps: int, diag_every: int,
    ):  # fmt: skip
        self.model, self.x, self.y, self.loss_fn, self.cfg = model, x, y, loss_fn, cfg
        self.device = device
        self.S, self.C = len(states), cfg.num_chains
        self.M = self.num_rows = self.S * self.C
        self.B = cfg.batch_size
        self.eps = float(cfg.lr)
        self.nbeta = float(cfg.resolved_nbeta)
        self.gamma = float(cfg.localization)
        self.wd = float(cfg.weight_decay)
        self.diag_every = int(diag_every)

        named = list(model.named_parameters())
        self.names = [name for name, _ in named]
        dtype = named[0][1].dtype
        if any(p.dtype != dtype for _, p in named):
            raise ValueError("all parameters must share one dtype")
        missing = [name for name in self.names if any(name not in st for st in states)]
        if missing:
            raise ValueError(f"states lack parameter(s) {missing}")
        self.buffers = {name: b.to(device) for name, b in model.named_buffers()}

        # w*, one row per checkpoint: {name: (S, *shape)}.
        self.center = {
            name: torch.stack([st[name].detach().to(device, dtype) for st in states])
            for name in self.names
        }
        numel = [self.center[name][0].numel() for name in self.names]
        self.num_params = int(sum(numel))
        self.layout = []  # (name, offset, numel, shape)
        offset = 0
        for name, k in zip(self.names, numel, strict=True):
            self.layout.append((name, offset, k, self.center[name].shape[1:]))
            offset += self.M * k
        self.flat = torch.empty(offset, dtype=dtype, device=device)
        self.noise = [torch.empty_like(self.flat) for _ in range(2)]
        self.params = self.views(self.flat)
        self._noise_blocks = [[[] for _ in range(self.S)] for _ in self.noise]
        self._prefetch = None
        for name, block in self.params.items():
            shape = block.shape[1:]
            block.view(self.S, self.C, *shape).copy_(self.center[name].unsqueeze(1))
        for buf, noise in enumerate(self.noise):
            for block in self.views(noise).values():
                per_s = block.view(self.S, self.C, *block.shape[1:])
                for s in range(self.S):
                    self._noise_blocks[buf][s].append(per_s[s])
        self.center_flat = self.flat.clone()  # w* of every chain, laid out like ``flat``
        # (eps/2) * gamma * w*, laid out like ``flat`` (SPEC section 4 localisation term).
        self.pull = self.flat.mul(0.5 * self.eps * self.gamma)
        self.decay = 1.0 - 0.5 * self.eps * (self.gamma + self.wd)

        gens = [_generators(seed, device) for seed in seeds]
        self.gen_noise = [g for _, g in gens]
        num_batches = max(total_steps, cfg.num_init_loss_batches)
        # (S, num_batches, B) row indices into x, y.
        self.schedule = torch.stack(
            [batch_schedule(len(x), self.B, num_batches, g, device, epoch_mode) for g, _ in gens]
        )
        self.G = self.sqrt_G = None
        if cfg.kind != "sgld":
            self._setup_preconditioner()
        self._keep_noise, self._noise_copy = False, None
        self._diff = None
        self._quadratic64 = _is_plain_quadratic(model) and loss_fn is centred_mse
        self.quadratic_grads = False  # set by sample_chains_many on the quadratic path
        self._diag: dict[str, list] = {"steps": [], **{k: [] for k in _DIAG_KEYS}}

    def views(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: (M, *shape)}`` views of a buffer laid out like ``flat``."""
        return {
            name: buf[off : off + self.M * k].view(self.M, *shape)
            for name, off, k, shape in self.layout
        }

    # ---------------------------------------------------------------- shared pieces

    def _loss_at(self, params, xb, yb):
        return self.loss_fn(functional_call(self.model, (params, self.buffers), (xb,)), yb)

    def init_losses(self) -> list[float]:
        """Mean minibatch loss at w* over the first ``num_init_loss_batches`` batches."""
        out = []
        with torch.no_grad():
            for s in range(self.S):
                params = {name: self.center[name][s] for name in self.names}
                losses = [
                    self._loss_at(params, self.x[rows], self.y[rows])
                    for rows in self.schedule[s, : self.cfg.num_init_loss_batches]
                ]
                out.append(float(torch.stack(losses).double().mean()))
        return out

    def fill_noise(self, buf: int) -> None:
        """Draw one step's N(0, I) noise of every chain into noise buffer ``buf``."""
        for s, gen in enumerate(self.gen_noise):
            for block in self._noise_blocks[buf][s]:
                block.normal_(generator=gen)

    def next_noise(self) -> torch.Tensor:
        if self._prefetch is None:
            self.fill_noise(0)
            return self.noise[0]
        return self._prefetch.get()

    def _release(self, noise: torch.Tensor) -> None:
        if self._keep_noise:
            self._noise_copy = noise.clone()
        if self._prefetch is not None:
            self._prefetch.release(noise)

    def _langevin_linear_part(self) -> None:
        """``w <- decay * w + (eps/2) gamma w* + sqrt(eps) xi`` in place (SPEC section 4)."""
        noise = self.next_noise()
        if self.decay != 1.0:
            torch.add(self.pull, self.flat, alpha=self.decay, out=self.flat)
        self.flat.add_(noise, alpha=math.sqrt(self.eps))
        self._release(noise)

    def _chains(self, s: int) -> slice:
        """Rows of checkpoint s's chains in the stacked state."""
        return slice(s * self.C, (s + 1) * self.C)

    def advance(self, t: int, loss_out: torch.Tensor, step) -> None:
        """Step t, with the diagnostics of the module docstring when t is a diagnostic step."""
        diag = self.diag_every > 0 and (t + 1) % self.diag_every == 0
        if diag:
            before = self._evaluate64(t)
            self._keep_noise = True
        step(t, loss_out)
        if diag:
            self._keep_noise = False
            self._record(t, before, self._evaluate64(t))

    # ---------------------------------------------------------------- diagnostics

    def _evaluate64(self, t: int):
        """Current parameters (float64), their loss and gradient on minibatch ``B_t``."""
        if not hasattr(self, "_center64"):
            self._center64 = {k: v.double() for k, v in self.views(self.center_flat).items()}
        if self._quadratic64:
            return self._evaluate64_quadratic(t)
        if not hasattr(self, "_grad_fn64"):
            self._x64 = self.x.double() if self.x.is_floating_point() else self.x
            self._y64 = self.y.double() if self.y.is_floating_point() else self.y
            buffers64 = {
                k: b.double() if b.is_floating_point() else b for k, b in self.buffers.items()
            }

            def loss64(params, xb, yb):
                return self.loss_fn(functional_call(self.model, (params, buffers64), (xb,)), yb)

            self._grad_fn64 = vmap(grad_and_value(loss64), in_dims=(0, None, None))
        w = {name: p.double() for name, p in self.params.items()}
        losses = torch.empty(self.M, dtype=torch.float64, device=self.device)
        grads = {name: torch.empty_like(v) for name, v in w.items()}
        for s in range(self.S):
            rows, chains = self.schedule[s, t], self._chains(s)
            with torch.enable_grad():
                g, loss = self._grad_fn64(
                    {name: w[name][chains] for name in self.names},
                    self._x64[rows],
                    self._y64[rows],
                )
            losses[chains] = loss
            for name in self.names:
                grads[name][chains] = g[name]
        return w, losses, grads

    def _evaluate64_quadratic(self, t: int):
        """:meth:`_evaluate64` for a plain QuadraticNet with the centred loss, written out in
        float64 and batched over all chains (SPEC sections 2 and 4): ``h = W[a] + W[p+b]``,
        ``pred = h^2 @ V``, ``r = P(Y - pred)``, ``L = |r|^2 / 2m``; with ``G = -r / m``,
        ``dL/dV = (h^2)^T G`` and ``dL/dW[row] = sum of 2 h * (G V^T)`` over the batch rows
        that use the row. Same values as the ``vmap(grad)`` path to float64 rounding (tested),
        several times cheaper, so diagnostics stay a small part of a run."""
        p, M, C, B = self.model.p, self.M, self.C, self.B
        W = self.params["W"].double()  # (M, 2p, K)
        V = self.params["V"].double()  # (M, K, p)
        K = W.shape[-1]
        W_rows = W.view(M * 2 * p, K)
        sched = self.schedule[:, t]  # (S, B)
        # chain m's copy of W starts at row m * 2p of the stacked rows
        base = (torch.arange(M, device=self.device) * (2 * p)).view(M, 1)
        rows_a = (base + self.x[sched, 0].repeat_interleave(C, dim=0)).reshape(-1)  # (M * B,)
        rows_b = (base + p + self.x[sched, 1].repeat_interleave(C, dim=0)).reshape(-1)
        h = (W_rows.index_select(0, rows_a) + W_rows.index_select(0, rows_b)).view(M, B, K)
        h2 = h * h
        pred = torch.bmm(h2, V)  # (M, B, p)
        y1h = torch.nn.functional.one_hot(self.y[sched], p).to(torch.float64)
        resid = y1h.repeat_interleave(C, dim=0) - pred
        resid = resid - resid.mean(dim=1, keepdim=True)  # P(Y - pred), centred per chain
        loss = resid.square().sum(dim=(1, 2)) * (0.5 / B)
        g_pred = resid.mul(-1.0 / B)
        g_v = torch.bmm(h2.transpose(1, 2), g_pred)
        dh = torch.bmm(g_pred, V.transpose(1, 2)).mul_(h).mul_(2.0).view(M * B, K)
        g_w = torch.zeros_like(W)
        g_w_rows = g_w.view(M * 2 * p, K)
        g_w_rows.index_add_(0, rows_a, dh)
        g_w_rows.index_add_(0, rows_b, dh)
        return {"W": W, "V": V}, loss, {"W": g_w, "V": g_v}

    def _record(self, t: int, before, after) -> None:
        """Per-chain log MALA acceptance, distance and force norms of step t (docstring)."""
        (w0, loss0, g0), (w1, loss1, g1) = before, after
        M, eps, nbeta, gamma, wd = self.M, self.eps, self.nbeta, self.gamma, self.wd

        def sq(a):
            return torch.linalg.vector_norm(a.reshape(M, -1), dim=1).square()

        def dot(a, b):
            return torch.linalg.vecdot(a.reshape(M, -1), b.reshape(M, -1))

        xi = self.views(self._noise_copy.double())
        G = self.views(self.G.double()) if self.G is not None else None
        dist0 = torch.zeros(M, dtype=torch.float64, device=self.device)
        dist1, norm0, norm1, gsq = dist0.clone(), dist0.clone(), dist0.clone(), dist0.clone()
        cross, quad = dist0.clone(), dist0.clone()
        for name in self.names:
            c = self._center64[name]
            d0, d1 = w0[name] - c, w1[name] - c
            dist0 += sq(d0)
            dist1 += sq(d1)
            norm0 += sq(w0[name])
            norm1 += sq(w1[name])
            gsq += sq(g0[name])
            # S = grad U(w_t) + grad U(w_{t+1}), U = nbeta L_B + gamma/2 |w - w*|^2 + wd/2 |w|^2
            s_sum = torch.add(g0[name], g1[name]).mul_(nbeta)
            s_sum.add_(d0, alpha=gamma).add_(d1, alpha=gamma)
            if wd:
                s_sum.add_(w0[name], alpha=wd).add_(w1[name], alpha=wd)
            if G is None:
                cross += dot(xi[name], s_sum)
                quad += sq(s_sum)
            else:
                cross += dot(xi[name], G[name].sqrt() * s_sum)
                quad += dot(s_sum, G[name] * s_sum)
        d_u = nbeta * (loss0 - loss1) + 0.5 * gamma * (dist0 - dist1) + 0.5 * wd * (norm0 - norm1)
        log_accept = d_u - eps / 8.0 * quad + 0.5 * math.sqrt(eps) * cross
        d = self._diag
        d["steps"].append(t)
        d["log_accept"].append(log_accept.cpu())
        d["distance"].append(dist0.sqrt().cpu())
        d["grad_norm"].append(nbeta * gsq.sqrt().cpu())
        d["loc_norm"].append(gamma * dist0.sqrt().cpu())

    def distance(self, out: torch.Tensor) -> None:
        """``|w - w*|`` of every chain into ``out`` (M,), float64 (per-tensor norms in the
        parameters' dtype, combined in float64: one pass, no float64 copy of the state)."""
        if self._diff is None:
            self._diff = torch.empty_like(self.flat)
        torch.sub(self.flat, self.center_flat, out=self._diff)
        total = torch.zeros(self.M, dtype=torch.float64, device=self.device)
        for block in self.views(self._diff).values():
            total += torch.linalg.vector_norm(block.reshape(self.M, -1), dim=1).double().square()
        out.copy_(total.sqrt_())

    def diagnostics(self) -> dict[str, np.ndarray]:
        """Recorded diagnostics: ``steps`` (D,) and each of ``_DIAG_KEYS`` as (M, D)."""
        out = {"steps": np.asarray(self._diag["steps"], dtype=np.int64)}
        for k in _DIAG_KEYS:
            rows = self._diag[k]
            out[k] = torch.stack(rows, dim=1).numpy() if rows else np.zeros((self.M, 0), np.float64)
        return out

    # ---------------------------------------------------------------- generic path

    def _grad_values(self, t: int, loss_out: torch.Tensor):
        """Every chain's loss (into ``loss_out``) and gradient on minibatch t (vmap(grad))."""
        if not hasattr(self, "_grad_fn"):
            self._grad_fn = vmap(grad_and_value(self._loss_at), in_dims=(0, None, None))
        grads = {name: [] for name in self.names}
        for s in range(self.S):
            rows = self.schedule[s, t]
            chains = self._chains(s)
            params = {name: self.params[name][chains] for name in self.names}
            with torch.enable_grad():
                g, loss = self._grad_fn(params, self.x[rows], self.y[rows])
            loss_out[chains] = loss
            for name in self.names:
                grads[name].append(g[name])
        return grads

    def generic_step(self, t: int, loss_out: torch.Tensor) -> None:
        """One SGLD step for any model: vmap(grad) over the chains (SPEC section 4).

        One vmap call per checkpoint, over its chains, with that checkpoint's minibatch shared
        (not batched: some losses, e.g. ``F.one_hot`` targets, cannot be vmapped over data).
        """
        grads = self._grad_values(t, loss_out)
        self._langevin_linear_part()
        for name in self.names:
            torch._foreach_add_(
                [self.params[name][self._chains(s)] for s in range(self.S)],
                grads[name],
                alpha=-0.5 * self.eps * self.nbeta,
            )

    # ---------------------------------------------------------------- preconditioned kinds

    def _setup_preconditioner(self) -> None:
        """Buffers of the preconditioned kinds; ``G`` at w* for ``gn_diag`` (module docstring)."""
        self.grad_flat = torch.empty_like(self.flat)
        self.grad_blocks = self.views(self.grad_flat)
        self.G = torch.ones_like(self.flat)
        self.sqrt_G = torch.ones_like(self.flat)
        if self.cfg.kind == "rmsprop":
            self.square_avg = torch.zeros_like(self.flat)
            return
        blocks = self.views(self.G)
        for s in range(self.S):
            diag = gauss_newton_diagonal(
                self.model, {name: self.center[name][s] for name in self.names}, self.x,
                self.y, self.loss_fn, num_probes=self.cfg.gn_probes, seed=s,
            )  # fmt: skip
            for name in self.names:
                h = diag[name]
                floor = self.cfg.gn_damping * float(h.mean())
                if not floor > 0:  # a tensor the loss does not see: unit scale
                    floor = 1.0
                blocks[name][self._chains(s)] = (1.0 / (h + floor)).unsqueeze(0)
        torch.sqrt(self.G, out=self.sqrt_G)

    def precond_step(self, t: int, loss_out: torch.Tensor) -> None:
        """One preconditioned step: ``w -= (eps/2) G drift; w += sqrt(eps G) xi`` (docstring).
        The minibatch gradient comes from the quadratic path's hand-written backward when the
        sampler runs on it (``quadratic_grads``), else from ``vmap(grad)``."""
        if self.quadratic_grads:
            self._quadratic_gradient(t, loss_out)
        else:
            grads = self._grad_values(t, loss_out)
            for name in self.names:
                for s in range(self.S):
                    self.grad_blocks[name][self._chains(s)].copy_(grads[name][s])
        g = self.grad_flat
        if self.cfg.kind == "rmsprop":
            alpha = self.cfg.rmsprop_alpha
            self.square_avg.mul_(alpha).addcmul_(g, g, value=1.0 - alpha)
            torch.sqrt(self.square_avg, out=self.G)
            self.G.add_(self.cfg.rmsprop_eps).reciprocal_()
            torch.sqrt(self.G, out=self.sqrt_G)
        # drift = nbeta g + gamma (w - w*) + wd w, in place of g
        g.mul_(self.nbeta).add_(self.flat, alpha=self.gamma + self.wd)
        g.sub_(self.center_flat, alpha=self.gamma)
        noise = self.next_noise()
        self.flat.addcmul_(self.G, g, value=-0.5 * self.eps)
        self.flat.addcmul_(self.sqrt_G, noise, value=math.sqrt(self.eps))
        self._release(noise)

    # ---------------------------------------------------------------- quadratic path

    def _setup_quadratic(self) -> None:
        model: QuadraticNet = self.model
        p, K, M, B, S, C = model.p, model.width, self.M, self.B, self.S, self.C
        dev, dtype = self.device, self.flat.dtype
        # Chain m's copy of W starts at row m * 2p of the (M * 2p, K) stacked W.
        self._base = (torch.arange(M, device=dev) * (2 * p)).view(S, C, 1)
        self._W = self.params["W"]  # (M, 2p, K)
        self._V = self.params["V"]  # (M, K, p)
        self._W_rows = self._W.view(M * 2 * p, K)
        self._h2 = torch.empty(M * B, K, dtype=dtype, device=dev)
        self._dh = torch.empty(M, B, K, dtype=dtype, device=dev)
        self._pred = torch.empty(M, B, p, dtype=dtype, device=dev)
        self._centred = self.loss_fn is centred_mse
        if self._centred:
            self._onehot = torch.nn.functional.one_hot(self.y, p).to(dtype)
            self._resid = torch.empty(S, C, B, p, dtype=dtype, device=dev)
        else:
            self._dpred_fn = vmap(grad_and_value(self.loss_fn), in_dims=(0, None))
        self._one_hot_scatter = _use_one_hot_scatter(dev)
        if self._one_hot_scatter:
            self._xt = torch.zeros(S, 2 * p, B, dtype=dtype, device=dev)

    def _quadratic_backward(self, t: int, loss_out: torch.Tensor):
        """Forward and the shared part of the backward of a plain QuadraticNet at step t (SPEC
        sections 2 and 4), every chain's minibatch loss written into ``loss_out``.

        Forward: ``h = W[a] + W[p+b]``, ``pred = h^2 @ V``. With ``G = dL/dpred``,
        ``dL/dV = (h^2)^T G`` and ``dL/dW[r] = sum over batch rows i that use row r of
        2 h_i * (G V^T)_i``. For the centred loss ``L = (1/2m) ||P(Y - pred)||_F^2`` (centring P
        over the m batch rows, SPEC section 2), ``G = -P(Y - pred) / m``. Returns ``(h2,
        grad_pred, dh, rows_a, rows_b, scale)``: ``h^2``, ``grad_pred`` with ``G = scale *
        grad_pred`` (``scale = -1/m`` for the centred loss, which keeps ``P(Y - pred)``, else
        1), ``dh = h * (grad_pred V^T)`` (``dL/dh / 2`` up to ``scale``, with the current V) and
        the stacked rows of W the step hits (:meth:`_stacked_rows`).
        """
        if not hasattr(self, "_W"):
            self._setup_quadratic()
        M, B, S, C = self.M, self.B, self.S, self.C
        V, h2 = self._V, self._h2
        rows_a, rows_b, rows_ab = self._stacked_rows(t)
        # h = W[a] + W[p + b] for every chain: one gather-and-sum over the stacked rows.
        h = torch.nn.functional.embedding_bag(rows_ab, self._W_rows, mode="sum")
        torch.mul(h, h, out=h2)
        pred = torch.bmm(h2.view(M, B, -1), V, out=self._pred)  # (M, B, p)
        if self._centred:
            # resid = P(Y - pred); loss = |resid|^2 / 2m; G = -resid / m.
            resid = self._resid
            yb = self._onehot[self.schedule[:, t]].unsqueeze(1)  # (S, 1, B, p)
            torch.sub(yb, pred.view(S, C, B, -1), out=resid)
            resid.sub_(resid.mean(dim=2, keepdim=True))
            loss_out.copy_(resid.square().sum(dim=(2, 3)).view(M).mul_(0.5 / B))
            grad_pred, scale = resid.view(M, B, -1), -1.0 / B
        else:
            grad_pred, scale = torch.empty_like(pred), 1.0
            for s in range(S):
                chains = self._chains(s)
                with torch.enable_grad():
                    g, loss = self._dpred_fn(pred[chains], self.y[self.schedule[s, t]])
                grad_pred[chains], loss_out[chains] = g, loss
        dh = torch.bmm(grad_pred, V.transpose(1, 2), out=self._dh)  # G V^T
        dh.mul_(h.view(M, B, -1))  # dL/dh / 2
        return h2, grad_pred, dh, rows_a, rows_b, scale

    def _add_w_gradient(self, out, t, dh, rows_a, rows_b, alpha: float) -> None:
        """``out += alpha * scatter(dh)`` for ``out`` (M, 2p, K) shaped like the stacked W: row
        ``a`` and row ``p + b`` of chain m's block get ``dh`` of every batch row (a, b)."""
        M, B, S, C = self.M, self.B, self.S, self.C
        if self._one_hot_scatter:
            xt = self._xt.zero_()
            rows = self.schedule[:, t]
            xt.scatter_(1, self.x[rows, 0].unsqueeze(1), 1.0)
            xt.scatter_(1, (self.x[rows, 1] + self.model.p).unsqueeze(1), 1.0)
            xt_m = xt.unsqueeze(1).expand(S, C, *xt.shape[1:]).reshape(M, *xt.shape[1:])
            out.baddbmm_(xt_m, dh, alpha=alpha)
        else:
            out_rows = out.view(M * 2 * self.model.p, -1)
            dh_rows = dh.view(M * B, -1)
            out_rows.index_add_(0, rows_a, dh_rows, alpha=alpha)
            out_rows.index_add_(0, rows_b, dh_rows, alpha=alpha)

    def _quadratic_gradient(self, t: int, loss_out: torch.Tensor) -> None:
        """Every chain's minibatch loss (into ``loss_out``) and gradient (into
        ``grad_blocks``) for a plain QuadraticNet: the backward of :meth:`quadratic_step`
        written into a buffer instead of into the parameters (SPEC sections 2 and 4),
        ``dL/dV = (h^2)^T G`` and ``dL/dW[r] = sum_i 2 h_i * (G V^T)_i`` over the batch rows
        i that use row r, with ``G = dL/dpred`` (``-P(Y - pred) / m`` for the centred loss)."""
        h2, grad_pred, dh, rows_a, rows_b, scale = self._quadratic_backward(t, loss_out)
        g_w, g_v = self.grad_blocks["W"], self.grad_blocks["V"]
        g_w.zero_()
        self._add_w_gradient(g_w, t, dh, rows_a, rows_b, 2.0 * scale)
        torch.bmm(h2.view(self.M, self.B, -1).transpose(1, 2), grad_pred, out=g_v)
        if scale != 1.0:
            g_v.mul_(scale)

    def _stacked_rows(self, t: int):
        """Rows of the stacked W hit by step t: chain m's copy of W[a] and W[p + b]."""
        sched = self.schedule[:, t]  # (S, B)
        a = self.x[sched, 0].unsqueeze(1)  # (S, 1, B)
        b = (self.x[sched, 1] + self.model.p).unsqueeze(1)
        rows_a = (self._base + a).reshape(-1)  # (M * B,)
        rows_b = (self._base + b).reshape(-1)
        return rows_a, rows_b, torch.stack([rows_a, rows_b], dim=1)

    def quadratic_step(self, t: int, loss_out: torch.Tensor) -> None:
        """One SGLD step of QuadraticNet with the hand-written backward (SPEC sections 2, 4):
        the gradient of :meth:`_quadratic_backward` (taken at the old W and V), then the
        Langevin linear part, then the gradient terms added straight into the parameters.
        """
        h2, grad_pred, dh, rows_a, rows_b, scale = self._quadratic_backward(t, loss_out)
        # -(eps/2) nbeta, SPEC section 4; the centred loss's G = -resid / m folded in (scale).
        coef = -0.5 * self.eps * self.nbeta
        if scale != 1.0:
            coef = coef * scale
        self._langevin_linear_part()
        # Gradient terms: W gets coef * 2 * scatter(h * G V^T), V gets coef * (h^2)^T G.
        self._add_w_gradient(self._W, t, dh, rows_a, rows_b, 2.0 * coef)
        self._V.baddbmm_(h2.view(self.M, self.B, -1).transpose(1, 2), grad_pred, alpha=coef)


class _NoisePrefetcher:
    """Draws step t+1's noise in a worker thread while the main thread computes step t.

    Gaussian noise is a third of a CPU step (SPEC section 9) and independent of the state, so
    it overlaps with the gradient on a second core. Two buffers circulate: the worker fills a
    free one and queues it as ready; the main thread takes ready buffers in order and hands each
    back once used. Only the worker touches the noise generators, in step order, so the numbers
    are exactly those of the synchronous path.
    """

    def __init__(self, sampler: _Sampler, num_steps: int):
        self._free: queue.Queue = queue.Queue()
        self._ready: queue.Queue = queue.Queue()
        self._index = {id(buf): i for i, buf in enumerate(sampler.noise)}
        for buf in sampler.noise:
            self._free.put(buf)
        self._thread = threading.Thread(
            target=self._work, args=(sampler, num_steps), name="sgld-noise", daemon=True
        )
        self._thread.start()

    def _work(self, sampler: _Sampler, num_steps: int) -> None:
        try:
            with torch.no_grad():
                for _ in range(num_steps):
                    buf = self._free.get()
                    if buf is None:
                        return
                    sampler.fill_noise(self._index[id(buf)])
                    self._ready.put(buf)
        except BaseException as err:  # handed to the main thread
            self._ready.put(err)

    def get(self) -> torch.Tensor:
        item = self._ready.get()
        if isinstance(item, BaseException):
            raise RuntimeError("SGLD noise thread failed") from item
        return item

    def release(self, buf: torch.Tensor) -> None:
        self._free.put(buf)

    def close(self) -> None:
        self._free.put(None)
        self._thread.join()
