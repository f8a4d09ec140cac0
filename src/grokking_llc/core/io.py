"""Atomic output that proves whose it is; damage found and moved aside; safe torch input.

Atomic. Every writer puts its bytes into a temporary file beside the target and renames it into
place (``os.replace`` is atomic on POSIX), so an interrupted job never leaves a file that a later
job or Snakemake could take as done. The temporary file is created with mode ``0o666`` less the
user's umask, as ``open`` would create the target, so a group sharing a results folder can read
every output.

Digest records. Each output written here gets a record ``.digests/<name>.json`` beside it (in a
hidden folder of the output's own folder): the SHA-256, size and modification time of the bytes
written, and the file's provenance. The record is written before the output is renamed into
place, so a kill between the two leaves a record that the (old or missing) file does not match,
never a file without the record of its bytes. :func:`check_outputs` compares every planned
output with its record (size and mtime first, the digest only when they changed) and with the
provenance the plan expects; :func:`heal_outputs` moves what fails aside, under
``results/.damaged/<time>/``, so that the workflow rebuilds it. Nothing is deleted.

Provenance. A file made for one run (checkpoints, training log), one run and sampler (LLC tables)
or one calibration carries ``{"run_id", "settings", ...}``: the ids the plan names it by and a
hash of the settings its job was given (:func:`provenance`). Parquet tables keep it in their
key-value schema metadata (:data:`PROVENANCE_KEY`; no time or host, so equal tables stay equal),
torch files in their dict under ``"provenance"``. Readers compare it with what the plan expects
(:func:`check_provenance`) and refuse a mismatch with :class:`ProvenanceError`, one line naming
the file and both ids.

Torch files are read only with ``weights_only=True`` (:func:`torch_load`): tensors and plain
Python data, never a pickled callable. A file that carries anything else is refused with
:class:`UnsafeFileError` before any of it runs; a file that cannot be read (truncated, garbage)
raises :class:`CorruptFileError`. Both messages are one line naming the file.

This module imports neither torch nor pandas at the top, so the workflow can check its outputs
while it parses the Snakefile without paying for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import pickle
import pickletools
import re
import secrets
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORD_DIR = ".digests"  # beside every output: .digests/<name>.json
DAMAGED_DIR = ".damaged"  # under the results folder: what heal_outputs moved aside
PROVENANCE_KEY = b"grokking_llc.provenance"  # Parquet key-value metadata
RECORD_FORMAT = 1


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def _new_temp(path: Path) -> Path:
    """An empty new file ``.<name>.<random>.tmp`` beside ``path``, created with mode 0o666 so
    that the kernel applies the umask (``tempfile.mkstemp`` would make it 0o600, and the mode
    survives the rename)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, *, record: bool = True, provenance: Mapping[str, Any] | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    With ``record`` (the default) the digest record of the bytes written (and ``provenance``)
    is written first (module docstring). Work files that are not outputs pass ``False``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_temp(path)
    try:
        yield tmp_path
        if record:
            write_record(path, tmp_path, provenance)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_parquet(
    df, path: str | os.PathLike, *, provenance: Mapping[str, Any] | None = None,
    record: bool = True,
) -> None:  # fmt: skip
    """Write the DataFrame ``df`` as Parquet, atomically, with ``provenance`` (if given) in its
    key-value metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if provenance is not None:
        meta = dict(table.schema.metadata or {})
        meta[PROVENANCE_KEY] = _dumps(provenance).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_path(path, record=record, provenance=provenance) as tmp:
        pq.write_table(table, tmp, compression="snappy")


def torch_save(
    obj: Any, path: str | os.PathLike, *, record: bool = True,
    provenance: Mapping[str, Any] | None = None,
) -> str:  # fmt: skip
    """``torch.save`` ``obj``, atomically; returns the SHA-256 (hex) of the bytes written.

    ``provenance`` goes into the digest record only: a file that must carry it holds it in its
    own dict (``obj["provenance"]``). The archive is serialised in memory first: ``torch.save``
    to a path names the archive's records after the (random) temporary file, so equal objects
    would give different bytes."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    with atomic_path(path, record=record, provenance=provenance) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def save_figure(fig, path: str | os.PathLike, **kwargs) -> None:
    """Save a matplotlib figure, atomically (the format comes from the target's suffix)."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------


class ProvenanceError(ValueError):
    """A file made for another run, sampler or setting than the plan expects where it lies (or
    one that does not say whose it is); the message is one line naming the file and both ids."""


def _canonical(value: Any) -> Any:
    """Plain data with integral floats as ints and mappings sorted (hash-stable)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value) if abs(value) < 2**53 else value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"))


