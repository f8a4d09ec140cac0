"""Config edges the mutation run (docs/mutation.md) found unchecked: the frozen sampler hash base
against the paper's sampler written out (SPEC section 4), the integral-float cut of the
canonical JSON at 2^53, every message of the sampler's range checks, default filling and
merging that never alias or modify their inputs, a custom schema reaching the rules beyond the
schema, and the ``--config`` value reader. Expected values are literals, SHA-256 of hand-written
JSON, or read straight from the schema file."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import yaml
from core.helpers import PAPER_TRAINING, SPEC_4  # the paper's values (SPEC sections 3, 4)

from grokking_llc.core import settings as S
from grokking_llc.core.settings import (
    SAMPLER_HASH_BASE,
    SAMPLER_META_KEYS,
    TRAIN_HASH_BASE,
    ConfigError,
    SamplerConfig,
    TrainConfig,
    load_schema,
    sampler_id,
    short_hash,
)
from grokking_llc.pipeline import config as C
from grokking_llc.pipeline.config import load_config, validate_config
from grokking_llc.pipeline.studies import expand_study

ROOT = Path(__file__).resolve().parents[2]


RUN_ID_PINS = [
    ({}, "quadratic-p53-K1024-44136fa3"),
    ({"p": 23, "width": 256, "lr": 1e-3}, "quadratic-p23-K256-a6ddf2a9"),
    ({"seed": 3, "weight_decay": 0.0}, "quadratic-p53-K1024-ebd3a10f"),
    (
        {
            "model": "transformer",
            "model_options": {"d_model": 64, "n_layers": 1},
            "loss": "cross_entropy",
        },
        "transformer-p53-K1024-d2d7e8fb",
    ),
    ({"train_frac": 0.3, "data_seed": 2, "max_steps": 20_000}, "quadratic-p53-K1024-1ad3e613"),
]


# Runs of config/config.yaml (baseline, transformer, and the first run of four sweeps).
CONFIG_RUN_PINS = {
    "quadratic-p53-K1024-f351264d",  # baseline
    "transformer-p53-K64-172d3d65",
    "quadratic-p53-K256-77f07b52",  # lr_wd
    "quadratic-p23-K256-42e325b2",  # over_p
    "quadratic-p53-K64-9dfe9321",  # over_width
    "quadratic-p23-K256-bfa1b7ea",  # scaling
}


# (backend, sampler overrides) -> hash of the sampler name "<backend>-<hash>".
SAMPLER_HASH_PINS = [
    ("devinterp", {}, "44136fa3"),
    ("fast", {}, "d8c9f689"),
    ("devinterp", {"lr": 1e-3, "nbeta": 10.0}, "9eea10dc"),
    ("fast", {"lr": 1e-3, "nbeta": 10.0}, "11067310"),
    ("devinterp", {"num_chains": 8, "num_draws": 200, "localization": 100.0}, "be9305f6"),
    ("fast", {"num_chains": 8, "num_draws": 200, "localization": 100.0}, "a6590511"),
]


# The sampler's range checks (SPEC section 4: a step size, localisation and weight decay >= 0;
# at least one chain, draw, batch element and initial-loss batch; nbeta > 0 when given).
BAD_SAMPLER_VALUES = [
    ("lr", -1e-3),
    ("localization", -1.0),
    ("weight_decay", -1e-4),
    ("num_chains", 0),
    ("num_draws", 0),
    ("batch_size", 0),
    ("num_init_loss_batches", 0),
    ("num_burnin_steps", -1),
    ("nbeta", 0.0),
    ("nbeta", -2.0),
]


# Smallest values every version of the rules accepts (edges of the ranges above).
EDGE_SAMPLER_VALUES = {
    "num_chains": 1,
    "num_draws": 1,
    "num_burnin_steps": 0,
    "num_init_loss_batches": 1,
    "weight_decay": 0.0,
    "localization": 0.0,
    "nbeta": 1e-9,
    "batch_size": 1,
}


def _sampler_patch(settings: dict) -> tuple[dict, str]:
    """A config that sets the sampler's ``settings``, and the key prefix of its errors (the
    config's layout moves from ``llc.sampler`` to named ``llc.samplers.<name>``)."""
    llc = load_schema()["properties"]["llc"]["properties"]
    if "samplers" in llc:
        return {"llc": {"samplers": {"s": settings}}}, "llc.samplers.s"
    return {"llc": {"sampler": settings}}, "llc.sampler"


