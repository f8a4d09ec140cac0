"""Config edges the mutation run (docs/mutation.md) found unchecked: the frozen sampler hash base
against the paper's sampler written out (SPEC section 4), the integral-float cut of the
canonical JSON at 2^53, every message of the sampler's range checks, default filling and
merging that never alias or modify their inputs, a custom schema reaching the rules beyond the
schema, and the ``--config`` value reader. Expected values are literals, SHA-256 of hand-written
JSON, or read straight from the schema file."""

import copy
import hashlib
import json
import math
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from grokking_llc.core import settings as S
from grokking_llc.core.settings import ConfigError, SamplerConfig
from grokking_llc.pipeline import config as C

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "workflow" / "schemas" / "config.schema.yaml"
TEST_CONFIG = ROOT / ".test" / "config" / "config.yaml"

# SPEC section 4's paper sampler, plus the later keys at the values that reproduce what came
# before them (config.py: the hash base is frozen; a value there is never edited).
PAPER_SAMPLER = dict(
    lr=5e-4, nbeta=None, localization=5.0, num_chains=3, num_burnin_steps=100, num_draws=500,
    batch_size=128, weight_decay=0.0, num_init_loss_batches=32, seed=0, kind="sgld",
    burn_in="fixed", max_steps=None, target_ess=400.0, min_steps=None,
)  # fmt: skip


def sha8(blob: str) -> str:
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def raw_schema() -> dict:
    with open(SCHEMA_FILE) as fh:
        return yaml.safe_load(fh)


# ----------------------------------------------------------------------------- names


def test_the_paper_sampler_is_named_by_the_empty_object():
    cfg = SamplerConfig(**PAPER_SAMPLER)
    assert S.sampler_id("devinterp", cfg) == "devinterp-" + sha8("{}")
    # the stride stays in the base at 1, so passing it at 1 renames nothing
    assert S.sampler_id("devinterp", cfg, every=1) == "devinterp-" + sha8("{}")
    assert S.sampler_id("devinterp", cfg, every=2) == "devinterp-" + sha8('{"every":2}')
    assert S.sampler_id("fast", cfg) == "fast-" + sha8('{"backend":"fast"}')


@pytest.mark.parametrize("key", sorted(PAPER_SAMPLER))
def test_one_setting_off_the_paper_sampler_names_only_that_setting(key):
    value = PAPER_SAMPLER[key]
    if value is None:
        other = 7
    elif isinstance(value, str):
        other = "rmsprop" if key == "kind" else "auto"
    else:
        other = type(value)(1) if value == 0 else value * 2
    cfg = SamplerConfig(**{**PAPER_SAMPLER, key: other})
    blob = json.dumps({key: S._canonical(other)}, separators=(",", ":"))
    assert S.sampler_id("devinterp", cfg) == "devinterp-" + sha8(blob)


def test_integral_floats_become_ints_only_below_two_to_the_53():
    assert S.short_hash({"x": 2.0**53 - 1}, {}) == sha8('{"x":9007199254740991}')
    assert S.short_hash({"x": 2.0**53}, {}) == sha8('{"x":9007199254740992.0}')
    assert S.short_hash({"x": -(2.0**53)}, {}) == sha8('{"x":-9007199254740992.0}')
    assert S.short_hash({"x": 2.0**54}, {}) == sha8('{"x":1.8014398509481984e+16}')


# ----------------------------------------------------------------------------- range checks


@pytest.mark.parametrize(
    "value, prop, message",
    [
        (None, {}, "x: must not be null"),
        (None, {"type": "number"}, "x: must not be null"),
        (math.inf, {"type": "number"}, "x: must be finite, got inf"),
        (-math.inf, {"type": ["number", "null"]}, "x: must be finite, got -inf"),
        (2.5, {"type": "integer"}, "x: must be an integer, got 2.5"),
        (2.5, {"type": ["integer", "null"]}, "x: must be an integer, got 2.5"),
        (1.5, {"type": "number", "maximum": 1}, "x: must be <= 1, got 1.5"),
        (-1, {"type": "integer", "minimum": 0}, "x: must be >= 0, got -1"),
        (0.0, {"type": "number", "exclusiveMinimum": 0}, "x: must be > 0, got 0.0"),
    ],
)
def test_each_limit_refuses_with_its_message(value, prop, message):
    with pytest.raises(ConfigError) as err:
        S._check_limits("x", value, prop)
    assert str(err.value) == message


