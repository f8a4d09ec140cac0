"""What every job description of the plan shares: the results folder and the frozen (hashable,
order-stable) copies of plain config data that frozen dataclass fields hold."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RESULTS = "results"


def _frozen(value: Any) -> Any:
    """A hashable, order-stable copy of plain config data (for frozen dataclass fields)."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """The plain data back from :func:`_frozen`."""
    if (
        isinstance(value, tuple)
        and value
        and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value)
    ):
        return {k: _thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value
