"""Mutation testing of the modules that decide numbers (issue 15): mutmut 3 plus module constants.

Run by hand, not in CI (``make mutation``; see docs/mutation.md for the latest scores)::

    .venv/bin/python tools/mutation.py                       # every module (some sampled)
    .venv/bin/python tools/mutation.py gsm data --jobs 2     # some modules
    .venv/bin/python tools/mutation.py --sample 300 --seed 0 # a fixed random sample per module
    .venv/bin/python tools/mutation.py gsm --label before    # also record the score in the history

For each module ``M`` (dotted below the package: ``src/grokking_llc/<M with / for .>.py``):

1. A scratch copy is made under ``--workdir``: ``src/`` (the whole package, so imports work),
   ``tests/conftest.py`` (and the other helper modules of tests/), only the unit-test files
   mapped to ``M`` in :data:`MODULES`, the files those tests read (config/, .test/,
   workflow/schemas/), and a ``pyproject.toml`` holding
   this repository's ``[tool.pytest.ini_options]`` and a ``[tool.mutmut]`` section that mutates
   only ``M``. Nothing is written into the working tree except the result files.
2. mutmut 3 (pinned: mutmut==3.8.1) generates every mutant of ``M``. mutmut 3 mutates code inside
   functions and methods only (numbers n -> n+1, comparison and arithmetic operators, and/or,
   strings, keyword arguments dropped, arguments replaced by None, ...); it does not touch
   module-level statements or functions with decorators other than @staticmethod/@classmethod.
3. With ``--sample N`` (default: :data:`DEFAULT_SAMPLE` for the largest modules, else all) a fixed
   random sample of N mutants of the module (``random.Random(seed)`` over the sorted names; all of
   them when the module has fewer) is run, otherwise all. mutmut
   imports once, runs the mapped tests once to learn which test reaches which function, then forks
   one process per mutant that runs only the tests reaching the mutated function (``-x``), with a
   CPU-time limit of 30x their clean time (+30 s). So one mutant costs well under a second here.
4. Our own small pass covers what mutmut skips: every numeric or boolean literal in a module-level
   assignment (also inside dict/list/tuple literals, e.g. thresholds and hash bases) and every
   string assigned directly to a module-level name is mutated (numbers n -> n+1 and, for floats in
   (0, 1), an order of magnitude as well: x -> 1 - 10 (1 - x) above 0.5, e.g. 0.99 -> 0.9, and
   x -> 10 x up to 0.5, e.g. 1e-9 -> 1e-8; True <-> False; "s" -> "XXsXX"), each in
   turn in the scratch copy, and the mapped tests run in a fresh ``pytest -x`` process with a
   timeout.
5. Killed = a test failed, errored or timed out (mutmut's "killed", "timeout", "segfault").
   Undetected = "survived" or "no tests" (no mapped test reaches the function) or "suspicious".
   A survivor listed in tools/mutation_equivalents.toml (matched by module, function and changed
   lines, so renumbering does not lose it) is "equivalent" and left out of the adjusted score; the
   raw score keeps it. Results go to docs/mutation/<module>.json; docs/mutation.md is rebuilt from
   all of them, with every survivor's diff and status.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "grokking_llc"
DOCS = ROOT / "docs"
RESULTS_DIR = DOCS / "mutation"
REPORT = DOCS / "mutation.md"
EQUIVALENTS = ROOT / "tools" / "mutation_equivalents.toml"

# Module -> the fast unit-test files that cover it (each runs in seconds). Files that do not exist
# (yet) are left out with a note. mutmut runs, for each mutant, only those of these tests that
# reach the mutated function.
MODULES: dict[str, list[str]] = {
    "science.gsm": ["tests/science/test_gsm.py"],
    "core.data": ["tests/core/test_data.py"],
    "core.model": ["tests/core/test_model.py"],
    "science.theory": ["tests/science/test_theory.py"],
    "sampling.diagnostics": [
        "tests/sampling/test_diagnostics.py",
        "tests/sampling/test_validity.py",
    ],
    "sampling.validity": ["tests/sampling/test_validity.py", "tests/sampling/test_diagnostics.py"],
    # ~45-50 s each on one core, most of it in a few known-answer runs; mutmut runs only the
    # tests that reach the mutated function
    "sampling.llc": ["tests/sampling/test_llc.py"],
    "sampling.sgld": ["tests/sampling/test_sgld.py"],
    "sampling.refine": ["tests/sampling/test_refine.py"],
    "training.train_many": ["tests/training/test_train_many.py"],
    # the calibration's fake-world tests run in seconds; its known answers (minutes) are in the
    # same file, and mutmut runs only the tests that reach the mutated function
    "sampling.calibrate": ["tests/sampling/test_calibrate.py"],
    "science.stats": ["tests/science/test_stats.py"],
    "science.fits": ["tests/science/test_fits.py"],
    "science.tables": ["tests/science/test_tables.py"],
    "science.scaling": ["tests/science/test_scaling.py"],
    "science.generalisation": ["tests/science/test_generalisation.py"],
    "science.trajectory": ["tests/science/test_trajectory.py"],
    "science.sampler_checks": ["tests/science/test_sampler_checks.py"],
    # the verdict rules at their thresholds (table-driven edges) and each claim's statistic
    "science.claims": ["tests/science/test_claims.py"],
    "training.train": ["tests/training/test_train.py"],
    "pipeline.config": ["tests/pipeline/test_config.py", "tests/pipeline/test_validation.py"],
    "core.settings": ["tests/core/test_settings.py", "tests/pipeline/test_config.py"],
    "pipeline.plan": ["tests/pipeline/test_plan.py"],
}
# Modules whose full run is too long for routine use on 2 shared cores: a fixed random sample of
# this many mutants by default (--sample overrides it for every module; --sample 0 runs all).
DEFAULT_SAMPLE: dict[str, int] = {
    "science.theory": 400,
    "sampling.calibrate": 300,
    "sampling.llc": 300,
    "sampling.sgld": 300,
    "training.train_many": 300,
}
# Paths the tests read, copied into every scratch copy when they exist.
SUPPORT = ["config", ".test", "workflow/schemas"]

DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
UNDETECTED = {"survived", "no tests", "suspicious"}


# ----------------------------------------------------------------------------- small helpers


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def _toml_table(name: str, table: dict) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items())


def function_of(mutant: str) -> str:
    """``grokking_llc.science.gsm.x_fit_linear__mutmut_3`` -> ``fit_linear``; methods as
    ``Cls.meth``."""
    tail = mutant.rsplit(".", 1)[-1]
    tail = re.sub(r"__mutmut_\d+$", "", tail)
    tail = tail.removeprefix("x_").removeprefix("x\u01c1")
    return tail.replace("\u01c1", ".")


def change_of(diff: str) -> str:
    """The changed lines of a unified diff as one line: ``- old | + new``."""
    lines = [
        f"{line[0]} {line[1:].strip()}"
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    return " | ".join(lines)


def load_equivalents() -> list[dict]:
    if not EQUIVALENTS.exists():
        return []
    return tomllib.loads(EQUIVALENTS.read_text())["equivalent"]


def equivalent_reason(module: str, function: str, change: str, equivalents: list[dict]) -> str:
    for e in equivalents:
        if e["module"] == module and e["function"] == function and e["change"] == change:
            return e["reason"]
    return ""


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "tests"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return out + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ----------------------------------------------------------------------------- scratch copy


def module_path(module: str) -> str:
    """``"science.gsm"`` -> ``"science/gsm"`` (the module's path below the package)."""
    return module.replace(".", "/")


def make_scratch(module: str, work: Path) -> list[str]:
    """Fresh scratch copy for ``module`` under ``work``; returns the test files it holds."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(
        ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    (work / "tests").mkdir()
    for helper in (ROOT / "tests").glob("*.py"):  # conftest.py and shared helper modules
        if not helper.name.startswith("test_"):
            shutil.copy2(helper, work / "tests" / helper.name)
    tests = []
    for rel in MODULES[module]:
        if (ROOT / rel).exists():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            for helper in (ROOT / rel).parent.glob("*.py"):  # the subpackage's own helpers
                if not helper.name.startswith("test_"):
                    shutil.copy2(helper, (work / rel).parent / helper.name)
            shutil.copy2(ROOT / rel, work / rel)
            tests.append(rel)
        else:
            print(f"  note: {rel} does not exist; not used for {module}")
    for rel in SUPPORT:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, work / rel, ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pytest_ini = dict(pyproject["tool"]["pytest"]["ini_options"])
    pytest_ini["addopts"] = ""  # no -ra noise; mutmut adds -x -q -p no:randomly itself
    base = dict(pyproject["tool"].get("mutmut", {}))
    mutmut_cfg = {
        **{k: v for k, v in base.items() if k in ("pytest_add_cli_args", "timeout_multiplier")},
        "source_paths": [f"src/{PACKAGE}"],
        "only_mutate": [f"src/{PACKAGE}/{module_path(module)}.py"],
        "pytest_add_cli_args_test_selection": tests,
        "also_copy": [rel for rel in SUPPORT if (ROOT / rel).exists()],
        "use_git_change_detection": False,
        "timeout_constant": 1.0,
    }
    (work / "pyproject.toml").write_text(
        _toml_table("tool.pytest.ini_options", pytest_ini)
        + "\n"
        + _toml_table("tool.mutmut", mutmut_cfg)
    )
    return tests


def _mutmut(work: Path) -> Path:
    exe = Path(sys.executable).with_name("mutmut")
    if not exe.exists():
        sys.exit("mutmut is not installed in this interpreter's environment (mutmut==3.8.1)")
    return exe


def generate_mutants(work: Path, module: str) -> list[str]:
    """Let mutmut write the mutated copy of ``module``; returns every mutant's name."""
    code = (
        "from mutmut.__main__ import copy_src_dir, copy_also_copy_files, create_mutants\n"
        "copy_src_dir(); copy_also_copy_files(); create_mutants(1)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=work, check=True, capture_output=True)
    meta = work / "mutants" / "src" / PACKAGE / f"{module_path(module)}.py.meta"
    return sorted(json.loads(meta.read_text())["exit_code_by_key"], key=_natural)


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def collect(work: Path, module: str) -> dict[str, dict]:
    """Status, duration and diff of every mutant run in ``work`` (read with mutmut's own code)."""
    code = r"""
import json, sys
from pathlib import Path
from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
path = Path(sys.argv[1])
m = SourceFileMutationData(path=path)
m.load()
out = {}
for k, v in m.exit_code_by_key.items():
    if v is None:
        continue
    st = status_by_exit_code[v]
    diff = get_diff_for_mutant(k, path=path) if st != "killed" else ""
    out[k] = {"status": st, "seconds": m.durations_by_key.get(k), "diff": diff}
print(json.dumps(out))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code, f"src/{PACKAGE}/{module_path(module)}.py"],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout)


# ----------------------------------------------------------------------------- constants pass


def constant_mutants(source: str) -> list[tuple[int, int, int, int, str, str, str]]:
    """Mutations of module-level constants mutmut does not reach.

    Returns ``(lineno, col, end_lineno, end_col, name, old_text, new_text)`` per mutant.
    """
    tree = ast.parse(source)
    out = []

    def text(node) -> str:
        return ast.get_source_segment(source, node) or ""

    def visit_literals(node, name):
        if isinstance(node, ast.Constant):
            v = node.value
            old = text(node)
            if isinstance(v, bool):
                out.append((node, name, old, repr(not v)))
            elif isinstance(v, (int, float)):
                out.append((node, name, old, repr(v + 1)))
                if isinstance(v, float) and 0.0 < v < 1.0:
                    # an order of magnitude: 0.99 -> 0.9 (distance to 1 times 10), 1e-9 -> 1e-8
                    w = 1.0 - (1.0 - v) * 10.0 if v > 0.5 else v * 10.0
                    out.append((node, name, old, repr(round(w, 12))))
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            for e in node.elts:
                visit_literals(e, name)
        elif isinstance(node, ast.Dict):
            for key, val in zip(node.keys, node.values, strict=True):
                named = isinstance(key, ast.Constant)
                visit_literals(val, f"{name}[{key.value!r}]" if named else name)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant):
            visit_literals(node.operand, name)

    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            out.append((value, target.id, text(value), json.dumps("XX" + value.value + "XX")))
        else:
            visit_literals(value, target.id)
    return [
        (n.lineno, n.col_offset, n.end_lineno, n.end_col_offset, name, old, new)
        for n, name, old, new in out
    ]


def apply_mutant(source: str, m: tuple) -> str:
    lineno, col, end_lineno, end_col, _, _, new = m
    lines = source.splitlines(keepends=True)
    assert lineno == end_lineno, "literals span one line"
    line = lines[lineno - 1].encode()
    lines[lineno - 1] = (line[:col] + new.encode() + line[end_col:]).decode()
    return "".join(lines)


def run_constants(work: Path, module: str, tests: list[str], timeout: float) -> dict[str, dict]:
    path = work / "src" / PACKAGE / f"{module_path(module)}.py"
    source = path.read_text()
    results = {}
    env = dict(os.environ, PYTHONPATH=str(work / "src"), PYTHONDONTWRITEBYTECODE="1")
    base = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly"]
    base += ["-p", "no:cacheprovider", "--rootdir", str(work), *tests]
    clean = subprocess.run(base, cwd=work, env=env, capture_output=True, text=True)
    if clean.returncode != 0:
        raise RuntimeError(f"clean tests fail for {module}:\n{clean.stdout[-3000:]}")
    for i, m in enumerate(constant_mutants(source), 1):
        key = f"{PACKAGE}.{module}.<module>__const_{i}"
        path.write_text(apply_mutant(source, m))
        t0 = time.time()
        try:
            proc = subprocess.run(
                base, cwd=work, env=env, capture_output=True, text=True, timeout=timeout
            )
            status = "survived" if proc.returncode == 0 else "killed"
            if proc.returncode == 5:
                status = "no tests"
        except subprocess.TimeoutExpired:
            status = "timeout"
        finally:
            path.write_text(source)
        lineno, _, _, _, name, old, new = m
        diff = f"--- a\n+++ b\n-{name} ... {old}\n+{name} ... {new}\n"
        results[key] = {
            "status": status,
            "seconds": round(time.time() - t0, 2),
            "diff": diff if status != "killed" else "",
            "line": lineno,
            "function": f"<module> {name}",
        }
    return results


# ----------------------------------------------------------------------------- one module


def run_module(module: str, args) -> dict:
    work = Path(args.workdir) / module
    t0 = time.time()
    print(f"[{module}] scratch copy in {work}")
    tests = make_scratch(module, work)
    if not tests:
        print(f"[{module}] no test files: skipped")
        return {}
    names = generate_mutants(work, module)
    chosen = names
    sample = DEFAULT_SAMPLE.get(module, 0) if args.sample is None else args.sample
    if sample and len(names) > sample:
        chosen = sorted(random.Random(args.seed).sample(names, sample), key=_natural)
    print(f"[{module}] {len(names)} mutants, running {len(chosen)} against {', '.join(tests)}")
    log = work / "mutmut.log"
    cmd = [str(_mutmut(work)), "run", "--max-children", str(args.jobs)]
    # All names fit on the command line (a few thousand at most); without a sample no names.
    cmd += chosen if chosen is not names else []
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=work, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"mutmut failed for {module} (log {log}):\n{tail}")
    results = collect(work, module)
    missing = set(chosen) - set(results)
    if missing:
        raise RuntimeError(f"{len(missing)} chosen mutants have no result, e.g. {min(missing)}")
    for key, r in results.items():
        r["function"] = function_of(key)
    if not args.no_constants:
        const = run_constants(work, module, tests, args.const_timeout)
        print(f"[{module}] {len(const)} module-constant mutants")
        results.update(const)
    equivalents = load_equivalents()
    for r in results.values():
        r["change"] = change_of(r.pop("diff")) if r.get("diff") else ""
        r["equivalent"] = (
            equivalent_reason(module, r["function"], r["change"], equivalents)
            if r["status"] in UNDETECTED
            else ""
        )
    record = {
        "module": module,
        "date": dt.date.today().isoformat(),
        "commit": git_commit(),
        "tests": tests,
        "mutants_in_module": len(names),
        "sample": sample if chosen is not names else 0,
        "seed": args.seed,
        "minutes": round((time.time() - t0) / 60.0, 1),
        "mutants": {k: results[k] for k in sorted(results, key=_natural)},
    }
    record.update(score(record))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{module}.json").write_text(json.dumps(record, indent=1) + "\n")
    if args.label:
        history_path = RESULTS_DIR / "history.json"
        history = json.loads(history_path.read_text()) if history_path.exists() else []
        keep = ("module", "date", "commit", "tests", "sample", "seed", "run", "detected")
        keep += ("undetected", "equivalent", "raw_score", "score")
        history.append({"label": args.label} | {k: record[k] for k in keep})
        history_path.write_text(json.dumps(history, indent=1) + "\n")
    print(
        f"[{module}] {record['detected']}/{record['run']} killed, {record['equivalent']} "
        f"equivalent, score {record['score']:.1%} (raw {record['raw_score']:.1%}), "
        f"{record['minutes']} min"
    )
    return record


def score(record: dict) -> dict:
    ms = record["mutants"].values()
    run = [m for m in ms if m["status"] in DETECTED | UNDETECTED]
    detected = sum(m["status"] in DETECTED for m in run)
    equivalent = sum(bool(m.get("equivalent")) for m in run)
    undetected = len(run) - detected
    denominator = len(run) - equivalent
    return {
        "run": len(run),
        "detected": detected,
        "undetected": undetected,
        "equivalent": equivalent,
        "raw_score": detected / len(run) if run else float("nan"),
        "score": detected / denominator if denominator else float("nan"),
    }


# ----------------------------------------------------------------------------- report


def render_report() -> str:
    records = []
    for module in MODULES:
        p = RESULTS_DIR / f"{module}.json"
        if p.exists():
            records.append(json.loads(p.read_text()))
    equivalents = load_equivalents()
    out = [
        "# Mutation testing",
        "",
        "Written by `tools/mutation.py`; run by hand, not in CI:",
        "",
        "    make mutation                                  # every module, all mutants",
        "    make mutation MODULES='gsm data' JOBS=2        # some modules",
        "    make mutation MODULES=theory SAMPLE=400        # a fixed random sample (seed 0)",
        "",
        "**Tool.** mutmut 3.8.1 (pinned in the requirements), one module at a time, in a",
        "scratch copy under /tmp (src/, tests/conftest.py, the module's mapped unit tests, the",
        "config files they read, and a pyproject.toml whose `[tool.mutmut]` mutates only that",
        "module).",
        "src-layout: mutmut puts `mutants/src` first on `sys.path` and removes `src/` (where the",
        "editable install points), so the tests import the mutated package; conftest.py is copied",
        "with the tests. mutmut runs the mapped tests once to learn which test reaches which",
        "function, then forks one process per mutant and runs only those tests (`-x`), so a mutant",
        "costs a fraction of a second. It mutates code inside functions and methods only, not",
        "module-level statements nor functions with decorators (other than staticmethod and",
        "classmethod); our own pass (`<module>__const_N` rows) mutates the numbers, booleans and",
        "strings of module-level assignments (n -> n+1, 0.99 -> 0.9, 1e-9 -> 1e-8, True <-> False,",
        "'s' -> 'XXsXX') and runs the mapped tests in a fresh pytest each.",
        "",
        "**Score** = killed / (run - equivalent); *raw* = killed / run. Timeouts and crashes count",
        "as killed; a mutant that no mapped test reaches counts as a survivor. Equivalent mutants",
        "(no observable change) are listed in `tools/mutation_equivalents.toml` with the reason;",
        "every other survivor is listed below with its diff. Where a module's full run is too",
        "long for routine use (theory.py: 1353 mutants, ~20 min on 2 shared cores; calibrate.py:",
        "1328 mutants, ~1 s each with its scripted tests; llc.py, whose unit tests run SGLD for",
        "~40 s), the row says it is a fixed random",
        "sample (`random.Random(seed).sample` over the sorted mutant names). A sample whose",
        "survivors were then killed by new tests overstates the module's score; the history",
        "lists, where run, a second sample (another seed) taken before looking at its survivors.",
        "",
        "| module | date | commit | mutants in module | run | killed | survivors | equivalent "
        "| score | raw | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    tot = {"run": 0, "detected": 0, "undetected": 0, "equivalent": 0}
    for r in records:
        for k in tot:
            tot[k] += r[k]
        sampled = f" (sample of {r['sample']}, seed {r['seed']})" if r["sample"] else ""
        out.append(
            f"| {r['module']} | {r['date']} | {r['commit']} | {r['mutants_in_module']} | "
            f"{r['run']}{sampled} | {r['detected']} | {r['undetected'] - r['equivalent']} | "
            f"{r['equivalent']} | {r['score']:.1%} | {r['raw_score']:.1%} | {r['minutes']} |"
        )
    if records:
        den = tot["run"] - tot["equivalent"]
        out.append(
            f"| **all** | | | | {tot['run']} | {tot['detected']} | "
            f"{tot['undetected'] - tot['equivalent']} | {tot['equivalent']} | "
            f"{tot['detected'] / den:.1%} | {tot['detected'] / tot['run']:.1%} | |"
        )
    history_path = RESULTS_DIR / "history.json"
    if history_path.exists():
        out += ["", "## History (runs recorded with `--label`)", ""]
        out += ["| label | module | date | commit | run | killed | equivalent | score | raw |"]
        out += ["|---|---|---|---|---|---|---|---|---|"]
        for h in json.loads(history_path.read_text()):
            out.append(
                f"| {h['label']} | {h['module']} | {h['date']} | {h['commit']} | {h['run']} | "
                f"{h['detected']} | {h['equivalent']} | {h['score']:.1%} | {h['raw_score']:.1%} |"
            )
    out += ["", "## Survivors", ""]
    for r in records:
        surv = [(k, m) for k, m in r["mutants"].items() if m["status"] in UNDETECTED]
        n_eq = sum(bool(m["equivalent"]) for _, m in surv)
        out.append(
            f"### {r['module']} ({len(surv) - n_eq} survivors, {n_eq} equivalent; "
            f"tests: {', '.join(r['tests'])})"
        )
        out.append("")
        if not surv:
            out += ["None.", ""]
            continue
        for k, m in surv:
            status = f"equivalent: {m['equivalent']}" if m["equivalent"] else f"**{m['status']}**"
            change = m["change"].replace("`", "'")
            out.append(f"- `{k.rsplit('.', 1)[-1]}` ({m['function']}): `{change}` -- {status}")
        out.append("")
    out += [f"({len(equivalents)} entries in tools/mutation_equivalents.toml.)", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", help=f"modules (default: all of {list(MODULES)})")
    ap.add_argument(
        "--sample",
        type=int,
        default=None,
        help=f"mutants per module (0 = all; default: all, except {DEFAULT_SAMPLE})",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample")
    ap.add_argument("--jobs", type=int, default=1, help="mutmut worker processes")
    ap.add_argument("--workdir", default="/tmp/grokking-mutation", help="scratch directory")
    ap.add_argument("--label", default="", help="also append the scores to the history")
    ap.add_argument("--no-constants", action="store_true", help="skip the module-constant pass")
    ap.add_argument("--const-timeout", type=float, default=300.0, help="s per constant mutant")
    ap.add_argument("--report-only", action="store_true", help="only rebuild docs/mutation.md")
    args = ap.parse_args(argv)
    unknown = set(args.modules) - set(MODULES)
    if unknown:
        ap.error(f"unknown modules {sorted(unknown)}; choose from {list(MODULES)}")
    if not args.report_only:
        for module in args.modules or MODULES:
            if not (ROOT / "src" / PACKAGE / f"{module_path(module)}.py").exists():
                print(f"[{module}] src/{PACKAGE}/{module_path(module)}.py does not exist: skipped")
                continue
            run_module(module, args)
    REPORT.write_text(render_report())
    print(f"wrote {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