@pytest.mark.parametrize(
    "value, prop",
    [
        (None, {"type": ["integer", "null"]}),
        (2.0, {"type": "integer"}),
        (1, {"type": "number", "maximum": 1}),
        (1.0, {"type": "number", "maximum": 1, "minimum": 1}),
        ("text", {"type": "string"}),
        (True, {"type": "number", "maximum": 0}),  # booleans are not numbers here
    ],
)
def test_values_at_the_limits_pass(value, prop):
    S._check_limits("x", value, prop)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"num_chains": 2.5}, "sampler.num_chains: must be an integer, got 2.5"),
        ({"lr": math.nan}, "sampler.lr: must be finite, got nan"),
        ({"localization": None}, "sampler.localization: must not be null"),
        ({"bogus": 1, "zeta": 2}, "sampler: unknown key(s) ['bogus', 'zeta']"),
        ({"batch_size": 1}, "sampler.nbeta: the default m/ln(m) needs batch_size >= 2"),
    ],
)
def test_sampler_settings_refused_with_their_message(settings, message):
    with pytest.raises(ConfigError) as err:
        SamplerConfig.from_mapping(settings)
    assert str(err.value) == message


@pytest.mark.parametrize("key", ["kind", "burn_in"])
def test_sampler_enums_refused_with_the_choices_from_the_schema(key):
    choices = raw_schema()["properties"]["llc"]["properties"]["samplers"]["additionalProperties"][
        "properties"
    ][key]["enum"]
    with pytest.raises(ConfigError) as err:
        SamplerConfig.from_mapping({key: "adam"})
    assert str(err.value) == f"sampler.{key}: must be one of {choices}"
    for choice in choices:
        assert getattr(SamplerConfig.from_mapping({key: choice}), key) == choice


def test_default_nbeta_at_the_smallest_batch_and_meta_keys_ignored():
    cfg = SamplerConfig.from_mapping(
        {"batch_size": 2, "backend": "fast", "calibration": None, "studies": ["a"],
         "every": 3, "every_by_study": {"a": 0}}
    )  # fmt: skip
    assert cfg.resolved_nbeta == pytest.approx(2 / math.log(2))  # SPEC section 4: m / ln m
    assert SamplerConfig.from_mapping(cfg) is cfg
    with pytest.raises(ConfigError, match=r"batch_size >= 2"):
        _ = SamplerConfig(batch_size=1, nbeta=None).resolved_nbeta


def test_sampler_to_dict_is_every_field():
    cfg = SamplerConfig(**PAPER_SAMPLER)
    assert cfg.to_dict() == PAPER_SAMPLER
    assert [f.name for f in fields(SamplerConfig)] == list(cfg.to_dict())
    assert cfg.num_steps == 600


# ----------------------------------------------------------------------------- defaults


def test_schema_defaults_are_the_file_defaults_and_fresh_copies():
    raw = raw_schema()["properties"]
    train = {k: v["default"] for k, v in raw["train"]["properties"].items() if "default" in v}
    samp = raw["llc"]["properties"]["samplers"]["additionalProperties"]["properties"]
    samp = {k: v["default"] for k, v in samp.items() if "default" in v}
    assert S.schema_defaults("train") == train
    assert S.schema_defaults("llc", "samplers", "*") == samp
    first = S.schema_defaults("train")
    first["model_options"]["x"] = 1
    assert S.schema_defaults("train")["model_options"] == {}
    nested = S.schema_defaults()  # top level: studies' default is {"baseline": {}}
    assert nested["studies"] == raw["studies"]["default"] == {"baseline": {}}
    nested["studies"]["baseline"]["p"] = 7
    S.schema_defaults("llc")["samplers"]["paper"]["lr"] = 1.0
    assert S.schema_defaults()["studies"] == {"baseline": {}}
    assert S.schema_defaults("llc")["samplers"] == {"paper": {}}


def test_load_schema_is_a_deep_copy():
    first = S.load_schema()
    first["properties"]["train"]["properties"]["p"]["default"] = -1
    first["properties"]["studies"]["default"]["baseline"]["p"] = -1
    again = S.load_schema()
    assert again["properties"]["train"]["properties"]["p"]["default"] == 53
    assert again["properties"]["studies"]["default"] == {"baseline": {}}


def test_fill_defaults_keeps_named_and_additional_properties_apart():
    schema = {
        "type": "object",
        "properties": {
            "named": {"type": "object", "properties": {"x": {"default": 1}}},
            "box": {"type": "object", "default": {"inner": {"deep": [1]}}},
        },
        "additionalProperties": {"type": "object", "properties": {"y": {"default": [2]}}},
    }
    before = copy.deepcopy(schema)
    out = C._fill_defaults({"named": {}, "a": {}, "b": {}}, schema)
    assert out == {"named": {"x": 1}, "a": {"y": [2]}, "b": {"y": [2]},
                   "box": {"inner": {"deep": [1]}}}  # fmt: skip
    out["a"]["y"].append(3)
    out["box"]["inner"]["deep"].append(3)
    assert out["b"] == {"y": [2]}  # no two entries share a default
    assert schema == before  # and the schema is never written to
    assert C._fill_defaults(5, schema) == 5
    assert C._fill_defaults([{}], schema) == [{}]