SCHEMA_FILE = ROOT / "workflow" / "schemas" / "config.schema.yaml"


TEST_CONFIG = ROOT / ".test" / "config" / "config.yaml"


# SPEC section 4's paper sampler, plus the later keys at the values that reproduce what came
# before them (config.py: the hash base is frozen; a value there is never edited).
PAPER_SAMPLER = {**SPEC_4, "seed": 0, "target_ess": 400.0, "min_steps": None}


def sha8(blob: str) -> str:
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def raw_schema() -> dict:
    with open(SCHEMA_FILE) as fh:
        return yaml.safe_load(fh)


DOC = (Path(__file__).resolve().parents[2] / "config" / "README.md").read_text()


def documented() -> set[str]:
    return set(re.findall(r"^\| `(\w+)` \|", DOC, re.M))


def test_defaults_fill_in():
    cfg = validate_config({})
    assert cfg["train"]["p"] == 53 and cfg["llc"]["samplers"]["paper"]["localization"] == 5.0
    assert cfg["studies"] == {"baseline": {}}


@pytest.mark.parametrize(
    "patch, key, words",
    [
        ({"bogus": 1}, "<config>", "Additional properties"),
        ({"train": {"p": 51}}, "train.p", "prime"),
        ({"train": {"train_frac": 1.2}}, "train.train_frac", "maximum"),
        ({"train": {"lr": -1e-3}}, "train.lr", "minimum"),
        ({"train": {"lr": "1e-4"}}, "train.lr", "not of type 'number'"),
        ({"train": {"max_steps": 50, "checkpoint_every": 100}}, "checkpoint_every", "step budget"),
        ({"train": {"batch_size": 4096}}, "batch_size", "exceeds"),
        ({"studies": {"s": {"lr": [1e-3, -1.0]}}}, "studies.s.lr", "must be > 0"),
        ({"studies": {"s": {"widht": 3}}}, "studies.s", "widht"),
        (
            {"llc": {"samplers": {"paper": {"num_chains": 0}}}},
            "llc.samplers.paper.num_chains",
            "minimum",
        ),
        ({"figures": {"fig3": {"study": "missing"}}}, "figures.fig3.study", "no study"),
        ({"device": "tpu"}, "device", "does not match"),
    ],
)
def test_bad_values_give_one_clear_line(patch, key, words):
    with pytest.raises(ConfigError) as err:
        validate_config(patch)
    msg = str(err.value)
    assert "\n" not in msg and key in msg and words in msg, msg


def test_every_schema_train_key_is_a_field_and_in_the_hash_base():
    props = load_schema()["properties"]["train"]["properties"]
    assert set(props) == set(TrainConfig.__dataclass_fields__) == set(TRAIN_HASH_BASE)
    sampler = load_schema()["properties"]["llc"]["properties"]["samplers"]
    props = sampler["additionalProperties"]["properties"]
    meta = set(SAMPLER_META_KEYS)
    assert meta == {
        "backend", "calibration", "studies", "every", "every_by_study", "refine", "protocol",
    }  # fmt: skip
    assert set(props) - meta == set(SamplerConfig.__dataclass_fields__)
    assert set(SamplerConfig.__dataclass_fields__) | {"backend", "every"} == set(SAMPLER_HASH_BASE)


def test_run_names_stable_and_defaults_left_out():
    base = TrainConfig(**{k: v for k, v in TRAIN_HASH_BASE.items()})
    assert base.run_id.endswith(short_hash({}, {}))  # all at base value -> hash of {}
    # adding an option at its base value renames nothing
    extended = {**base.to_dict(), "new_option": 0}
    assert short_hash(extended, {**TRAIN_HASH_BASE, "new_option": 0}) == short_hash(
        base.to_dict(), TRAIN_HASH_BASE
    )
    # 1.0 and 1 hash alike; a real change renames
    a = TrainConfig(max_steps=1000)
    assert a.run_id == TrainConfig(max_steps=1000.0).run_id  # type: ignore[arg-type]
    assert a.run_id != TrainConfig(max_steps=1001).run_id


