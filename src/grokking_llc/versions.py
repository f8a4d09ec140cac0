"""Code versions: a short content hash of the modules each workflow stage depends on.

Snakemake does not see edits inside an imported package. Each rule passes
``code_version(<stage>)`` as a param; Snakemake's default ``params`` rerun trigger then reruns the
rule's jobs when (and only when) the content of a module it depends on changes. Touching a file
without changing it reruns nothing.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

# Modules (relative to the package) whose code decides each stage's numbers. config.py (names,
# validation) and io.py (how bytes reach the disk) are left out on purpose: editing them changes
# no result, so it reruns nothing.
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "split": ("data.py",),
    "train": ("data.py", "model.py", "train.py", "architectures"),
    "llc": (
        "llc.py", "sgld.py", "devinterp_backend.py", "diagnostics.py", "model.py",
        "architectures", "data.py",
    ),
    "theory": ("theory.py", "data.py"),
    "summary": ("gsm.py", "data.py"),
    "plots": ("plots.py", "gsm.py", "theory.py"),
}  # fmt: skip


def hash_files(root: Path, rels: tuple[str, ...]) -> str:
    """Short hash of the names and contents of ``rels`` (files or folders) under ``root``."""
    digest = hashlib.sha256()
    for rel in rels:
        path = root / rel
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
        for f in files:
            digest.update(f.relative_to(root).as_posix().encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


@cache
def code_version(stage: str) -> str:
    """Hash of the contents of the modules ``stage`` depends on (see :data:`STAGE_MODULES`)."""
    return hash_files(PACKAGE, STAGE_MODULES[stage])
