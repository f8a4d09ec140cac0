"""Modular-addition data (SPEC section 1), and how many samples each loss needs.

All ``p^2`` pairs ``(a, b)`` with label ``c = (a + b) mod p``;
``n = round(train_frac * p^2)`` of them are drawn uniformly without replacement as the training
split, the rest is validation.

:data:`LOSS_MIN_SAMPLES` is the one place that says on how few samples each loss of
:mod:`grokking_llc.core.model` is still a loss (config validation, training and the LLC estimator
all
ask :func:`loss_samples_problem`); it lives here, beside the split sizes, because config checks
must not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # torch is imported where tensors are made, so config checks stay light
    import torch


def is_prime(p: int) -> bool:
    """True when ``p`` is a prime number (trial division; p is small here)."""
    if p < 2:
        return False
    if p % 2 == 0:
        return p == 2
    f = 3
    while f * f <= p:
        if p % f == 0:
            return False
        f += 2
    return True


def n_train(p: int, train_frac: float) -> int:
    """Training-set size ``n = round(train_frac * p^2)`` (SPEC section 1)."""
    return int(round(train_frac * p * p))


# The fewest samples (a minibatch or a split) on which each loss is defined and not identically
# zero, and why. SPEC section 2: the centred square loss centres every output column over the n
# samples it is given (P = I - 11^T/n), so for n = 1 its residual, and the loss, are 0 whatever
# the weights: training on such batches learns nothing, SGLD sees a flat loss (every LLC 0).
LOSS_MIN_SAMPLES: dict[str, tuple[int, str]] = {
    "centred_mse": (
        2,
        "the centred square loss centres each output over the samples it is given (SPEC "
        "section 2), so over one sample it is 0 whatever the weights",
    ),
    "cross_entropy": (1, "a mean over no sample is undefined"),
}


def loss_min_samples(loss: str) -> int:
    """The fewest samples ``loss`` is a loss on (1 for a loss without a rule)."""
    return LOSS_MIN_SAMPLES.get(loss, (1, ""))[0]


def loss_samples_problem(loss: str, n: int) -> str | None:
    """Why ``n`` samples (a minibatch or a split) are too few for ``loss`` (None: enough)."""
    need, why = LOSS_MIN_SAMPLES.get(loss, (1, "a mean over no sample is undefined"))
    if n >= need:
        return None
    return f"{n} sample(s) are too few for loss {loss!r}, which needs >= {need}: {why}"


def make_split(p: int, train_frac: float, seed: int) -> pd.DataFrame:
    """The seeded train/validation split of modular addition mod ``p`` (SPEC section 1).

    Returns one row per pair, ordered by ``(a, b)``, with int16 columns ``a``, ``b``, ``c`` and a
    categorical ``split`` in {"train", "val"}. The draw uses its own ``numpy`` generator seeded
    with ``seed``, so the same arguments always give the same split.
    """
    if not isinstance(p, (int, np.integer)) or not is_prime(int(p)):
        raise ValueError(f"p must be a prime number, got {p!r}")
    if not 0.0 < float(train_frac) < 1.0:
        raise ValueError(f"train_frac must lie in (0, 1), got {train_frac!r}")
    p = int(p)
    n = n_train(p, train_frac)
    if not 1 <= n < p * p:
        raise ValueError(f"train_frac={train_frac} gives n={n} training pairs out of {p * p}")
    a, b = np.divmod(np.arange(p * p), p)
    rng = np.random.default_rng(seed)
    is_train = np.zeros(p * p, dtype=bool)
    is_train[rng.choice(p * p, size=n, replace=False)] = True
    return pd.DataFrame(
        {
            "a": a.astype(np.int16),
            "b": b.astype(np.int16),
            "c": ((a + b) % p).astype(np.int16),
            "split": pd.Categorical(
                np.where(is_train, "train", "val"), categories=["train", "val"]
            ),
        }
    )


def split_tensors(
    df: pd.DataFrame, split: str, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer pairs ``x`` of shape (n, 2) and labels ``y`` of shape (n,) for one split."""
    import torch

    part = df[df["split"] == split]
    x = torch.as_tensor(part[["a", "b"]].to_numpy(dtype=np.int64, copy=True), device=device)
    y = torch.as_tensor(part["c"].to_numpy(dtype=np.int64, copy=True), device=device)
    return x, y
