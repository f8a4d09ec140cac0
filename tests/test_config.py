import copy

import pytest
import yaml

from grokking_llc.config import (
    SAMPLER_HASH_BASE,
    TRAIN_HASH_BASE,
    ConfigError,
    SamplerConfig,
    TrainConfig,
    expand_study,
    load_config,
    load_schema,
    sampler_id,
    short_hash,
    validate_config,
)


def test_defaults_fill_in():
    cfg = validate_config({})
    assert cfg["train"]["p"] == 53 and cfg["llc"]["sampler"]["localization"] == 5.0
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
        ({"llc": {"sampler": {"num_chains": 0}}}, "llc.sampler.num_chains", "minimum"),
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
    sampler = load_schema()["properties"]["llc"]["properties"]["sampler"]["properties"]
    assert set(sampler) == set(SamplerConfig.__dataclass_fields__)
    assert set(sampler) | {"backend", "every"} == set(SAMPLER_HASH_BASE)


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
    assert sampler_id("devinterp", 1, s) != sampler_id("fast", 1, s)
    assert sampler_id("devinterp", 1, s) != sampler_id("devinterp", 1, SamplerConfig(lr=1e-3))
    assert sampler_id("devinterp", 1, s) == sampler_id("devinterp", 1, SamplerConfig())


def test_study_cross_product_and_dedup():
    runs = expand_study({"p": 7}, {"lr": [1e-3, 1e-2], "seed": [0, 1, 0]})
    assert len(runs) == 4
    assert {(r.lr, r.seed) for r in runs} == {(1e-3, 0), (1e-3, 1), (1e-2, 0), (1e-2, 1)}


def test_nbeta_default_is_devinterps():
    assert SamplerConfig(batch_size=128).resolved_nbeta == pytest.approx(26.38, abs=0.01)


def test_shipped_configs_validate(tmp_path):
    load_config("config/config.yaml")
    merged = copy.deepcopy(yaml.safe_load(open("config/config.yaml")))
    merged.update(yaml.safe_load(open(".test/config/config.yaml")))
    validate_config(merged)


def test_key_order_is_not_meaning():
    a = validate_config(
        {"train": {"p": 7, "batch_size": 8}, "studies": {"baseline": {}, "a": {"seed": [1, 0]}}}
    )
    b = validate_config(
        {"studies": {"a": {"seed": [1, 0]}, "baseline": {}}, "train": {"batch_size": 8, "p": 7}}
    )
    assert repr(a) == repr(b)  # Snakemake compares params by their text
    assert a["studies"]["a"]["seed"] == [1, 0]  # list order is kept
