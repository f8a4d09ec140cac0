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

# Modules (relative to the package) whose code decides each stage's numbers.
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "split": ("data.py",),
    "train": ("data.py", "model.py", "train.py", "config.py", "io.py", "architectures"),
    "llc": (
        "llc.py", "sgld.py", "devinterp_backend.py", "model.py", "architectures", "stages.py",
        "config.py", "data.py", "io.py", "train.py", "diagnostics.py",
    ),
    "plots": ("plots.py",),
}  # fmt: skip


def _files(rel: str) -> list[Path]:
    path = PACKAGE / rel
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    return [path] if path.exists() else []


@cache
def code_version(stage: str) -> str:
    """Hash of the contents of the modules ``stage`` depends on (see :data:`STAGE_MODULES`)."""
    digest = hashlib.sha256()
    for rel in STAGE_MODULES[stage]:
        for f in _files(rel):
            digest.update(f.relative_to(PACKAGE).as_posix().encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:12]
