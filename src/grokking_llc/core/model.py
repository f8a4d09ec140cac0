"""Models and losses (SPEC section 2), and the registry that makes the architecture a config choice.

Every model maps integer pairs ``x`` of shape (n, 2) (entries in ``[0, p)``) to ``p`` outputs, so
training and LLC estimation never need to know which architecture they drive. A new architecture
is one module under ``grokking_llc.core.architectures`` that calls :func:`register_model`; the
config's
``model`` key names it and :func:`build_model` imports it on demand.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ModelFactory = Callable[..., nn.Module]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_MODELS: dict[str, ModelFactory] = {}


def register_model(kind: str) -> Callable[[ModelFactory], ModelFactory]:
    """Class or function decorator: make ``kind`` buildable by :func:`build_model`.

    The factory is called as ``factory(p, width=..., generator=..., **options)``.
    """

    def deco(factory: ModelFactory) -> ModelFactory:
        _MODELS[kind] = factory
        return factory

    return deco


def build_model(
    kind: str,
    p: int,
    *,
    width: int,
    generator: torch.Generator | None = None,
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a registered ``kind`` of model for modulus ``p``, initialised from ``generator``."""
    if kind not in _MODELS:
        try:
            importlib.import_module(f"grokking_llc.core.architectures.{kind}")
        except ModuleNotFoundError as err:
            raise ValueError(f"unknown model kind {kind!r}") from err
    return _MODELS[kind](p, width=width, generator=generator, **dict(options or {}))


def _uniform_(t: torch.Tensor, bound: float, generator: torch.Generator | None) -> torch.Tensor:
    with torch.no_grad():
        return t.uniform_(-bound, bound, generator=generator)


@register_model("quadratic")
class QuadraticNet(nn.Module):
    """Two-layer network with square activation, no biases: ``Yhat = (X W)^2 V`` (SPEC section 2).

    ``W`` has shape (2p, K) (column j is the input weight ``w_j`` of hidden unit j) and ``V`` shape
    (K, p). ``X`` is never built: for one-hot pairs, row i of ``X W`` is ``W[a_i] + W[p + b_i]``, a
    gather of two rows. Initialisation matches the paper's ``nn.Linear(..., bias=False)`` layers
    (PyTorch default: uniform on ``+-1/sqrt(fan_in)``), drawn from ``generator``.
    """

    def __init__(self, p: int, width: int = 1024, *, generator: torch.Generator | None = None):
        super().__init__()
        self.p, self.width = int(p), int(width)
        self.W = nn.Parameter(torch.empty(2 * self.p, self.width))
        self.V = nn.Parameter(torch.empty(self.width, self.p))
        _uniform_(self.W, 1.0 / math.sqrt(2 * self.p), generator)
        _uniform_(self.V, 1.0 / math.sqrt(self.width), generator)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``X W`` of shape (n, K), as a gather (SPEC section 2)."""
        return self.W[x[:, 0]] + self.W[x[:, 1] + self.p]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x)
        return (h * h) @ self.V


def one_hot_target(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``e_c`` rows for integer labels; a float target is taken as already encoded."""
    if target.is_floating_point():
        return target
    return F.one_hot(target, num_classes).to(torch.get_default_dtype())


def centred_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Centred square loss ``(1/2n) ||P (Y - Yhat)||_F^2``, ``P = I - 11^T/n`` (SPEC section 2).

    ``target`` is either integer labels of shape (n,) or a float matrix ``Y`` of shape (n, p).
    Each output column of the residual is centred over the n samples of the batch.
    """
    if pred.ndim != 2:
        raise ValueError(f"pred must have shape (n, p), got {tuple(pred.shape)}")
    r = one_hot_target(target, pred.shape[1]).to(pred.dtype) - pred
    r = r - r.mean(dim=0, keepdim=True)
    return 0.5 * r.pow(2).sum() / pred.shape[0]


def cross_entropy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits ``pred`` against integer labels (the transformer's loss)."""
    return F.cross_entropy(pred, target)


LOSSES: dict[str, LossFn] = {"centred_mse": centred_mse, "cross_entropy": cross_entropy}


def loss_name(loss: str | LossFn) -> str | None:
    """The registered name of a loss given by name or as one of :data:`LOSSES` (None for a
    callable that is not registered)."""
    if isinstance(loss, str):
        return loss
    return next((name for name, fn in LOSSES.items() if fn is loss), None)


def check_loss_samples(loss: str | LossFn, n: int, what: str) -> None:
    """Refuse a minibatch or split of ``n`` samples on which ``loss`` is identically zero or
    undefined (the rule of :data:`grokking_llc.core.data.LOSS_MIN_SAMPLES`; SPEC section 2), with a
    ``ValueError`` naming ``what``. An unregistered callable has no rule beyond n >= 1."""
    from grokking_llc.core.data import loss_samples_problem

    problem = loss_samples_problem(loss_name(loss) or "", int(n))
    if problem is not None:
        raise ValueError(f"{what}: {problem}")


def get_loss(name: str) -> LossFn:
    """The loss function registered under ``name``."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of rows with ``argmax_k pred[i, k] == target[i]`` (SPEC section 2)."""
    return (pred.argmax(dim=1) == target).float().mean().item()
