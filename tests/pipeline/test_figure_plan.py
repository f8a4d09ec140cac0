"""grokking_llc.pipeline.figure_plan: figures are plug-ins (issue 22).

A figure is one module under ``grokking_llc/figures`` plus its entry in the schema's
``figures``; the plan finds it through the catalogue (read from the module's ``@register``
decorator) and makes its jobs by the kind of data it reads, with no figure name written in the
plan. Shown with a test-only figure added to a copy of the package and schema."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

PROBE_MODULE = '''"""A test-only figure: final LLC against p, one point per run."""

import matplotlib.pyplot as plt

from grokking_llc.figures.registry import register


@register("probe", stem="fig_probe", reads="runs", per_sampler=True)
def draw_probe(runs, params):
    """probe"""
    fig, ax = plt.subplots()
    ax.plot(runs["p"], runs["final_llc"], "o", gid="probe_points")
    return fig
'''

PROBE_SCHEMA = {
    "type": "object",
    "description": "A test-only figure.",
    "additionalProperties": False,
    "default": {},
    "properties": {"study": {"type": ["string", "null"], "default": None, "description": "s"}},
}

CHECK = """
import json, sys
import pandas as pd
from grokking_llc.figures import REGISTRY
from grokking_llc.pipeline.config import read_config_files, validate_config
from grokking_llc.pipeline.plan import build_plan

cfg = read_config_files([sys.argv[1]])
cfg["figures"]["probe"] = {"study": "over_p"}
plan = build_plan(validate_config(cfg))
jobs = {n: j for n, j in plan.figures.items() if j.key == "probe"}
spec = REGISTRY["probe"]
runs = pd.DataFrame({"p": [7, 11], "final_llc": [1.0, 2.0]})
fig = spec.draw(runs, {})
points = [ln for ln in fig.axes[0].lines if ln.get_gid() == "probe_points"]
print(json.dumps({
    "jobs": sorted(jobs),
    "inputs": [j.input_files() for j in jobs.values()],
    "study": [j.params()["study"] for j in jobs.values()],
    "drawn": points[0].get_xydata().tolist(),
}))
"""


def test_a_new_figure_is_one_module_and_its_schema_entry(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "workflow" / "schemas", root / "workflow" / "schemas")
    (root / "src" / "grokking_llc" / "figures" / "probe.py").write_text(PROBE_MODULE)
    schema_path = root / "workflow" / "schemas" / "config.schema.yaml"
    schema = yaml.safe_load(schema_path.read_text())
    schema["properties"]["figures"]["properties"]["probe"] = PROBE_SCHEMA
    schema_path.write_text(yaml.safe_dump(schema, sort_keys=False))
    out = subprocess.run(
        [sys.executable, "-c", CHECK, str(REPO / ".test" / "config" / "config.yaml")],
        env={"PYTHONPATH": str(root / "src"), "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, cwd=root,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # one job per sampler that estimates the study, each reading the runs table
    assert got["jobs"] and all(name.endswith("/fig_probe") for name in got["jobs"])
    assert all(set(i) == {"runs"} for i in got["inputs"])
    assert set(got["study"]) == {"over_p"}
    assert got["drawn"] == [[7.0, 1.0], [11.0, 2.0]]


def test_without_its_schema_entry_a_figure_key_is_refused():
    from grokking_llc.core.settings import ConfigError
    from grokking_llc.pipeline.config import read_config_files, validate_config

    cfg = read_config_files([REPO / ".test" / "config" / "config.yaml"])
    cfg["figures"]["probe"] = {"study": "over_p"}
    try:
        validate_config(cfg)
    except ConfigError as err:
        assert "probe" in str(err)
    else:
        raise AssertionError("an unknown figure key was accepted")


def test_grid_overrides_cross_the_entry_s_swept_keys():
    """A grid figure's entry sweeps every list-valued key but study and sampler: B.2 every
    localisation at each step size; B.1 multiples of the sampler's resolved nbeta (its default
    m / ln m when nbeta is unset, SPEC section 4); a new key is swept without plan code."""
    import math

    from grokking_llc.core.settings import SamplerConfig
    from grokking_llc.pipeline.figure_plan import grid_overrides

    b2 = {"study": "s", "sampler": "paper", "localization": [1.0, 5.0], "lr": [1e-4, 1e-3]}
    assert grid_overrides(b2, SamplerConfig()) == [
        {"localization": 1.0, "lr": 1e-4}, {"localization": 5.0, "lr": 1e-4},
        {"localization": 1.0, "lr": 1e-3}, {"localization": 5.0, "lr": 1e-3},
    ]  # fmt: skip
    b1 = {"study": "s", "sampler": "paper", "nbeta_factors": [0.5, 2.0]}
    assert grid_overrides(b1, SamplerConfig(nbeta=10.0)) == [{"nbeta": 5.0}, {"nbeta": 20.0}]
    m = SamplerConfig(nbeta=None, batch_size=128)
    assert grid_overrides(b1, m) == [{"nbeta": 0.5 * 128 / math.log(128)},
                                     {"nbeta": 2.0 * 128 / math.log(128)}]  # fmt: skip
    chains = {"study": "s", "sampler": "paper", "num_chains": [2, 4]}
    assert grid_overrides(chains, SamplerConfig()) == [{"num_chains": 2}, {"num_chains": 4}]
    assert grid_overrides({"study": "s", "sampler": "paper"}, SamplerConfig()) == []