def test_a_non_object_where_an_object_belongs_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        C.validate_config({"train": 5})
    assert str(err.value) == "config error at train: 5 is not of type 'object'"


def test_validate_config_leaves_the_callers_config_alone():
    cfg = {"llc": {"samplers": {"s": {"lr": 1e-3}}}, "train": {"lr": 1e-3}}
    before = copy.deepcopy(cfg)
    out = C.validate_config(cfg)
    assert cfg == before
    assert out["llc"]["samplers"]["s"]["num_chains"] == 3


def test_the_first_error_is_the_one_at_the_smallest_path():
    with pytest.raises(ConfigError) as err:
        C.validate_config({"train": {"p": "x", "lr": -1}, "llc": {"every": 0}})
    assert str(err.value) == "config error at llc.every: 0 is less than the minimum of 1"
    with pytest.raises(ConfigError) as err:
        C.validate_config({"train": {"p": "x", "lr": -1}})
    assert str(err.value).startswith("config error at train.lr: ")
    with pytest.raises(ConfigError) as err:
        C.validate_config({"bogus": 1})
    assert str(err.value).startswith("config error at <config>: Additional properties")


def test_a_custom_schema_reaches_the_rules_beyond_the_schema(tmp_path):
    """Width >= 2 in a custom schema: the study's run is refused by check_config, which must be
    given that schema (the default one allows width 1)."""
    schema = raw_schema()
    schema["properties"]["train"]["properties"]["width"]["minimum"] = 2
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(schema))
    cfg = {"studies": {"baseline": {"width": 1}}}
    assert C.validate_config(cfg)["studies"] == {"baseline": {"width": 1}}
    with pytest.raises(ConfigError, match=r"studies\.baseline\.width: must be >= 2, got 1"):
        C.validate_config(cfg, path)
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"studies\.baseline\.width: must be >= 2"):
        C.load_config(cfg_file, path)


# ----------------------------------------------------------------------------- files


def test_deep_update_merges_mappings_and_copies_values():
    extra = {"a": {"y": {"w": 3}}, "b": {"c": [1]}, "d": 5}
    out = C.deep_update({"a": {"x": 1, "y": {"z": 2}}, "d": {"e": 1}}, extra)
    assert out == {"a": {"x": 1, "y": {"z": 2, "w": 3}}, "b": {"c": [1]}, "d": 5}
    extra["b"]["c"].append(2)
    extra["a"]["y"]["w"] = 4
    assert out["b"] == {"c": [1]} and out["a"]["y"]["w"] == 3


def test_read_config_files_skips_empty_files_and_refuses_lists(tmp_path):
    empty, one, bad = tmp_path / "e.yaml", tmp_path / "o.yaml", tmp_path / "b.yaml"
    empty.write_text("# nothing here\n")
    one.write_text("train:\n  p: 7\n")
    bad.write_text("- 1\n- 2\n")
    assert C.read_config_files([empty]) == {}
    assert C.read_config_files([one, empty]) == {"train": {"p": 7}}
    with pytest.raises(ConfigError) as err:
        C.read_config_files([one, bad])
    assert str(err.value) == f"config error in {bad}: the top level must be a mapping"


def test_cli_values_are_read_as_yaml_scalars_only():
    raw = {
        "a": "1.0e-3", "b": ["2", "x", "null"], "c": {"d": "true", "e": {"f": "-3"}},
        "g": "[1, 2]", "h": "{k: 1}", "i": "key: [", "j": 5, "k": "word",
    }  # fmt: skip
    assert C._cli_value(raw) == {
        "a": 0.001, "b": [2, "x", None], "c": {"d": True, "e": {"f": -3}},
        "g": "[1, 2]", "h": "{k: 1}", "i": "key: [", "j": 5, "k": "word",
    }  # fmt: skip


def test_load_workflow_config_takes_the_given_files_only_then_the_overrides(tmp_path):
    given = C.load_workflow_config([TEST_CONFIG], {"train": {"lr": "3.0e-3"}})
    plain = C.load_config(TEST_CONFIG)
    assert given["train"]["lr"] == 0.003
    assert {**given, "train": {**given["train"], "lr": plain["train"]["lr"]}} == plain
    # no file: config/config.yaml, exactly
    assert C.load_workflow_config() == C.load_config(ROOT / "config" / "config.yaml")
    assert C.load_workflow_config((), None) == C.load_workflow_config([])
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as err:
        C.load_workflow_config([TEST_CONFIG, missing])
    assert str(err.value) == f"config file {missing} does not exist"
