"""config/README.md documents every key of the schema's sampler and train sections."""

import re
from pathlib import Path

from grokking_llc.core.settings import load_schema

DOC = (Path(__file__).resolve().parents[1] / "config" / "README.md").read_text()


def documented() -> set[str]:
    return set(re.findall(r"^\| `(\w+)` \|", DOC, re.M))


def test_every_sampler_and_train_key_has_a_row():
    schema = load_schema()["properties"]
    sampler = schema["llc"]["properties"]["samplers"]["additionalProperties"]["properties"]
    missing = (set(sampler) | set(schema["train"]["properties"])) - documented()
    assert not missing, f"config/README.md lacks rows for {sorted(missing)}"
    assert {"refine", "kind", "target_ess", "every_by_study"} <= documented()
