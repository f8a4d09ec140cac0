"""Config validation beyond the schema (issue 13, item 4): each bad config is refused before any
job with one line naming the key; the shipped configs are accepted; the YAML reader refuses
duplicate keys and reports syntax errors with file and line.

Every bad config is the .test config with one change.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import yaml

from grokking_llc.core.settings import ConfigError, load_schema
from grokking_llc.pipeline import config as config_mod
from grokking_llc.pipeline.config import validate_config
from grokking_llc.pipeline.validation import check_config, load_yaml

ROOT = Path(__file__).resolve().parents[2]


TEST_CONFIG = ROOT / ".test" / "config" / "config.yaml"


@pytest.fixture(scope="module")
def base():
    return load_yaml(TEST_CONFIG)


def filled(cfg):
    """The config as check_config sees it: schema defaults filled in."""
    return config_mod._fill_defaults(copy.deepcopy(cfg), load_schema())


def put(cfg, dotted, value):
    node = cfg
    *head, last = dotted.split(".")
    for key in head:
        node = node.setdefault(key, {})
    node[last] = value
    return cfg


def one(case_id, key, value, words, named=None):
    """A case that sets one dotted ``key`` to ``value``: the message must name ``named`` (the key
    itself unless given) and hold ``words``."""
    return (case_id, [(key, value)], key if named is None else named, words)


# (id, [(dotted key, value), ...], key the message must name, words it must hold)
BAD = [
    one("nan_train_lr", "train.lr", math.nan, "finite"),
    one("inf_in_sweep", "studies.lr_wd.lr", [3e-3, math.inf], "finite"),
    one("neg_inf_sampler", "llc.samplers.paper.localization", -math.inf, "finite"),
    one("nan_in_grid", "figures.b2.localization", [1.0, math.nan], "finite"),
    one("float_num_chains", "llc.samplers.paper.num_chains", 2.0, "integer"),
    one("float_p", "train.p", 7.0, "integer"),
    one("float_p_in_sweep", "studies.over_p.p", [7, 11.0], "integer"),
    one("float_p_in_study", "studies.baseline", {"p": 7.0}, "integer", named="studies.baseline.p"),
    one("float_max_steps", "train.max_steps", 200.0, "integer"),
    one("float_chunks", "llc.chunks", 2.0, "integer"),
    one("float_stride", "llc.samplers.calibrated.every_by_study", {"over_p": 0.0},
        "integer", named="llc.samplers.calibrated.every_by_study.over_p"),
    one("int64_overflow_seed", "llc.samplers.paper.seed", 2**64, "64-bit"),
    one("quadratic_takes_no_options", "train.model_options", {"ff_dim": 16}, "takes no option"),
    one("transformer_unknown_option", "studies.transformer.model_options", {"dropout": 1},
        "dropout"),
    one("heads_do_not_divide_width", "studies.transformer.model_options",
        {"ff_dim": 16, "num_heads": 3}, "not divisible by num_heads=3"),
    one("zero_heads", "studies.transformer.model_options", {"num_heads": 0}, "num_heads"),
    one("sampler_batch_over_training_set", "llc.samplers.paper.batch_size", 30,
        "exceeds the 29 training pairs"),
    one("calibrated_sampler_batch_over_training_set", "llc.samplers.calibrated.batch_size", 30,
        "exceeds"),
    # a calibration runs at runs of the shapes its sampler estimates: their batch rule is the
    # sampler's (scaling, drawn with LLC values by fig2 here: p=7, train_frac 0.4, 20 pairs)
    ("calibrated_sampler_batch_over_a_shapes_runs",
     [("llc.samplers.calibrated.batch_size", 25),
      ("llc.samplers.calibrated.studies", ["over_p", "scaling"]),
      ("figures.fig2.study", "scaling")],
     "llc.samplers.calibrated.batch_size", "20 training pairs of a run of study scaling"),
    ("grid_run_batch_over_training_set",
     [("llc.samplers.paper.batch_size", 25), ("figures.b2.study", "scaling")],
     "llc.samplers.paper.batch_size", "figure b2"),
    one("every_by_study_no_study", "llc.every_by_study", {"nosuch": 2}, "no study named 'nosuch'"),
    one("sampler_every_by_study_no_study", "llc.samplers.calibrated.every_by_study", {"x": 0},
        "no study named 'x'"),
    one("sampler_studies_no_study", "llc.samplers.calibrated.studies", ["baseline", "x"],
        "no study named 'x'"),
    # `calibration` is per_shape or null; a study's name (the old meaning) is refused
    one("sampler_calibration_a_study", "llc.samplers.calibrated.calibration", "baseline",
        "must be one of ['per_shape', None], got 'baseline'"),
    one("sampler_calibration_unknown", "llc.samplers.calibrated.calibration", "x",
        "must be one of ['per_shape', None], got 'x'"),
    one("sampler_calibration_true", "llc.samplers.calibrated.calibration", True, "per_shape"),
    one("figure_study_missing", "figures.fig3.study", "missing", "no study named"),
    one("figure_studies_missing", "figures.h2.studies", ["over_p", "missing"], "no study named"),
    one("figure_sampler_missing", "figures.b2.sampler", "nosuch", "no sampler named"),
    # figures.fig3.by_sampler: a sampler's Figure 3 on its own study
    one("by_sampler_no_sampler", "figures.fig3.by_sampler", {"nosuch": "over_p"},
        "no sampler named 'nosuch'", named="figures.fig3.by_sampler.nosuch"),
    one("by_sampler_no_study", "figures.fig3.by_sampler", {"calibrated": "missing"},
        "no study named 'missing'", named="figures.fig3.by_sampler.calibrated"),
    one("by_sampler_study_not_estimated", "figures.fig3.by_sampler", {"calibrated": "lr_wd"},
        "does not estimate study 'lr_wd'", named="figures.fig3.by_sampler.calibrated"),
    one("sampler_step_size_zero", "llc.samplers.paper.lr", 0.0, "> 0"),
    one("default_nbeta_batch_one", "llc.samplers.paper.batch_size", 1, "nbeta"),
    one("nbeta_zero", "llc.samplers.paper.nbeta", 0.0, "> 0"),
    one("grid_step_size_zero", "figures.b2.lr", [1e-4, 0.0], "> 0"),
    one("calibration_grid_nbeta_zero", "llc.calibration.grid.nbeta", [0.0, 5.0], "> 0"),
    one("calibration_grid_value_twice", "llc.calibration.grid.resolution", [4.0, 8.0, 4.0],
        "twice"),
    one("calibration_grid_ladder_given_twice", "llc.calibration.grid.localization", [10.0],
        "localization or resolution, not both", named="llc.calibration.grid"),
    one("negative_nbeta_factor", "figures.bias_reduced.nbeta_factors", [-1.0, 1.0], "> 0"),
    one("p_not_prime_in_sweep", "studies.over_p.p", [7, 9], "prime"),
    one("p_beyond_int16", "studies.over_p.p", [7, 32771], "int16"),
    one("train_batch_over_training_set", "train.batch_size", 30, "exceeds"),
    one("negative_lr_in_sweep", "studies.lr_wd.lr", [3e-3, -1e-2], "> 0"),
    one("zero_lr_in_study", "studies.baseline", {"lr": 0.0}, "> 0", named="studies.baseline.lr"),
    one("negative_seed_in_sweep", "studies.lr_wd.seed", [0, -1], ">= 0"),
    one("negative_weight_decay_in_sweep", "studies.lr_wd.weight_decay", [0.0, -1e-4], ">= 0"),
    one("early_stop_acc_over_one_in_study", "studies.baseline", {"early_stop_acc": 1.5},
        "<= 1", named="studies.baseline.early_stop_acc"),
    one("unknown_model_in_study", "studies.baseline", {"model": "mlp"},
        "must be one of", named="studies.baseline.model"),
    one("checkpoint_interval_over_budget", "studies.baseline", {"max_steps": 20},
        "checkpoint_every 50 is larger than the step budget", named="studies.baseline.max_steps"),
    one("checkpoint_interval_over_budget_train", "train.checkpoint_every", 300,
        "step budget max_steps=200"),
    one("train_frac_gives_no_pairs", "studies.over_p.train_frac", 0.01, "training pairs"),
    one("empty_sweep", "studies.over_width.width", [], "empty"),
    one("value_twice_in_sweep", "studies.over_p.p", [7, 11, 7], "twice"),
    one("study_twice_in_list", "figures.h2.studies", ["over_p", "over_p"], "twice"),
    ("no_study_at_all", [("studies", {}), ("figures", {})], "studies", "no study"),
    # issue 21: a minibatch or split on which the centred loss is identically 0 (SPEC 2)
    one("train_batch_of_one", "train.batch_size", 1, "too few for loss 'centred_mse'"),
    one("train_batch_of_one_in_study", "studies.lr_wd.batch_size", [16, 1], "needs >= 2"),
    ("sampler_batch_of_one", [("llc.samplers.calibrated.nbeta", 2.0),
                              ("llc.samplers.calibrated.batch_size", 1)],
     "llc.samplers.calibrated.batch_size", "every LLC would be 0"),
    one("one_validation_pair", "studies.over_width.train_frac", 48 / 49, "1 validation pairs"),
    # issue 21: early stop at chance accuracy stops every run after `patience` checkpoints
    one("early_stop_acc_zero", "train.early_stop_acc", 0.0, "chance"),
    one("early_stop_acc_at_chance_in_sweep", "studies.over_p.early_stop_acc", 1 / 13,
        "at or below chance accuracy 1/p"),
    # issue 21: a figure of LLC values whose study no sampler estimates would be dropped
    ("llc_figure_study_not_estimated",
     [("llc.samplers", {"only": {"backend": "fast", "studies": ["over_p"], "batch_size": 16}}),
      ("figures.b2.sampler", "only"), ("figures.bias_reduced.sampler", "only")],
     "figures.fig2.study", "no sampler estimates 'over_width'"),
    ("h2_studies_not_estimated_by_one_sampler",
     [("llc.samplers.paper.studies", ["baseline", "over_p", "lr_wd", "transformer"]),
      ("llc.samplers.calibrated.studies", ["over_width"]), ("figures.fig2.study", None)],
     "figures.h2.studies", "no sampler estimates 'over_p', 'over_width'"),
]  # fmt: skip


def patched(base, changes):
    cfg = copy.deepcopy(base)
    for dotted, value in changes:
        put(cfg, dotted, value)
    return cfg


# Refused by the schema (validate_config), each in one line naming the key: keys of the study
# calibration that per-shape calibration replaced, and the new keys' limits
SCHEMA_BAD = [
    ("removed_calibration_studies", [("llc.calibration.studies", ["baseline"])],
     "llc.calibration", "'studies' was unexpected"),
    ("removed_max_checks", [("llc.calibration.max_checks", 1)], "llc.calibration",
     "'max_checks' was unexpected"),
    ("removed_grid_lr", [("llc.calibration.grid.lr", [1e-4])], "llc.calibration.grid",
     "'lr' was unexpected"),
    ("grid_lr_scaled_zero", [("llc.calibration.grid.lr_scaled", [0.2, 0.0])],
     "llc.calibration.grid.lr_scaled", "less than or equal to the minimum of 0"),
    ("grid_resolution_zero", [("llc.calibration.grid.resolution", [0.0])],
     "llc.calibration.grid.resolution", "less than or equal to the minimum of 0"),
    ("grid_localization_zero", [("llc.calibration.grid.resolution", None),
                                ("llc.calibration.grid.localization", [0.0])],
     "llc.calibration.grid.localization", "less than or equal to the minimum of 0"),
    ("grid_unknown_kind", [("llc.calibration.grid.kind", ["sgld", "hmc"])],
     "llc.calibration.grid.kind", "'hmc' is not one of"),
    ("grid_empty_list", [("llc.calibration.grid.nbeta", [])], "llc.calibration.grid.nbeta",
     "should be non-empty"),
    ("max_candidates_zero", [("llc.calibration.max_candidates", 0)],
     "llc.calibration.max_candidates", "less than the minimum of 1"),
    ("max_steps_tiny", [("llc.calibration.max_steps", 5)], "llc.calibration.max_steps",
     "less than the minimum of 10"),
    ("unknown_reference", [("llc.calibration.reference", "hmc")], "llc.calibration.reference",
     "'hmc' is not one of"),
    ("calibration_runs_zero", [("llc.calibration.runs", 0)], "llc.calibration.runs",
     "less than the minimum of 1"),
]  # fmt: skip


def _validated_figures(cfg):
    return validate_config(cfg)["figures"]


@pytest.mark.parametrize(("changes", "key", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_check_config_refuses_with_the_key(base, changes, key, words):
    with pytest.raises(ConfigError) as err:
        check_config(filled(patched(base, changes)))
    msg = str(err.value)
    assert "\n" not in msg and f"at {key}" in msg and words in msg, msg


@pytest.mark.parametrize(("changes", "key"), [c[1:3] for c in BAD], ids=[c[0] for c in BAD])
def test_validate_config_refuses_before_any_job(base, changes, key):
    with pytest.raises(ConfigError) as err:
        validate_config(patched(base, changes))
    msg = str(err.value)
    assert "\n" not in msg and key in msg, msg


@pytest.mark.parametrize(
    ("changes", "key", "words"), [c[1:] for c in SCHEMA_BAD], ids=[c[0] for c in SCHEMA_BAD]
)
def test_bad_calibration_keys_are_refused_in_one_line_naming_the_key(base, changes, key, words):
    with pytest.raises(ConfigError) as err:
        validate_config(patched(base, changes))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"config error at {key}") and words in msg, msg


def test_every_calibration_key_of_the_test_config_is_read(base):
    """Each grid key the .test config writes is one the calibration takes, and the validated
    config keeps it (nothing silently dropped)."""
    from grokking_llc.sampling.calibrate import GRID_KEYS

    cal = validate_config(base)["llc"]["calibration"]
    written = base["llc"]["calibration"]["grid"]
    assert set(written) <= set(GRID_KEYS)
    assert {k: cal["grid"][k] for k in written} == written


def test_at_least_thirty_classes():
    assert len(BAD) >= 30 and len({c[0] for c in BAD}) == len(BAD)


@pytest.mark.parametrize(
    "path", [TEST_CONFIG, ROOT / "config" / "config.yaml", ROOT / "config" / "paper.yaml"]
)
def test_shipped_configs_are_accepted(path):
    cfg = load_yaml(path)
    check_config(filled(cfg))
    validate_config(cfg)


def test_training_only_study_may_have_fewer_pairs_than_the_sampler_batch(base):
    # scaling (p=7, train_frac 0.4: 20 pairs) is drawn by fig14 only: no SGLD on its runs
    cfg = patched(base, [("llc.samplers.paper.batch_size", 25)])
    cfg["llc"]["samplers"]["calibrated"]["batch_size"] = 25
    check_config(filled(cfg))
    # the same study named by an LLC figure is refused
    cfg["figures"]["fig1"] = {"study": "scaling"}
    with pytest.raises(ConfigError, match="llc.samplers.paper.batch_size.*exceeds the 20"):
        check_config(filled(cfg))


def test_edges_are_accepted(base):
    # batch equal to the training set (29 pairs); nbeta set with batch 2 (the centred loss's
    # least); num_heads dividing; training batch 2; early stop just above chance (1/7)
    ok = patched(
        base,
        [
            ("llc.samplers.paper.batch_size", 29),
            ("llc.samplers.calibrated.nbeta", 2.0),
            ("llc.samplers.calibrated.batch_size", 2),
            ("studies.transformer.model_options", {"ff_dim": 16, "num_heads": 4}),
            ("studies.baseline", {"batch_size": 2, "early_stop_acc": 0.15}),
        ],
    )
    check_config(filled(ok))


def test_cross_entropy_runs_may_use_one_sample(base):
    """The rule is per loss (grokking_llc.core.data.LOSS_MIN_SAMPLES): cross-entropy is a loss on
    one sample, so a transformer-only sampler and training batch of 1 are accepted."""
    cfg = patched(base, [("studies.transformer.batch_size", 1)])
    cfg["llc"]["samplers"]["tr"] = {"backend": "fast", "studies": ["transformer"], "nbeta": 2.0,
                                    "batch_size": 1}  # fmt: skip
    check_config(filled(cfg))
    cfg["studies"]["transformer"]["loss"] = "centred_mse"
    with pytest.raises(ConfigError, match="studies.transformer.batch_size: 1: 1 sample"):
        check_config(filled(cfg))


def test_a_config_of_ones_own_studies_draws_them(base):
    """Issue 21: figures whose schema default names `baseline` (fig3, traces) take the config's
    only study when it defines no baseline, none when it defines several; a study the user
    wrote is kept, and so is null."""
    llc = {"samplers": {"paper": {"batch_size": 16}}}  # the default 128 exceeds 29 pairs
    mine = {"train": base["train"], "studies": {"mine": {}}, "llc": llc}
    figs = _validated_figures(mine)
    assert figs["fig3"]["study"] == "mine" and figs["traces"]["study"] == "mine"
    assert figs["fig1"]["study"] is None  # defaults that name no study stay as they are
    two = {"train": base["train"], "studies": {"a": {}, "b": {"seed": 1}}, "llc": llc}
    figs = _validated_figures(two)
    assert figs["fig3"]["study"] is None and figs["traces"]["study"] is None
    written = {**two, "figures": {"fig3": {"study": "b"}, "traces": {"study": None}}}
    figs = _validated_figures(written)
    assert figs["fig3"]["study"] == "b" and figs["traces"]["study"] is None
    # a config that defines baseline keeps the schema's default
    figs = _validated_figures({"train": base["train"], "studies": {"baseline": {}, "x": {}},
                               "llc": llc})  # fmt: skip
    assert figs["fig3"]["study"] == "baseline"
    # the only study, but no sampler estimates it: no LLC figure of it (nothing refused)
    sampler = {"backend": "fast", "studies": [], "batch_size": 16}
    lone = {"train": base["train"], "studies": {"mine": {}}, "llc": {"samplers": {"s": sampler}}}
    figs = _validated_figures(lone)
    assert figs["fig3"]["study"] is None and figs["traces"]["study"] is None


def test_a_user_study_not_estimated_by_the_written_figure_is_refused(base):
    """Issue 21: a figure the user points at a study no sampler estimates is refused at
    validation (the plan used to leave it out silently)."""
    cfg = {"train": base["train"], "studies": {"mine": {}, "other": {}},
           "llc": {"samplers": {"s": {"backend": "fast", "studies": ["other"], "batch_size": 16}}},
           "figures": {"fig3": {"study": "mine"}}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"^config error at figures.fig3.study: no sampler"):
        validate_config(cfg)


def yaml_error(tmp_path, text: str) -> str:
    """The ConfigError message of :func:`load_yaml` on a file holding ``text``."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    return str(err.value)


