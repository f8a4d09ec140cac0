"""The "fast" LLC backend: SGLD with all chains (and optionally several checkpoints) batched.

Same sampler as devinterp's ``SGMCMC.sgld`` (SPEC section 4): from ``w_0 = w*``, every step

    w <- w - (eps/2) * [ nbeta * grad L_batch(w) + gamma * (w - w*) + lambda_wd * w ]
           + sqrt(eps) * N(0, I)

with ``eps = cfg.lr``, ``nbeta = cfg.resolved_nbeta``, ``gamma = cfg.localization`` and
``lambda_wd = cfg.weight_decay``. ``trace[c, t]`` is the minibatch loss of chain ``c`` at step
``t`` evaluated *before* the update, i.e. the loss of the forward pass whose gradient the update
uses, which is what devinterp records; ``init_loss`` is the mean minibatch loss at ``w*`` over
``cfg.num_init_loss_batches`` minibatches. The LLC itself (SPEC section 4, burn-in dropped) is
computed from these by :func:`grokking_llc.llc.llc_from_traces`, shared with the devinterp backend.

Two implementations of the step, chosen by ``path``:

* ``"generic"``: any ``nn.Module`` and any ``loss_fn(pred, target) -> scalar mean loss`` that
  ``torch.func`` can transform (no data-dependent Python control flow on parameters). The
  parameters of all chains are stacked along a leading chain axis and, per checkpoint, one call
  of ``torch.func.vmap(torch.func.grad_and_value(...))`` over
  :func:`torch.func.functional_call` gives every chain's loss and gradient at once.
* ``"quadratic"``: :class:`grokking_llc.model.QuadraticNet` (gather forward
  ``(W[a] + W[p+b])^2 @ V``) with a hand-written backward batched over chains (``bmm``): the
  gradient of ``W`` is scattered straight into the parameters with ``index_add_`` and that of
  ``V`` with ``baddbmm_``, so no gradient tensor is materialised. The derivative of the loss
  with respect to the prediction is written out for :func:`grokking_llc.model.centred_mse` and
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
  ``epoch_mode="cycle"`` reproduces devinterp's scheme. Where the chains are stationary the two
  agree; where they are not (the paper's sampler at p=53, K=1024, 1000 training steps: the loss
  climbs from 0.36 to ~260 over the 600 steps) the schedule shifts the LLC by ~1% (4406 +- 4
  reshuffled vs 4359 +- 4 cycled, 2 seeds x 16 chains; devinterp 4348 +- 6, 16 chains; +- SE).
* Noise. Per step, one ``normal_`` call per parameter tensor fills the noise of all chains of
  the checkpoint (shape ``(num_chains, *param.shape)``), parameters in ``named_parameters()``
  order, into a preallocated buffer of the parameters' dtype (float32 here).

Cost (SPEC section 9: at K=1024 a step was gradient 5 ms, noise 4 ms, update 3 ms). All chains'
parameters live in one flat buffer, so the non-gradient part of the update is two fused in-place
passes (``w = decay * w + pull``, ``w += sqrt(eps) * xi``); the quadratic path adds its gradient
in place (``index_add_``, ``baddbmm_``) and reuses preallocated buffers, and the gather is one
``embedding_bag``. CPU noise (mt19937, single-threaded in torch) is then ~1/3 of the step, so
with ``overlap_noise`` a worker thread draws step t+1's noise while step t's gradient runs (same
numbers; see :func:`sample_loss_traces_many`).

Because each checkpoint owns its generators and every batched operation acts per chain,
:func:`sample_loss_traces_many` on several checkpoints gives the same traces as one
:func:`sample_loss_traces` call per checkpoint with the same seeds (bit for bit on CPU; tested).

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
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

from grokking_llc.config import SamplerConfig
from grokking_llc.model import QuadraticNet, centred_mse

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, dict[str, torch.Tensor]], None]

PATHS = ("auto", "generic", "quadratic")
EPOCH_MODES = ("reshuffle", "cycle")


def sample_loss_traces(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    cfg: SamplerConfig,
    *,
    seed: int,
    device: str | torch.device,
    path: str = "auto",
    overlap_noise: bool | str = "auto",
    epoch_mode: str = "reshuffle",
) -> tuple[np.ndarray, float]:
    """SGLD at the model's current parameters ``w*`` (SPEC section 4).

    Returns the loss traces, float64 of shape ``(num_chains, num_burnin_steps + num_draws)``
    (``trace[c, t]`` = chain c's minibatch loss before update t), and the init loss at ``w*``.
    The model is not modified. ``path``, ``overlap_noise`` and ``epoch_mode`` as in
    :func:`sample_loss_traces_many`.
    """
    state = {name: p.detach() for name, p in model.named_parameters()}
    [(trace, init_loss)] = sample_loss_traces_many(
        model, [state], x, y, loss_fn, cfg, seeds=[seed], device=device, path=path,
        overlap_noise=overlap_noise, epoch_mode=epoch_mode,
    )  # fmt: skip
    return trace, init_loss


def sample_loss_traces_many(
    model: torch.nn.Module,
    states: Sequence[Mapping[str, torch.Tensor]],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    cfg: SamplerConfig | Mapping[str, Any],
    *,
    seeds: Sequence[int],
    device: str | torch.device,
    path: str = "auto",
    on_step: StepCallback | None = None,
    overlap_noise: bool | str = "auto",
    epoch_mode: str = "reshuffle",
) -> list[tuple[np.ndarray, float]]:
    """SGLD (SPEC section 4) at several checkpoints at once, stacked along the chain axis.

    ``states[s]`` maps every name of ``model.named_parameters()`` to that checkpoint's value
    (a ``state_dict`` will do; other keys are ignored, buffers are taken from ``model``);
    checkpoint s is sampled with ``seeds[s]``. Returns one ``(trace, init_loss)`` per checkpoint,
    the same as :func:`sample_loss_traces` with that seed. Memory grows linearly with
    ``len(states) * cfg.num_chains``.

    ``path``: ``"auto"``, ``"generic"`` or ``"quadratic"`` (see the module docstring).

    ``on_step(t, params)``, if given, is called after the update of step t with the current
    parameters: ``{name: tensor of shape (len(states) * num_chains, *shape)}``, chain c of
    checkpoint s at row ``s * num_chains + c`` (views into the sampler's state: read, don't
    write).

    ``overlap_noise``: draw the next step's Gaussian noise in a worker thread while the current
    step's gradient is computed (same numbers either way). ``"auto"`` turns it on for CPU
    when torch's intra-op thread count leaves a usable core idle (e.g. ``set_num_threads(1)``
    on a 2-core machine) and off otherwise, so as not to oversubscribe the cores.

    ``epoch_mode``: ``"reshuffle"`` (default) or ``"cycle"`` (devinterp's minibatch order), see
    :func:`batch_schedule`.
    """
    cfg = SamplerConfig.from_mapping(cfg)
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
    device = torch.device(device)
    if path == "auto":
        path = "quadratic" if _is_plain_quadratic(model) else "generic"
    elif path == "quadratic" and not _is_plain_quadratic(model):
        raise ValueError("path='quadratic' needs a grokking_llc.model.QuadraticNet")

    sampler = _Sampler(
        model, states, x.to(device), y.to(device), loss_fn, cfg, seeds, device, epoch_mode
    )
    init_losses = sampler.init_losses()
    step = sampler.quadratic_step if path == "quadratic" else sampler.generic_step
    num_steps = cfg.num_steps
    trace = torch.empty(num_steps, sampler.num_rows, dtype=sampler.flat.dtype, device=device)
    if overlap_noise == "auto":
        overlap_noise = device.type == "cpu" and torch.get_num_threads() < _usable_cpus()
    if overlap_noise:
        sampler._prefetch = _NoisePrefetcher(sampler, num_steps)
    try:
        with torch.no_grad():
            for t in range(num_steps):
                step(t, trace[t])
                if on_step is not None:
                    on_step(t, sampler.params)
    finally:
        if sampler._prefetch is not None:
            sampler._prefetch.close()
    out = trace.T.to(device="cpu", dtype=torch.float64).numpy()
    out = out.reshape(len(states), cfg.num_chains, num_steps)
    return [(out[s].copy(), init_losses[s]) for s in range(len(states))]


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
    ``-(eps/2) nbeta grad L_batch(w)`` is added per parameter.
    """

    def __init__(self, model, states, x, y, loss_fn, cfg: SamplerConfig, seeds, device, epoch_mode):
        self.model, self.x, self.y, self.loss_fn, self.cfg = model, x, y, loss_fn, cfg
        self.device = device
        self.S, self.C = len(states), cfg.num_chains
        self.M = self.num_rows = self.S * self.C
        self.B = cfg.batch_size
        self.eps = float(cfg.lr)
        self.nbeta = float(cfg.resolved_nbeta)
        self.gamma = float(cfg.localization)
        self.wd = float(cfg.weight_decay)

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
        self.flat = torch.empty(self.M * sum(numel), dtype=dtype, device=device)
        self.noise = [torch.empty_like(self.flat) for _ in range(2)]
        self.params: dict[str, torch.Tensor] = {}
        self._noise_blocks = [[[] for _ in range(self.S)] for _ in self.noise]
        self._prefetch = None
        offset = 0
        for name, k in zip(self.names, numel, strict=True):
            shape = self.center[name].shape[1:]
            block = self.flat[offset : offset + self.M * k].view(self.M, *shape)
            block.view(self.S, self.C, *shape).copy_(self.center[name].unsqueeze(1))
            self.params[name] = block
            for buf, noise in enumerate(self.noise):
                noise = noise[offset : offset + self.M * k].view(self.S, self.C, *shape)
                for s in range(self.S):
                    self._noise_blocks[buf][s].append(noise[s])
            offset += self.M * k
        # (eps/2) * gamma * w*, laid out like ``flat`` (SPEC section 4 localisation term).
        self.pull = self.flat.mul(0.5 * self.eps * self.gamma)
        self.decay = 1.0 - 0.5 * self.eps * (self.gamma + self.wd)

        gens = [_generators(seed, device) for seed in seeds]
        self.gen_noise = [g for _, g in gens]
        num_batches = max(cfg.num_steps, cfg.num_init_loss_batches)
        # (S, num_batches, B) row indices into x, y.
        self.schedule = torch.stack(
            [batch_schedule(len(x), self.B, num_batches, g, device, epoch_mode) for g, _ in gens]
        )

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

    def _langevin_linear_part(self) -> None:
        """``w <- decay * w + (eps/2) gamma w* + sqrt(eps) xi`` in place (SPEC section 4)."""
        noise = self.next_noise()
        if self.decay != 1.0:
            torch.add(self.pull, self.flat, alpha=self.decay, out=self.flat)
        self.flat.add_(noise, alpha=math.sqrt(self.eps))
        if self._prefetch is not None:
            self._prefetch.release(noise)

    def _chains(self, s: int) -> slice:
        """Rows of checkpoint s's chains in the stacked state."""
        return slice(s * self.C, (s + 1) * self.C)

    # ---------------------------------------------------------------- generic path

    def generic_step(self, t: int, loss_out: torch.Tensor) -> None:
        """One SGLD step for any model: vmap(grad) over the chains (SPEC section 4).

        One vmap call per checkpoint, over its chains, with that checkpoint's minibatch shared
        (not batched: some losses, e.g. ``F.one_hot`` targets, cannot be vmapped over data).
        """
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
        self._langevin_linear_part()
        for name in self.names:
            torch._foreach_add_(
                [self.params[name][self._chains(s)] for s in range(self.S)],
                grads[name],
                alpha=-0.5 * self.eps * self.nbeta,
            )

    # ---------------------------------------------------------------- quadratic path

    def _setup_quadratic(self) -> None:
        model: QuadraticNet = self.model
        p, K, M, B, S, C = model.p, model.width, self.M, self.B, self.S, self.C
        dev, dtype = self.device, self.flat.dtype
        # Rows of the (M * 2p, K) stacked W hit by step t: chain m's copy of W[a] and W[p + b].
        base = (torch.arange(M, device=dev) * (2 * p)).view(1, S, C, 1)
        a = self.x[:, 0][self.schedule].transpose(0, 1).unsqueeze(2)  # (T, S, 1, B)
        b = (self.x[:, 1] + p)[self.schedule].transpose(0, 1).unsqueeze(2)
        self._rows_a = (base + a).reshape(-1, M * B)
        self._rows_b = (base + b).reshape(-1, M * B)
        self._rows_ab = torch.stack([self._rows_a, self._rows_b], dim=2)  # (T, M * B, 2)
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

    def quadratic_step(self, t: int, loss_out: torch.Tensor) -> None:
        """One SGLD step of QuadraticNet with the hand-written backward (SPEC sections 2, 4).

        Forward: ``h = W[a] + W[p+b]``, ``pred = h^2 @ V``. Backward with ``G = dL/dpred``:
        ``dL/dV = (h^2)^T G`` and ``dL/dW[r] = sum over batch rows i that use row r of
        2 h_i * (G V^T)_i``. For the centred loss ``L = (1/2m) ||P(Y - pred)||_F^2`` (centring P
        over the m batch rows, SPEC section 2), ``G = -P(Y - pred) / m``.
        """
        if not hasattr(self, "_W"):
            self._setup_quadratic()
        M, B, S, C = self.M, self.B, self.S, self.C
        W, V, h2 = self._W, self._V, self._h2
        rows_a, rows_b = self._rows_a[t], self._rows_b[t]
        # h = W[a] + W[p + b] for every chain: one gather-and-sum over the stacked rows.
        h = torch.nn.functional.embedding_bag(self._rows_ab[t], self._W_rows, mode="sum")
        torch.mul(h, h, out=h2)
        pred = torch.bmm(h2.view(M, B, -1), V, out=self._pred)  # (M, B, p)
        coef = -0.5 * self.eps * self.nbeta  # -(eps/2) nbeta, SPEC section 4
        if self._centred:
            # resid = P(Y - pred); loss = |resid|^2 / 2m; G = -resid / m, folded into coef.
            resid = self._resid
            yb = self._onehot[self.schedule[:, t]].unsqueeze(1)  # (S, 1, B, p)
            torch.sub(yb, pred.view(S, C, B, -1), out=resid)
            resid.sub_(resid.mean(dim=2, keepdim=True))
            loss_out.copy_(resid.square().sum(dim=(2, 3)).view(M).mul_(0.5 / B))
            grad_pred, coef = resid.view(M, B, -1), coef * (-1.0 / B)
        else:
            grad_pred = torch.empty_like(pred)
            for s in range(S):
                chains = self._chains(s)
                with torch.enable_grad():
                    g, loss = self._dpred_fn(pred[chains], self.y[self.schedule[s, t]])
                grad_pred[chains], loss_out[chains] = g, loss
        dh = torch.bmm(grad_pred, V.transpose(1, 2), out=self._dh)  # G V^T, with old V
        dh.mul_(h.view(M, B, -1))  # dL/dh / 2
        self._langevin_linear_part()
        # Gradient terms: W gets coef * 2 * scatter(h * G V^T), V gets coef * (h^2)^T G.
        if self._one_hot_scatter:
            xt = self._xt.zero_()
            rows = self.schedule[:, t]
            xt.scatter_(1, self.x[rows, 0].unsqueeze(1), 1.0)
            xt.scatter_(1, (self.x[rows, 1] + self.model.p).unsqueeze(1), 1.0)
            xt_m = xt.unsqueeze(1).expand(S, C, *xt.shape[1:]).reshape(M, *xt.shape[1:])
            W.baddbmm_(xt_m, dh, alpha=2.0 * coef)
        else:
            dh_rows = dh.view(M * B, -1)
            self._W_rows.index_add_(0, rows_a, dh_rows, alpha=2.0 * coef)
            self._W_rows.index_add_(0, rows_b, dh_rows, alpha=2.0 * coef)
        V.baddbmm_(h2.view(M, B, -1).transpose(1, 2), grad_pred, alpha=coef)


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
