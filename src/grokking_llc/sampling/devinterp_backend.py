"""The one module that talks to devinterp (2.0.1), so its API churn stays here.

devinterp's ``sample`` runs SGLD chains one after another (SPEC section 4 update rule, its
``SGMCMC.sgld``) and stores the minibatch loss of every step. Two of its habits are corrected:

* its ``llc`` averages the loss over *all* steps, burn-in included; we return the per-step traces
  and :func:`grokking_llc.sampling.llc.llc_from_traces` drops the burn-in;
* it silently returns a cached result when ``output_path`` exists; we always sample into a fresh
  temporary directory.

devinterp is written for language models: a dataset item is a token sequence ``input_ids`` of
length >= 2 and ``loss_fn(model, input_ids)`` returns a per-token loss of shape (batch, seq-1).
A generic ``(x, y)`` problem is fed through that interface by making each item the pair
``[i, i]`` of its row index; the adapter's loss looks the rows up and broadcasts the batch's
scalar mean loss to shape (batch, 1), whose mean (what devinterp differentiates and records) is
exactly that loss.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from grokking_llc.core.settings import SamplerConfig

log = logging.getLogger(__name__)


def as_devinterp_problem(x: torch.Tensor, y: torch.Tensor, loss_fn):
    """A devinterp dataset of row indices ``[i, i]`` and its per-token loss for ``(x, y)``."""
    from datasets import Dataset

    index = np.repeat(np.arange(len(x), dtype=np.int64)[:, None], 2, axis=1)
    dataset = Dataset.from_dict({"input_ids": index}).with_format("torch")

    def per_token_loss(net: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        rows = input_ids[:, 0].to(x.device)
        loss = loss_fn(net(x[rows]), y[rows])
        return loss.reshape(1, 1).expand(len(rows), 1)

    return dataset, per_token_loss


def sample_chains(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn,
    cfg: SamplerConfig,
    *,
    seed: int,
    device: str,
) -> dict:
    """devinterp's sampler of ``cfg.kind`` (``"sgld"``, or ``"rmsprop"``: its ``rmsprop_sgld``
    with ``cfg.rmsprop_alpha`` and ``cfg.rmsprop_eps``); returns ``trace`` (chain, step),
    ``init_loss``, ``num_params`` and the per-step diagnostics that devinterp records, in the
    fast backend's names (:class:`grokking_llc.sampling.sgld.ChainSamples`), all (chain, step):

    * ``distance``: its ``metrics_distance``, ``|w_t - w*|`` before the update of step t;
    * ``grad_norm``: ``|nbeta grad L_B(w_t)|`` = its ``metrics_unscaled_grad / (eps / 2)``
      (the raw gradient term, before any preconditioner);
    * ``loc_norm``: ``gamma * distance``.

    devinterp 2.0.1 has no MALA acceptance (its 1.x callback is gone), so there is no
    ``log_accept``: the estimate's ``step_ok`` is then False (unknown is not ok).
    """
    from devinterp.slt.sampling import sample

    if cfg.kind not in ("sgld", "rmsprop"):
        raise ValueError(f"devinterp has no sampler kind {cfg.kind!r}; use backend 'fast'")
    method: dict = {}
    if cfg.kind == "rmsprop":
        method = dict(
            sampling_method="rmsprop_sgld",
            rmsprop_alpha=cfg.rmsprop_alpha,
            rmsprop_eps=cfg.rmsprop_eps,
        )
    dataset, per_token_loss = as_devinterp_problem(x.to(device), y.to(device), loss_fn)
    with (
        tempfile.TemporaryDirectory(prefix="devinterp-") as tmp,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        samples = sample(
            model=model,
            dataset=dataset,
            observables={},
            lr=cfg.lr,
            n_beta=cfg.resolved_nbeta,
            num_chains=cfg.num_chains,
            num_draws=cfg.num_draws,
            batch_size=cfg.batch_size,
            num_burnin_steps=cfg.num_burnin_steps,
            num_init_loss_batches=cfg.num_init_loss_batches,
            init_seed=seed,
            localization=cfg.localization,
            llc_weight_decay=cfg.weight_decay,
            device=device,
            output_path=Path(tmp) / "samples.zarr",
            loss_fn=per_token_loss,
            save_metrics=True,
            **method,
        )
        ds = samples.dataset
        trace = ds.sampling_loss_micro.mean(dim=["batch_sampling", "token_pos"]).values
        init_loss = float(ds.init_loss.values.mean())
        distance = np.asarray(ds.metrics_distance.values, dtype=np.float64)
        grad = np.asarray(ds.metrics_unscaled_grad.values, dtype=np.float64)
        out = {
            "num_params": sum(p.numel() for p in model.parameters()),
            "distance": distance,
            "grad_norm": grad / (0.5 * cfg.lr),
            "loc_norm": cfg.localization * distance,
        }
    trace = np.asarray(trace, dtype=np.float64)
    # devinterp stops a chain whose loss turns NaN/inf with a warning and leaves the rest of its
    # trace at the store's fill value: mark such chains as non-finite so they count as diverged.
    for w in caught:
        msg = str(w.message)
        if msg.startswith("Chain failed"):
            chain = int(msg.split("Chain ")[2].split()[0])
            trace[chain] = np.nan
            log.warning("devinterp: %s", msg)
    return out | {"trace": trace, "init_loss": init_loss}