def test_yaml_duplicate_key_names_key_file_and_line(tmp_path):
    msg = yaml_error(
        tmp_path, "train:\n  p: 7\n  lr: 1.0e-3\n  width: 8\n  lr: 1.0e-2\nstudies: {}\n"
    )
    assert "\n" not in msg and str(tmp_path / "c.yaml") in msg and "'lr'" in msg
    assert "line 5" in msg and "line 3" in msg


def test_yaml_duplicate_top_level_and_flow_keys(tmp_path):
    assert re.search(r"line 2.*duplicate key 'x'", yaml_error(tmp_path, "a: 1\nb: {x: 1, x: 2}\n"))
    assert re.search(r"line 3.*duplicate key 'a'", yaml_error(tmp_path, "a: 1\nb: 2\na: 3\n"))


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    msg = yaml_error(tmp_path, "train:\n  p: 7\n  lr: [1.0e-3\nstudies: {}\n")
    assert "\n" not in msg and str(tmp_path / "c.yaml") in msg and "line 4" in msg
    assert "syntax" in msg
    assert re.search(r"line 2, column 3", yaml_error(tmp_path, "a: 1\n b: 2\n"))


def test_yaml_reads_what_safe_load_reads(tmp_path):
    text = TEST_CONFIG.read_text() + "extra: &x {k: 1}\nmerged: {<<: *x, j: 2}\nnan: .nan\n"
    path = tmp_path / "c.yaml"
    path.write_text(text)
    got, want = load_yaml(path), yaml.safe_load(text)
    assert math.isnan(got.pop("nan")) and math.isnan(want.pop("nan"))
    assert got == want and got["merged"] == {"k": 1, "j": 2}


def test_yaml_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_yaml(tmp_path / "none.yaml")


def test_a_grid_figure_takes_the_only_sampler_of_a_config_without_paper(base):
    """A user who names their one sampler `s` and asks for b2 is not refused on
    `figures.b2.sampler: no sampler named 'paper'` (a key they never wrote); with two samplers
    and no `paper` they must say which."""
    llc = {"samplers": {"s": {"backend": "fast", "batch_size": 16}}}
    cfg = {"train": base["train"], "studies": {"mine": {}}, "llc": llc,
           "figures": {"b2": {"study": "mine"}}}  # fmt: skip
    assert validate_config(cfg)["figures"]["b2"]["sampler"] == "s"
    cfg["llc"]["samplers"]["t"] = {"backend": "fast", "batch_size": 16}
    with pytest.raises(ConfigError, match="figures.b2.sampler: no sampler named 'paper'"):
        validate_config(cfg)
    cfg["figures"]["b2"]["sampler"] = "t"
    assert validate_config(cfg)["figures"]["b2"]["sampler"] == "t"
