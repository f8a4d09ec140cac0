"""Code versions are derived from import closures: an edit to a module reruns exactly the rules
whose entry point can import it (grokking_llc.pipeline.versions)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grokking_llc.pipeline import versions

PACKAGE = Path(versions.__file__).resolve().parents[1]


STAGES = sorted(
    p.stem for p in (PACKAGE / "pipeline" / "stages").glob("*.py") if p.stem != "__init__"
)


MODULES = sorted(versions.import_graph())


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory):
    """A copy of the package whose modules the test edits."""
    root = tmp_path_factory.mktemp("pkg")
    shutil.copytree(PACKAGE, root / "grokking_llc", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _versions_in(root: Path) -> dict[str, str]:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from grokking_llc.pipeline import versions as v; import json;"
        "print(json.dumps({s: v.code_version(s) for s in sys.argv[2:]}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root), *STAGES],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    import json

    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def versions_before(package_copy):
    return _versions_in(package_copy)


def test_every_stage_module_is_an_entry_point_with_a_version():
    assert {"split", "train", "llc", "theory", "summary", "figures"} <= set(STAGES)
    for stage in STAGES:
        assert len(versions.code_version(stage)) == 12


def test_closure_is_a_superset_of_what_python_actually_imports():
    """Import each entry point in a fresh interpreter: every package module Python loads (top
    level only; function-local imports are in the AST closure too) must be in the closure."""
    code = (
        "import sys, importlib; "
        "importlib.import_module(f'grokking_llc.pipeline.stages.{sys.argv[1]}');"
        "print('\\n'.join(m for m in sys.modules if m.startswith('grokking_llc')))"
    )
    for stage in STAGES:
        out = subprocess.run(
            [sys.executable, "-c", code, stage], capture_output=True, text=True, check=True
        )
        loaded = set(out.stdout.split())
        closure = versions.import_closure(f"grokking_llc.pipeline.stages.{stage}")
        assert loaded <= closure, (stage, loaded - closure)


def test_known_edges():
    llc = versions.stage_modules("llc")
    assert {
        "grokking_llc.sampling.llc",
        "grokking_llc.sampling.sgld",
        "grokking_llc.sampling.diagnostics",
    } <= set(llc)
    assert "grokking_llc.core.architectures.transformer" in llc  # dynamic: build_model(kind)
    assert "grokking_llc.core.io" not in llc  # neutral: how bytes reach the disk
    assert "grokking_llc.science.gsm" not in versions.stage_modules("split")
    assert "grokking_llc.sampling.sgld" not in versions.stage_modules("summary")


@pytest.mark.parametrize("module", MODULES)
def test_an_edit_reruns_exactly_the_stages_that_import_it(module, package_copy, versions_before):
    """Append a comment to ``module`` in a copy of the package: the stages whose version changes
    are exactly those whose closure holds it (none for a neutral module)."""
    rel = Path(*module.split(".")[1:])
    path = package_copy / "grokking_llc" / rel
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    before = versions_before
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        after = _versions_in(package_copy)
    finally:
        path.write_text(original)
    changed = {s for s in STAGES if before[s] != after[s]}
    expected = {
        s
        for s in STAGES
        if module in versions.import_closure(f"grokking_llc.pipeline.stages.{s}")
        and module not in versions.NEUTRAL_MODULES
    }
    assert changed == expected


@pytest.mark.parametrize(
    ("module", "reruns"),
    [
        # a figure module or the figure part of the plan: plot jobs only (the plan reaches no
        # stage's closure at all; what it decides reaches jobs as params)
        ("grokking_llc.figures.llc_scaling", {"figures"}),
        ("grokking_llc.figures._common", {"figures"}),
        ("grokking_llc.pipeline.figure_plan", set()),
        ("grokking_llc.pipeline.plan", set()),
        ("grokking_llc.pipeline.validation", set()),
        # a claim's verdict rule: the scorecard only
        ("grokking_llc.science.claims", {"claims"}),
        # what the paper reports: the figures that quote it and the scorecard
        ("grokking_llc.science.paper", {"figures", "claims"}),
    ],
)
def test_an_edit_reruns_the_stages_of_its_layer(module, reruns):
    """Issue 22: code versions follow the layers. Which stages' versions an edit changes, by
    name (the parametrised copy-and-edit test above checks that versions follow closures)."""
    changed = {
        s
        for s in STAGES
        if module in versions.stage_modules(s) and module not in versions.NEUTRAL_MODULES
    }
    assert changed == reruns


def test_an_edit_to_the_sampler_reruns_no_training():
    for module in ("sgld", "llc", "calibrate", "validity", "diagnostics", "mala", "chosen"):
        name = f"grokking_llc.sampling.{module}"
        stages = {s for s in STAGES if name in versions.stage_modules(s)}
        assert "train" not in stages and "split" not in stages, (name, stages)
    assert "grokking_llc.sampling.sgld" in versions.stage_modules("llc")
    assert "grokking_llc.sampling.calibrate" not in versions.stage_modules("llc")