def settings_hash(params: Any) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of a job's settings."""
    return hashlib.sha256(_dumps(params).encode()).hexdigest()[:16]


def provenance(run_id: str | list[str], settings: Any, **ids: str) -> dict[str, Any]:
    """What a file carries to prove whose it is: ``run_id`` (a list for a calibration over
    several runs), the hash of the job's ``settings`` and further ids (``sampler_id``)."""
    return {"run_id": run_id, "settings": settings_hash(settings), **ids}


def _describe(prov: Mapping[str, Any] | None, keys) -> str:
    if prov is None:
        return "no provenance"
    parts = []
    for key in keys:
        value = prov.get(key)
        name = key.removesuffix("_id")
        parts.append(f"{name} {','.join(value) if isinstance(value, list) else value}")
    return ", ".join(parts)


def check_provenance(
    path: str | os.PathLike,
    found: Mapping[str, Any] | None,
    expect: Mapping[str, Any] | None,
    *,
    missing_ok: bool = False,
) -> None:
    """Refuse ``found`` (a file's provenance) unless it has every value of ``expect`` (the
    plan's), with :class:`ProvenanceError` naming the file and both. ``expect`` None or empty:
    nothing is checked. A file without provenance (written before files carried it, or by
    another tool) is refused with advice, unless ``missing_ok``."""
    if not expect:
        return
    keys = list(expect)
    if found is None and missing_ok:
        return
    if found is None:
        raise ProvenanceError(
            f"{path} does not say whose it is (written before outputs carried their provenance, "
            f"or by another tool); the plan expects {_describe(expect, keys)}: move it away and "
            "rerun (`snakemake ... figures` moves such files aside and rebuilds them)"
        )
    if any(found.get(k) != expect[k] for k in keys):
        raise ProvenanceError(
            f"{path} was made for {_describe(found, keys)}, but the plan expects "
            f"{_describe(expect, keys)} here: it was copied or moved from elsewhere; move it "
            "away and rerun (`snakemake ... figures` moves such files aside and rebuilds them)"
        )


