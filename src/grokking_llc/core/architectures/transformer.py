"""The paper's transformer for modular addition (SPEC section 8; appendix H.3.1, Fig. 13).

The two inputs ``a`` and ``b`` are two tokens of a vocabulary of size ``p``. Each is embedded
(token embedding plus a learned positional embedding for the two positions) into ``d_model =
width`` dimensions (256 in the paper), passed through ``num_layers`` (2) encoder layers
(``nn.TransformerEncoderLayer``: ``num_heads`` (1) attention heads, feed-forward width ``ff_dim``
(256), GELU, dropout 0, PyTorch's default post-norm), mean-pooled over the two tokens and read
out linearly to ``p`` logits. It is trained with cross-entropy (``loss: cross_entropy``), though
any loss of :mod:`grokking_llc.core.model` applies to its outputs.

Built by ``build_model("transformer", p, width=..., generator=..., options={...})``, with the
options ``num_layers``, ``num_heads`` and ``ff_dim``.

Initialisation. Every parameter gets PyTorch's default initialisation for its layer (what the
paper's code used), made deterministic given ``generator``: one 63-bit seed is drawn from
``generator`` and the modules are built inside :func:`torch.random.fork_rng` with the CPU
generator seeded from it. The global RNG is restored afterwards, so building a model neither
depends on nor changes the global random state. With ``generator=None`` the seed is drawn from
the global RNG instead (like ``QuadraticNet``, whose ``None`` means the global RNG).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from grokking_llc.core.architectures.options import TRANSFORMER_OPTIONS, transformer_options
from grokking_llc.core.model import register_model

# The options and their rule live where a config check can read them without torch.
DEFAULT_OPTIONS = TRANSFORMER_OPTIONS
_check_options = transformer_options


@register_model("transformer")
class TransformerNet(nn.Module):
    """Embed ``(a, b)`` as two tokens, 2 encoder layers, mean-pool, linear to ``p`` logits.

    See the module docstring (SPEC section 8). ``forward`` takes integer pairs ``x`` of shape
    (n, 2) with entries in ``[0, p)`` and returns logits of shape (n, p).
    """

    def __init__(
        self,
        p: int,
        width: int = 256,
        *,
        generator: torch.Generator | None = None,
        **options: Any,
    ):
        super().__init__()
        opts = _check_options(p, width, options)
        self.p, self.width = int(p), int(width)
        self.num_layers, self.num_heads, self.ff_dim = (
            opts["num_layers"],
            opts["num_heads"],
            opts["ff_dim"],
        )
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator).item())
        # Build under a forked CPU RNG seeded from `generator`: PyTorch's default initialisation,
        # reproducible, and the caller's global RNG untouched (see the module docstring).
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            self.tok_embed = nn.Embedding(self.p, self.width)
            self.pos_embed = nn.Embedding(2, self.width)
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(
                    d_model=self.width,
                    nhead=self.num_heads,
                    dim_feedforward=self.ff_dim,
                    dropout=0.0,
                    activation="gelu",
                    batch_first=True,
                )
                for _ in range(self.num_layers)
            )
            self.readout = nn.Linear(self.width, self.p)
        self.register_buffer("positions", torch.arange(2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"x must be integer pairs of shape (n, 2), got {tuple(x.shape)}")
        h = self.tok_embed(x) + self.pos_embed(self.positions)  # (n, 2, width)
        for layer in self.layers:
            h = layer(h)
        return self.readout(h.mean(dim=1))

    def extra_repr(self) -> str:
        return (
            f"p={self.p}, width={self.width}, num_layers={self.num_layers}, "
            f"num_heads={self.num_heads}, ff_dim={self.ff_dim}"
        )
