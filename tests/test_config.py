import copy
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

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
from grokking_llc.pipeline.config import load_config, validate_config
from grokking_llc.pipeline.studies import expand_study

ROOT = Path(__file__).resolve().parents[1]


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


# --------------------------------------------------------------------------- issue 15
# Regression pins of run and sampler names. They were computed with the code of commit b1f7e9e
# (before the config rewrite); a change here renames every run and throws the cache away, so it
# must fail loudly. They pin the serialisation, not a result: if one of them has to change, the
# change renames outputs on every machine and needs a deliberate migration.

# TrainConfig built from every key explicitly (independent of the editable defaults).
PAPER_BASE = {
    "p": 53,
    "train_frac": 0.4,
    "data_seed": 0,
    "seed": 0,
    "model": "quadratic",
    "width": 1024,
    "model_options": {},
    "loss": "centred_mse",
    "lr": 1e-4,
    "weight_decay": 1e-5,
    "batch_size": 128,
    "max_steps": 100_000,
    "checkpoint_every": 100,
    "early_stop_patience": 10,
    "early_stop_acc": 0.99,
}
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
    assert TrainConfig(**{**PAPER_BASE, **overrides}).run_id == run_id


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


@pytest.mark.parametrize(("key", "value"), BAD_SAMPLER_VALUES)
def test_sampler_range_checks_refuse_bad_values(key, value):
    with pytest.raises(ConfigError, match=rf"sampler\.{key}\b"):
        SamplerConfig.from_mapping({key: value})


@pytest.mark.parametrize(("key", "value"), EDGE_SAMPLER_VALUES.items())
def test_sampler_range_checks_accept_the_edges(key, value):
    extra = {"nbeta": 1.0} if key == "batch_size" else {}  # m / ln m needs m >= 2
    cfg = SamplerConfig.from_mapping({key: value, **extra})
    assert getattr(cfg, key) == value


def _sampler_patch(settings: dict) -> tuple[dict, str]:
    """A config that sets the sampler's ``settings``, and the key prefix of its errors (the
    config's layout moves from ``llc.sampler`` to named ``llc.samplers.<name>``)."""
    llc = load_schema()["properties"]["llc"]["properties"]
    if "samplers" in llc:
        return {"llc": {"samplers": {"s": settings}}}, "llc.samplers.s"
    return {"llc": {"sampler": settings}}, "llc.sampler"


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