def test_sampler_id_changes_with_sampler_only():
    s = SamplerConfig()
    assert sampler_id("devinterp", s) != sampler_id("fast", s)
    assert sampler_id("devinterp", s) != sampler_id("devinterp", SamplerConfig(lr=1e-3))
    assert sampler_id("devinterp", s) == sampler_id("devinterp", SamplerConfig())
    # the calibration a sampler comes from is part of its name
    assert sampler_id("fast", s, calibration="a") != sampler_id("fast", s, calibration="b")


def test_study_cross_product_and_dedup():
    runs = expand_study({"p": 7}, {"lr": [1e-3, 1e-2], "seed": [0, 1, 0]})
    assert len(runs) == 4
    assert {(r.lr, r.seed) for r in runs} == {(1e-3, 0), (1e-3, 1), (1e-2, 0), (1e-2, 1)}


def test_nbeta_default_is_devinterps():
    assert SamplerConfig(batch_size=128).resolved_nbeta == pytest.approx(26.38, abs=0.01)


def test_shipped_configs_validate(tmp_path):
    load_config(ROOT / "config" / "config.yaml")  # from any working directory
    merged = copy.deepcopy(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    merged.update(yaml.safe_load((ROOT / ".test" / "config" / "config.yaml").read_text()))
    validate_config(merged)


def test_key_order_is_not_meaning():
    llc = {"samplers": {"paper": {"batch_size": 8}, "b": {"lr": 1.0e-4, "batch_size": 8}}}
    a = validate_config(
        {"train": {"p": 7, "batch_size": 8}, "studies": {"baseline": {}, "a": {"seed": [1, 0]}},
         "llc": llc}
    )  # fmt: skip
    b = validate_config(
        {"llc": {"samplers": dict(reversed(llc["samplers"].items()))},
         "studies": {"a": {"seed": [1, 0]}, "baseline": {}}, "train": {"batch_size": 8, "p": 7}}
    )  # fmt: skip
    assert repr(a) == repr(b)  # Snakemake compares params by their text
    assert a["studies"]["a"]["seed"] == [1, 0]  # list order is kept


def test_short_hash_is_sha256_of_canonical_json():
    """Reference serialisation: keys at their base value dropped, integral floats written as
    ints, sorted keys, no spaces; the first 8 hex digits of SHA-256."""

    def ref(kept: dict) -> str:
        blob = json.dumps(kept, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    base = {"a": 1, "b": 0.5, "c": {}}
    assert short_hash({"a": 1, "b": 0.5, "c": {}}, base) == ref({})
    assert short_hash({"a": 2.0, "b": 0.5, "c": {}}, base) == ref({"a": 2})
    assert short_hash({"b": 0.25, "a": 1, "z": "x"}, base) == ref({"b": 0.25, "z": "x"})
    nested = {"c": {"y": 2.0, "x": [1.0, 0.5]}}
    assert short_hash(nested, base) == ref({"c": {"x": [1, 0.5], "y": 2}})
    assert (
        short_hash({"a": 1}, base, length=12)
        == ref({})[:8] + hashlib.sha256(b"{}").hexdigest()[8:12]
    )
    assert ref({}) == "44136fa3"


@pytest.mark.parametrize(("overrides", "run_id"), RUN_ID_PINS)
def test_run_id_pins(overrides, run_id):
    assert TrainConfig(**{**PAPER_TRAINING, **overrides}).run_id == run_id


def test_default_train_config_run_id_pin():
    # TrainConfig() is the default config's baseline run (results/runs/<this>/ on every machine)
    assert TrainConfig().run_id == "quadratic-p53-K1024-f351264d"


def test_runs_of_the_shipped_config_keep_their_names():
    cfg = load_config(ROOT / "config" / "config.yaml")
    ids = {
        run.run_id
        for overrides in cfg["studies"].values()
        for run in expand_study(cfg["train"], overrides)
    }
    assert CONFIG_RUN_PINS <= ids, sorted(CONFIG_RUN_PINS - ids)


@pytest.mark.parametrize(("backend", "overrides", "digest"), SAMPLER_HASH_PINS)
def test_sampler_name_pins(backend, overrides, digest):
    # every setting explicit, at the paper's sampler (the hash base) plus overrides: a new
    # default may rightly rename the default sampler, the serialisation must not change
    base = {k: v for k, v in SAMPLER_HASH_BASE.items() if k in SamplerConfig.__dataclass_fields__}
    sampler = SamplerConfig(**{**base, **overrides})
    assert short_hash({"backend": backend, **asdict(sampler)}, SAMPLER_HASH_BASE) == digest
    try:  # the signature is being changed from (backend, every, sampler) to (backend, sampler)
        name = sampler_id(backend, sampler)
    except TypeError:
        name = sampler_id(backend, 1, sampler)
    assert name == f"{backend}-{digest}"


@pytest.mark.parametrize(("key", "value"), BAD_SAMPLER_VALUES)
def test_sampler_range_checks_refuse_bad_values(key, value):
    with pytest.raises(ConfigError, match=rf"sampler\.{key}\b"):
        SamplerConfig.from_mapping({key: value})


@pytest.mark.parametrize(("key", "value"), EDGE_SAMPLER_VALUES.items())
def test_sampler_range_checks_accept_the_edges(key, value):
    extra = {"nbeta": 1.0} if key == "batch_size" else {}  # m / ln m needs m >= 2
    cfg = SamplerConfig.from_mapping({key: value, **extra})
    assert getattr(cfg, key) == value


@pytest.mark.parametrize(("key", "value"), BAD_SAMPLER_VALUES)
def test_validate_config_refuses_bad_sampler_values(key, value):
    patch, where = _sampler_patch({key: value})
    with pytest.raises(ConfigError) as err:
        validate_config(patch)
    msg = str(err.value)
    assert "\n" not in msg and f"{where}.{key}" in msg, msg


def test_validate_config_accepts_sampler_edges():
    edges = {k: v for k, v in EDGE_SAMPLER_VALUES.items() if k != "batch_size"}
    patch, _ = _sampler_patch(edges)
    validate_config(patch)


def test_config_readme_documents_exactly_the_calibration_keys():
    """config/README.md's table of `llc.calibration` has one row per key of the schema (grid
    keys as `grid.<key>`) and none for a key the schema no longer has (the study calibration's
    `studies`, `max_checks`, `grid.lr`)."""
    import re

    doc = (ROOT / "config" / "README.md").read_text()
    section = doc.split("The calibration (`llc.calibration`")[1].split("\n\n| key |")[1]
    table = section.split("\n\n")[0]
    rows = set(re.findall(r"^\| `([\w.]+)` \|", table, re.M))
    cal = load_schema()["properties"]["llc"]["properties"]["calibration"]["properties"]
    keys = set(cal) | {f"grid.{k}" for k in cal["grid"]["properties"]}
    assert rows == keys, (sorted(keys - rows), sorted(rows - keys))
    sampler = load_schema()["properties"]["llc"]["properties"]["samplers"]
    enum = sampler["additionalProperties"]["properties"]["calibration"]["enum"]
    (row,) = re.findall(r"^\| `calibration` \| `per_shape` or null \|.*$", doc, re.M)
    assert enum == ["per_shape", None] and "results/calibration/<shape>-<hash>.parquet" in row


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


def test_sampler_to_dict_is_every_field_but_preconditioner_constants_at_their_base():
    cfg = SamplerConfig(**PAPER_SAMPLER)
    assert cfg.to_dict() == PAPER_SAMPLER
    omitted = ("rmsprop_alpha", "rmsprop_eps", "gn_damping", "gn_probes")
    assert [f.name for f in fields(SamplerConfig) if f.name not in omitted] == list(cfg.to_dict())
    assert cfg.num_steps == 600
    # away from their base value they are written, and read back
    damped = SamplerConfig(**PAPER_SAMPLER, gn_damping=0.5)
    assert damped.to_dict()["gn_damping"] == 0.5
    assert SamplerConfig.from_mapping(damped.to_dict()) == damped


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


def test_every_sampler_and_train_key_has_a_row():
    schema = load_schema()["properties"]
    sampler = schema["llc"]["properties"]["samplers"]["additionalProperties"]["properties"]
    missing = (set(sampler) | set(schema["train"]["properties"])) - documented()
    assert not missing, f"config/README.md lacks rows for {sorted(missing)}"
    assert {"refine", "kind", "target_ess", "every_by_study"} <= documented()