def parquet_provenance(path: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance in a Parquet file's metadata (None when it has none), reading only the
    footer. An unreadable file raises :class:`CorruptFileError`."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds for garbage
        raise CorruptFileError(
            f"{path} is not a readable Parquet file ({_first_line(err)})"
        ) from None
    raw = meta.get(PROVENANCE_KEY)
    if raw is None:
        return None
    try:
        found = json.loads(raw)
    except ValueError:
        raise CorruptFileError(f"{path}: its provenance metadata is not JSON") from None
    return found if isinstance(found, dict) else None


def read_parquet(
    path: str | os.PathLike, *, expect: Mapping[str, Any] | None = None, missing_ok=False, **kw
):
    """``pandas.read_parquet`` after checking the file's provenance against ``expect``
    (:func:`check_provenance`); a file that cannot be read raises :class:`CorruptFileError`
    naming it (one line)."""
    import pandas as pd

    if expect:
        check_provenance(path, parquet_provenance(path), expect, missing_ok=missing_ok)
    try:
        return pd.read_parquet(path, **kw)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001
        raise CorruptFileError(
            f"{path} is not a readable Parquet file ({_first_line(err)})"
        ) from None


def check_ids_in_path(path: str | os.PathLike) -> None:
    """Refuse a Parquet table whose provenance names a run or sampler that its path does not:
    the plan names each run's and each track's files by those ids (``runs/<run>/``,
    ``llc/<run>/<sampler>/``, ``llc_grid/<grid>/<run>-<sampler>.parquet``), so the path is what
    the plan expects. For readers that get no ids in their params (figures, scorecard). A table
    without provenance passes: the workflow rebuilds such files before any job runs
    (:func:`heal_outputs`), so only a table made by hand reaches a reader without it."""
    found = parquet_provenance(path)
    expect = {}
    for key in ("run_id", "sampler_id"):
        value = (found or {}).get(key)
        if isinstance(value, str) and value not in str(path):
            expect[key] = "<named in the path>"
    if expect:
        parts = Path(path).parts
        raise ProvenanceError(
            f"{path} was made for {_describe(found, list(expect))}, which its path "
            f"({'/'.join(parts[-3:])}) does not name: it was copied or moved from elsewhere; move "
            "it away and rerun (`snakemake ... figures` moves such files aside and rebuilds them)"
        )


# --------------------------------------------------------------------------------------------
# Digest records and damage
# --------------------------------------------------------------------------------------------


def record_path(path: str | os.PathLike) -> Path:
    """Where the digest record of ``path`` lives: ``<dir>/.digests/<name>.json``."""
    path = Path(path)
    return path.parent / RECORD_DIR / f"{path.name}.json"


def _write_json_atomically(target: Path, data: Mapping[str, Any]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(target)
    try:
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_record(
    path: str | os.PathLike, written: str | os.PathLike, prov: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Record the bytes of ``written`` (the temporary file about to become ``path``; a rename
    keeps size and mtime) and ``prov`` as ``path``'s digest record."""
    st = os.stat(written)
    rec = {
        "format": RECORD_FORMAT,
        "file": Path(path).name,
        "sha256": file_digest(written),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "provenance": None if prov is None else json.loads(_dumps(prov)),
    }
    _write_json_atomically(record_path(path), rec)
    return rec


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The digest record of ``path`` (None when there is none or it cannot be read)."""
    try:
        rec = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return None
    keys = ("sha256", "size", "mtime_ns")
    return rec if isinstance(rec, dict) and all(k in rec for k in keys) else None


@dataclass(frozen=True)
class Damage:
    """A planned output that must be rebuilt: ``path`` and what is wrong with it. ``legacy``:
    it has no digest record (written before outputs were recorded, or by hand)."""

    path: str
    problem: str
    legacy: bool = False


NO_RECORD = "no digest record (written by an older version of this workflow, or by hand)"


def check_output(
    path: str | os.PathLike, expect: Mapping[str, Any] | None = None, *, refresh: bool = False
) -> Damage | None:
    """What is wrong with an existing output (None: nothing). Its size and mtime are compared
    with its digest record; only when they differ is the file hashed (equal bytes with a new
    mtime, e.g. after ``touch``, are fine: with ``refresh`` the record takes the new mtime).
    Then the recorded provenance is compared with ``expect`` (the plan's)."""
    path = Path(path)
    rec = read_record(path)
    if rec is None:
        return Damage(str(path), NO_RECORD, legacy=True)
    st = path.stat()
    if st.st_size != rec["size"]:
        return Damage(str(path), f"{st.st_size} bytes, its job wrote {rec['size']}")
    if st.st_mtime_ns != rec["mtime_ns"]:
        digest = file_digest(path)
        if digest != rec["sha256"]:
            return Damage(
                str(path), f"its content differs from what its job wrote (sha256 {digest[:12]}, "
                f"recorded {rec['sha256'][:12]})",
            )  # fmt: skip
        if refresh:
            _write_json_atomically(record_path(path), {**rec, "mtime_ns": st.st_mtime_ns})
    if expect:
        found = rec.get("provenance")
        keys = list(expect)
        if not isinstance(found, dict) or any(found.get(k) != expect[k] for k in keys):
            return Damage(
                str(path), f"made for {_describe(found if isinstance(found, dict) else None, keys)}"
                f", the plan expects {_describe(expect, keys)}",
            )  # fmt: skip
    return None


def check_outputs(
    expected: Mapping[str, Mapping[str, Any] | None], *, refresh: bool = False
) -> list[Damage]:
    """:func:`check_output` for every existing file of ``expected`` (path -> the provenance the
    plan expects, or None for files that carry none)."""
    out = []
    for path, expect in expected.items():
        if os.path.isfile(path):
            damage = check_output(path, expect, refresh=refresh)
            if damage is not None:
                out.append(damage)
    return out


def move_aside(path: str | os.PathLike, results: str | os.PathLike, stamp: str) -> Path:
    """Move ``path`` (and its digest record) to ``<results>/.damaged/<stamp>/<path within
    results>``; returns where it went."""
    path, results = Path(path), Path(results)
    try:
        rel = path.resolve().relative_to(results.resolve())
    except ValueError:
        rel = Path(path.name)
    dest = results / DAMAGED_DIR / stamp / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    rec = record_path(path)
    if rec.exists():
        os.replace(rec, dest.parent / f".{dest.name}.digest.json")
    return dest


def heal_outputs(
    expected: Mapping[str, Mapping[str, Any] | None],
    results: str | os.PathLike,
    *,
    move: bool = True,
    say: Callable[[str], None] = print,
) -> list[Damage]:
    """Check every planned output (:func:`check_outputs`), report each damaged one in one line
    (file, what is wrong) and, with ``move``, move it aside (:func:`move_aside`) so that the
    workflow rebuilds it and what depends on it. Files without a digest record are reported in
    one line together. Without ``move`` (a dry run) nothing changes on disk."""
    damaged = check_outputs(expected, refresh=move)
    if not damaged:
        return damaged
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(results) / DAMAGED_DIR
    n = 1
    while (base / stamp).exists():
        n += 1
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    where = f"{base / stamp}/" if move else "nowhere (dry run)"
    fate = f"moved to {where}, to be rebuilt" if move else "would be moved aside and rebuilt"
    for d in damaged:
        if move:
            move_aside(d.path, results, stamp)
    legacy = [d.path for d in damaged if d.legacy]
    for d in damaged:
        if not d.legacy:
            say(f"damaged output {d.path}: {d.problem}; {fate}")
    if legacy:
        shown = ", ".join(legacy[:3]) + (f" and {len(legacy) - 3} more" if len(legacy) > 3 else "")
        say(f"{len(legacy)} output(s) with {NO_RECORD}: {shown}; {fate}")
    return damaged


# --------------------------------------------------------------------------------------------
# Safe torch input
# --------------------------------------------------------------------------------------------


class CheckpointFileError(RuntimeError):
    """A torch file that cannot be used; the message is one line naming the file."""


class UnsafeFileError(CheckpointFileError):
    """A torch file carrying pickled objects other than tensors and plain data (maybe code)."""


class CorruptFileError(CheckpointFileError):
    """A file that cannot be read: truncated, empty, or not of its kind at all."""


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0][:80] if str(err).strip() else type(err).__name__


def torch_load(path: str | os.PathLike, *, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain data only, nothing runs.

    Raises :class:`UnsafeFileError` for a file whose pickle names a global (a class or a
    callable) and :class:`CorruptFileError` for one that cannot be read; a missing file raises
    ``FileNotFoundError``.
    """
    import torch

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
        raise CorruptFileError(f"{path} is corrupt or truncated ({_first_line(err)})") from None


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
