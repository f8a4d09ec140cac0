"""Code versions: a content hash of the package modules each workflow stage runs.

Snakemake does not see edits inside an imported package. Each rule passes
``code_version(<stage>)`` as a param; Snakemake's ``params`` rerun trigger then reruns the rule's
jobs when the content of a module its entry point can run changes. Nothing is listed by hand: a
stage's modules are the *import closure* of its entry point
``grokking_llc.pipeline.stages.<stage>``, found by reading every ``import`` statement of the
package (function-local ones included) with :mod:`ast`, less :data:`NEUTRAL_MODULES`, the short
list of modules that cannot change the content of any output. Touching a file without changing
it reruns nothing.

The versions follow the layers (docs/architecture.md) because the entry points do: a stage
imports the layers its outputs are computed by and nothing of the pipeline above it (no config,
validation, plan or catalogue: what the plan decides for a job reaches it as the job's params,
which Snakemake compares itself). So an edit to a figure module reruns the figure jobs, one to a
claim's verdict rule the scorecard, one to the sampler the LLC estimates and calibrations but no
training, and an edit to the plan reruns exactly the jobs whose params it changes.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
NAME = "grokking_llc"

# Modules of a stage's closure that cannot change what an output contains: how bytes reach the
# disk (atomic writes, provenance records) and job set-up (logging, thread count).
NEUTRAL_MODULES: frozenset[str] = frozenset({f"{NAME}.core.io", f"{NAME}.pipeline.stages"})

# Imports made by name at run time (importlib), which no import statement shows; a package named
# here brings every module in it. A model kind is a module of grokking_llc.core.architectures
# imported on first use (model.build_model); the figure registry loads every figure module.
DYNAMIC_IMPORTS: dict[str, tuple[str, ...]] = {
    f"{NAME}.core.model": (f"{NAME}.core.architectures",),
    f"{NAME}.figures": (f"{NAME}.figures",),
}


def _module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path], whole: bool = False) -> set[str]:
    """Package modules that importing ``name`` runs: the module and its parent packages (with
    ``whole``, every module of the package ``name``)."""
    found: set[str] = set()
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix in modules:
            found.add(prefix)
    if whole:
        found.update(m for m in modules if m.startswith(name + "."))
    return found


def _imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == NAME:
                    found |= _resolve(alias.name, modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != NAME:
                continue
            found |= _resolve(target, modules)
            for alias in node.names:  # `from grokking_llc import llc` imports a module
                found |= _resolve(f"{target}.{alias.name}", modules)
    for dyn in DYNAMIC_IMPORTS.get(module, ()):
        found |= _resolve(dyn, modules, whole=True)
    found.discard(module)
    return found


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """``{module: package modules it imports}`` for every module of the package."""
    modules = _module_files()
    return {m: frozenset(_imports_of(m, p, modules)) for m, p in modules.items()}


def import_closure(module: str) -> frozenset[str]:
    """Every package module that running ``module`` can import (itself included)."""
    graph = import_graph()
    if module not in graph:
        raise KeyError(f"no module {module!r} in {NAME}")
    # running a module first runs its parent packages' __init__ modules
    parents = _resolve(module, _module_files())
    seen, todo = set(parents) | {module}, [*parents, module]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return frozenset(seen)


def stage_modules(stage: str) -> list[str]:
    """The modules whose content decides ``stage``'s outputs (closure less neutral modules)."""
    closure = import_closure(f"{NAME}.pipeline.stages.{stage}")
    return sorted(closure - NEUTRAL_MODULES)


def hash_modules(modules: list[str]) -> str:
    """Short hash of the names and contents of ``modules``."""
    files = _module_files()
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(name.encode())
        digest.update(files[name].read_bytes())
    return digest.hexdigest()[:12]


@cache
def code_version(stage: str) -> str:
    """Hash of the contents of the modules ``stage`` depends on (see :func:`stage_modules`)."""
    return hash_modules(stage_modules(stage))
