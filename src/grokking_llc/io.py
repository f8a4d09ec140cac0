"""Atomic output: a file is either absent or complete, never half-written; safe torch input.

Every writer puts its bytes into a temporary file beside the target and renames it into place
(``os.replace`` is atomic on POSIX), so an interrupted job never leaves a file that a later job
or Snakemake could take as done.

Torch files are read only with ``weights_only=True`` (:func:`torch_load`): tensors and plain
Python data, never a pickled callable. A file that carries anything else is refused with
:class:`UnsafeFileError` before any of it runs; a file that cannot be read (truncated, garbage)
raises :class:`CorruptFileError`. Both messages are one line naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import pickletools
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` as Parquet, atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def torch_save(obj: Any, path: str | os.PathLike) -> str:
    """``torch.save`` ``obj``, atomically; returns the SHA-256 (hex) of the bytes written.

    The archive is serialised in memory first: ``torch.save`` to a path names the archive's
    records after the (random) temporary file, so equal objects would give different bytes."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


class CheckpointFileError(RuntimeError):
    """A torch file that cannot be used; the message is one line naming the file."""


class UnsafeFileError(CheckpointFileError):
    """A torch file carrying pickled objects other than tensors and plain data (maybe code)."""


class CorruptFileError(CheckpointFileError):
    """A torch file that cannot be read: truncated, empty, or not a torch file at all."""


def torch_load(path: str | os.PathLike, *, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain data only, nothing runs.

    Raises :class:`UnsafeFileError` for a file whose pickle names a global (a class or a
    callable) and :class:`CorruptFileError` for one that cannot be read; a missing file raises
    ``FileNotFoundError``.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol N": a non-torch file
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - garbage makes the unpickler raise anything
        found = _global_named(str(err)) if isinstance(err, pickle.UnpicklingError) else ""
        found = found or _pickled_global(path)
        if found:
            raise UnsafeFileError(
                f"refusing {path}: it holds a pickled object that is not a tensor or plain data "
                f"({found}); nothing from it was run. Delete it if you did not write it"
            ) from None
        first = str(err).splitlines()[0][:80] if str(err).strip() else type(err).__name__
        raise CorruptFileError(f"{path} is corrupt or truncated ({first})") from None


def _global_named(reason: str) -> str:
    """The global that torch's weights-only unpickler refused, from its message ("" if none)."""
    match = re.search(r"GLOBAL\s+(\S+)", reason)
    if match:
        return f"global {match.group(1)}"
    return "a global" if "allowed global" in reason or "Unsupported global" in reason else ""


_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}


def _pickled_global(path: Path) -> str:
    """For a well-formed plain (non-zip) pickle: its first opcode that imports or calls.

    ``pickletools.genops`` only parses the opcodes; nothing is imported or run. Bytes that do
    not parse to a ``STOP`` are garbage, not a crafted pickle, and give ""."""
    if zipfile.is_zipfile(path):
        return ""
    found = ""
    try:
        with open(path, "rb") as fh:
            for op, arg, _ in pickletools.genops(fh):
                if op.name in _CODE_OPCODES and not found:
                    found = f"{op.name} {arg}" if arg is not None else op.name
                if op.name == "STOP":
                    return found
    except Exception:  # noqa: BLE001 - garbage ends the scan
        return ""
    return ""


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_figure(fig, path: str | os.PathLike, **kwargs) -> None:
    """Save a matplotlib figure, atomically (the format comes from the target's suffix)."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
