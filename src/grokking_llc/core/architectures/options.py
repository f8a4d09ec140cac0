"""The options each model kind takes, checked without building a model (and without importing
torch, so validating a config stays light). ``build_model`` and the config validation both ask
:func:`check_model_options`; an architecture module registers its rule here with
:func:`register_options` (a kind without a rule takes no option)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

OptionCheck = Callable[[Any, Any, Mapping[str, Any]], dict[str, Any]]
_RULES: dict[str, OptionCheck] = {}


def register_options(kind: str) -> Callable[[OptionCheck], OptionCheck]:
    def deco(check: OptionCheck) -> OptionCheck:
        _RULES[kind] = check
        return check

    return deco


def check_model_options(kind: str, p: Any, width: Any, options: Mapping[str, Any]) -> dict:
    """The options of ``kind`` with defaults filled, or ValueError naming what is wrong."""
    rule = _RULES.get(kind)
    if rule is None:
        if options:
            raise ValueError(f"model {kind!r} takes no option(s) {sorted(options)}")
        return {}
    return rule(p, width, dict(options))


# The transformer of SPEC section 8 (grokking_llc.core.architectures.transformer).
TRANSFORMER_OPTIONS: dict[str, int] = {"num_layers": 2, "num_heads": 1, "ff_dim": 256}


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"transformer option {name} must be a positive integer, got {value!r}")
    return int(value)


@register_options("transformer")
def transformer_options(p: Any, width: Any, options: Mapping[str, Any]) -> dict[str, int]:
    unknown = set(options) - set(TRANSFORMER_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown transformer option(s) {sorted(unknown)}; "
            f"choose from {sorted(TRANSFORMER_OPTIONS)}"
        )
    opts = {k: _positive_int(k, options.get(k, v)) for k, v in TRANSFORMER_OPTIONS.items()}
    if isinstance(p, bool) or not isinstance(p, int) or p < 2:
        raise ValueError(f"transformer p must be an integer >= 2, got {p!r}")
    width = _positive_int("width", width)
    if width % opts["num_heads"]:
        raise ValueError(
            f"transformer width (d_model) {width} is not divisible by num_heads={opts['num_heads']}"
        )
    return opts
