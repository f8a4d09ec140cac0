"""The plan (grokking_llc.pipeline.plan): every decision about what the workflow computes, and the
params each job depends on, as pure functions of a validated config."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from grokking_llc.core.settings import SamplerConfig, TrainConfig, sampler_id, short_hash
from grokking_llc.pipeline.config import validate_config
from grokking_llc.pipeline.plan import CalibrationJob, build_plan, shape_of
from grokking_llc.sampling.refine import select_checkpoints

REPO = Path(__file__).resolve().parents[2]


def base_config() -> dict:
    return yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())


def plan_of(cfg: dict):
    return build_plan(validate_config(cfg))


def only_figures(cfg: dict, **figures) -> dict:
    """``cfg`` drawing just ``figures`` (the schema's default figures name `baseline`)."""
    cfg["figures"] = {"fig3": {"study": None}, "traces": {"study": None}, **figures}
    cfg["llc"]["samplers"] = {"paper": cfg["llc"]["samplers"]["paper"]}
    return cfg


def calibrated_only(cfg: dict, studies: list[str]) -> dict:
    """``cfg`` (.test) with its calibrated sampler on ``studies`` only."""
    cfg["llc"]["samplers"]["calibrated"]["studies"] = studies
    cfg["llc"]["samplers"]["calibrated"]["every_by_study"] = {}
    return cfg


TRAIN = dict(
    p=7, train_frac=0.6, width=16, lr=1e-2, weight_decay=1e-4, batch_size=16, max_steps=200,
    checkpoint_every=50,
)  # fmt: skip


PAPER = dict(
    backend="fast", lr=1e-4, num_chains=2, num_burnin_steps=5, num_draws=20, batch_size=16,
    num_init_loss_batches=4,
)  # fmt: skip


CAL = dict(
    backend="fast", calibration="per_shape", studies=["base"], num_chains=4, num_burnin_steps=5,
    num_draws=20, batch_size=16, num_init_loss_batches=4,
)  # fmt: skip


GRID = {"kind": ["sgld"], "nbeta": [5.0], "resolution": [4.0, 8.0], "lr_scaled": [0.2, 0.1]}


def config() -> dict:
    return {
        "device": "cpu",
        "train": dict(TRAIN),
        "studies": {"base": {}, "seeds": {"seed": [0, 1]}, "other": {"p": 11}},
        "llc": {
            "every": 3,
            "chunks": 2,
            "samplers": {"paper": dict(PAPER), "cal": copy.deepcopy(CAL)},
            "calibration": {
                "checkpoints": [0.5, 1.0],
                "num_steps": 40,
                "max_steps": 60,
                "grid": copy.deepcopy(GRID),
            },
        },
        "figures": {
            "fig3": {"study": "base"},
            "traces": {"study": None},
            "b2": {"study": "base", "localization": [1.0, 10.0], "lr": [1e-4, 3e-4]},
            "bias_reduced": {"study": "base", "nbeta_factors": [0.5, 2.0]},
        },
        "plots": {"dpi": 60},
    }


def plan_of_edge(cfg):
    return build_plan(validate_config(cfg))


# Hand-built expectations for config().
R0 = TrainConfig(**TRAIN)


R1 = TrainConfig(**{**TRAIN, "seed": 1})


R11 = TrainConfig(**{**TRAIN, "p": 11})


PAPER_SETTINGS = SamplerConfig.from_mapping(PAPER)


CAL_SETTINGS = SamplerConfig.from_mapping(CAL)


# llc.calibration as validated (the schema's defaults filled in) but `runs`: what the calibrated
# sampler's id hashes (where a shape is calibrated names its calibration job, not the sampler)
CAL_SPEC = {
    "checkpoints": [0.5, 1.0],
    "num_steps": 40,
    "max_steps": 60,
    "max_candidates": 3,
    "exhaustive": False,
    "reference": None,
    "grid": {**GRID, "localization": None},
}


# one calibration per model shape: the calibrated sampler estimates R0 only (quadratic, p 7,
# K 16); the stage takes the grid without the keys left to its defaults
CAL_PARAMS = {
    "calibration": {
        **{k: v for k, v in CAL_SPEC.items() if k != "grid"},
        "grid": GRID,
        "backend": "fast",
        "base": CAL_SETTINGS.to_dict(),
    },
    "runs": [R0.to_dict()],
}


CAL_NAME = f"quadratic-p7-K16-{short_hash(CAL_PARAMS, {})}"


CAL_PATH = f"results/calibration/{CAL_NAME}.parquet"


PAPER_SID = sampler_id("fast", PAPER_SETTINGS)


CAL_SID = sampler_id("fast", CAL_SETTINGS, calibration=short_hash(CAL_SPEC, {}))


def llc_path(run, sid, track="every3"):
    return f"results/llc/{run.run_id}/{sid}/{track}.parquet"


@pytest.fixture(scope="module")
def plan():
    return plan_of_edge(config())


def shape_config() -> dict:
    """config() with the calibrated sampler on every study: two shapes, quadratic p 7 (R0 and
    R1, seeds 0 and 1) and p 11 (R11), at width 16."""
    cfg = config()
    cfg["llc"]["samplers"]["cal"]["studies"] = ["base", "seeds", "other"]
    cfg["figures"].update(fig1={"study": "seeds"}, fig2={"study": "other"})
    return cfg


def stride_config(**llc) -> dict:
    cfg = config()
    cfg["figures"] = {"fig3": {"study": "base"}, "traces": {"study": None}}
    cfg["llc"]["samplers"] = {"paper": dict(PAPER)}
    cfg["llc"].update(llc)
    return cfg


def test_studies_expand_to_a_cross_product_and_shared_runs_are_trained_once():
    cfg = base_config()
    cfg["studies"] = {
        "a": {"p": [7, 11], "seed": [0, 1]},
        "b": {"p": 7},  # the same run as a's (p=7, seed 0)
    }
    plan = plan_of(only_figures(cfg, fig14={"study": "a"}))
    assert len(plan.study_runs["a"]) == 4
    shared = TrainConfig(**{**validate_config(cfg)["train"], "p": 7}).run_id
    assert plan.study_runs["b"] == [shared]
    assert plan.runs[shared].studies == ("a", "b")
    assert len(plan.runs) == 4
    assert {s.p for s in plan.splits.values()} == {7, 11}


def test_select_checkpoints_every_kth_plus_last_and_chunks_partition_them():
    assert select_checkpoints(10, 3) == [0, 3, 6, 9]
    assert select_checkpoints(11, 3) == [0, 3, 6, 9, 10]
    assert select_checkpoints(11, 0) == [10]  # final only
    assert select_checkpoints(1, 5) == [0]
    chunks = [select_checkpoints(11, 2, c, 3) for c in range(3)]
    assert sorted(sum(chunks, [])) == [0, 2, 4, 6, 8, 10]
    assert chunks[0] == [0, 6]
    with pytest.raises(ValueError):
        select_checkpoints(10, 1, 3, 3)
    with pytest.raises(ValueError):
        select_checkpoints(10, -1)


def test_stride_takes_the_finest_study_and_sampler_overrides():
    cfg = base_config()
    cfg["studies"] = {"s1": {"p": 7}, "s2": {"p": 7, "seed": 0}, "s3": {"p": 11}}
    only_figures(cfg, fig1={"study": "s1"}, h2={"studies": ["s2", "s3"]})
    cfg["llc"]["every"] = 4
    cfg["llc"]["every_by_study"] = {"s2": 3}
    cfg["llc"]["samplers"] = {
        "a": {"lr": 1e-4, "batch_size": 16},
        "b": {"lr": 1e-4, "batch_size": 16, "every_by_study": {"s1": 0, "s2": 0}},
        "c": {"lr": 1e-4, "batch_size": 16, "every": 0, "every_by_study": {"s3": 5}},
    }
    plan = plan_of(cfg)
    run7 = plan.runs[plan.study_runs["s1"][0]]
    run11 = plan.runs[plan.study_runs["s3"][0]]
    a, b, c = (plan.samplers[k] for k in "abc")
    assert run7.studies == ("s1", "s2")
    assert plan.stride(run7, a) == 3  # min(4 from s1, 3 from s2)
    assert plan.stride(run11, a) == 4
    assert plan.stride(run7, b) == 0  # every study asks for the final checkpoint only
    assert plan.stride(run11, b) == 4
    assert plan.stride(run7, c) == 0
    assert plan.stride(run11, c) == 5
    track = plan.track(run7, b)
    assert track.track == "final" and track.path.endswith("/final.parquet")
    assert track.chunks == 1  # one checkpoint: one job, whatever llc.chunks says
    assert plan.track(run7, a).path.endswith("/every3.parquet")


def test_llc_tracks_only_for_studies_with_llc_figures_and_sampler_coverage():
    plan = plan_of(base_config())
    # .test: LLC figures draw baseline, over_p, over_width, lr_wd, transformer (h2: over_p,
    # over_width); scaling (fig14) needs training only.
    assert "scaling" not in plan.llc_studies
    assert {"baseline", "over_p", "lr_wd", "transformer"} <= set(plan.llc_studies)
    cal = plan.samplers["calibrated"]
    runs_cal = {k[0] for k in plan.llc_jobs if k[1] == cal.sampler_id}
    expected = set(plan.study_runs["baseline"]) | set(plan.study_runs["over_p"])
    assert runs_cal == expected
    paper = plan.samplers["paper"]
    runs_paper = {k[0] for k in plan.llc_jobs if k[1] == paper.sampler_id}
    assert runs_paper == {r for s in plan.llc_studies for r in plan.study_runs[s]}
    # a calibrated track reads the calibration table of its run's model shape
    for job in (j for j in plan.llc_jobs.values() if j.sampler.name == "calibrated"):
        cal = job.calibration
        assert cal.shape == shape_of(job.run.train) and cal.name.startswith(f"{cal.shape}-")
        assert cal.path == f"results/calibration/{cal.name}.parquet"
        assert plan.calibrations[cal.name] == cal
        assert job.params()["sampler"] is None
    assert all(j.calibration is None for j in plan.llc_jobs.values() if j.sampler.name == "paper")


def test_first_seed_runs_pick_the_smallest_seed_of_each_setting():
    cfg = base_config()
    cfg["studies"] = {"s": {"lr": [1e-3, 1e-2], "seed": [2, 1]}}
    plan = plan_of(only_figures(cfg, fig4={"study": "s"}))
    runs = plan.first_seed_runs("s")
    assert sorted(r.train.lr for r in runs) == [1e-3, 1e-2]
    assert all(r.train.seed == 1 for r in runs)


def test_an_every_by_study_entry_for_another_study_changes_no_job_params():
    cfg = base_config()
    before = plan_of(cfg)
    cfg2 = copy.deepcopy(cfg)
    cfg2["llc"]["every_by_study"] = {"scaling": 3}  # a study without LLC figures
    after = plan_of(cfg2)
    assert {k: j.params() for k, j in before.llc_jobs.items()} == {
        k: j.params() for k, j in after.llc_jobs.items()
    }
    assert {n: f.params() for n, f in before.figures.items()} == {
        n: f.params() for n, f in after.figures.items()
    }


def test_changing_every_leaves_grids_and_calibrations_alone():
    cfg = base_config()
    before = plan_of(cfg)
    cfg2 = copy.deepcopy(cfg)
    cfg2["llc"]["every"] = 2
    after = plan_of(cfg2)
    assert {g: (j.path, j.params()) for g, j in before.grid_jobs.items()} == {
        g: (j.path, j.params()) for g, j in after.grid_jobs.items()
    }
    assert {s: (c.path, c.params()) for s, c in before.calibrations.items()} == {
        s: (c.path, c.params()) for s, c in after.calibrations.items()
    }
    assert before.samplers["paper"].sampler_id == after.samplers["paper"].sampler_id
    changed = [k for k in before.llc_jobs if k not in after.llc_jobs]
    assert changed  # the tracks themselves do change: they sample other checkpoints


def test_sampler_ids_follow_settings_not_names_and_calibration_grid_renames_calibrated():
    cfg = base_config()
    plan = plan_of(cfg)
    cfg2 = copy.deepcopy(cfg)
    cfg2["llc"]["samplers"]["renamed"] = cfg2["llc"]["samplers"].pop("paper")
    cfg2["figures"]["b2"]["sampler"] = "renamed"
    cfg2["figures"]["bias_reduced"]["sampler"] = "renamed"
    plan2 = plan_of(cfg2)
    assert plan2.samplers["renamed"].sampler_id == plan.samplers["paper"].sampler_id
    cfg3 = copy.deepcopy(cfg)
    cfg3["llc"]["calibration"]["grid"]["nbeta"] = [2.5]
    plan3 = plan_of(cfg3)
    assert plan3.samplers["calibrated"].sampler_id != plan.samplers["calibrated"].sampler_id
    assert plan3.samplers["paper"].sampler_id == plan.samplers["paper"].sampler_id
    # every shape's calibration gets new params and a new name; the shapes stay
    before, after = plan.calibrations, plan3.calibrations
    assert len(after) == len(before) and not set(after) & set(before)
    assert sorted(c.shape for c in after.values()) == sorted(c.shape for c in before.values())
    by_shape = {c.shape: c for c in before.values()}
    for cal in after.values():
        assert cal.params()["calibration"]["grid"]["nbeta"] == [2.5]
        assert cal.params() != by_shape[cal.shape].params()
        assert cal.runs == by_shape[cal.shape].runs


def test_figures_are_drawn_per_sampler_where_they_show_llc_values():
    plan = plan_of(base_config())
    names = set(plan.figures)
    assert "paper/fig1_llc_vs_p" in names and "calibrated/fig1_llc_vs_p" in names
    assert "calibrated/fig2_llc_vs_width" not in names  # calibrated covers baseline, over_p
    assert "fig4_lr_vs_gsm" in names  # training only: one figure
    fig3 = next(f for f in plan.figures.values() if f.key == "fig3")
    inputs = fig3.input_files()
    assert fig3.params()["samplers"] == ["calibrated", "paper"]  # sorted: order is not meaning
    assert len(inputs["llc"]) == 2 and inputs["train_log"].endswith("train_log.parquet")
    # one calibration figure per calibration (per model shape), none for the paper's sampler
    assert {n for n in names if n.startswith("fig_calibration_")} == {
        f"fig_calibration_{c}" for c in plan.calibrations
    }
    for name, cal in plan.calibrations.items():
        fig = plan.figures[f"fig_calibration_{name}"]
        assert fig.input_files() == {"calibration": cal.path}
        assert fig.params()["shape"] == cal.shape
    for fig in plan.figures.values():
        assert fig.path.startswith("results/figures/") and fig.path.endswith(".png")


def test_scorecard_reads_the_tables_and_both_samplers_tracks():
    plan = plan_of(base_config())
    inputs = plan.claims_inputs()
    assert inputs["runs"] == plan.runs_table_path
    assert len(inputs["fig3_0_llc"]) == 2  # both samplers on Figure 3's run
    assert plan.claims_params()["samplers"] == ["calibrated", "paper"]
    assert plan.claims_path in plan.table_targets()


def test_paper_config_is_taken_as_written_not_merged_into_the_default():
    """config/paper.yaml at its own sizes: every quadratic run at the width it states (1024
    unless a study sweeps width), none inherited from config/config.yaml's K=256 studies."""
    from grokking_llc.pipeline.config import load_workflow_config

    cfg = load_workflow_config([REPO / "config" / "paper.yaml"])
    plan = build_plan(cfg)
    widths = {r.train.width for r in plan.runs.values() if r.train.model == "quadratic"}
    swept = set(
        yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["studies"]["over_width"][
            "width"
        ]
    )
    assert widths <= swept | {1024}
    not_width_sweep = [
        r for r in plan.runs.values()
        if r.train.model == "quadratic" and "over_width" not in r.studies
    ]  # fmt: skip
    assert all(r.train.width == 1024 for r in not_width_sweep)


def test_cli_overrides_apply_on_top_of_the_users_file(tmp_path):
    from grokking_llc.pipeline.config import load_workflow_config

    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(base_config()))
    cfg = load_workflow_config([path], {"plots": {"dpi": "61"}, "device": "cpu"})
    assert cfg["plots"]["dpi"] == 61 and cfg["studies"] == validate_config(base_config())["studies"]


def test_figure_catalog_read_from_the_modules_matches_the_registry():
    from grokking_llc.figures import REGISTRY
    from grokking_llc.pipeline.catalog import figure_catalog

    catalog = figure_catalog()
    assert set(catalog) == set(REGISTRY)
    for key, spec in REGISTRY.items():
        info = catalog[key]
        assert (info.stem, info.reads, info.per_sampler) == (
            spec.stem,
            spec.reads,
            spec.per_sampler,
        )


def test_two_names_for_one_setting_share_tracks_but_each_gets_rows():
    cfg = base_config()
    cfg["llc"]["samplers"]["twin"] = dict(cfg["llc"]["samplers"]["paper"])
    plan = plan_of(cfg)
    assert plan.samplers["twin"].sampler_id == plan.samplers["paper"].sampler_id
    entries = plan.runs_table_entries()
    twin = {e["run_id"] for e in entries if e["sampler"] == "twin"}
    paper = {e["run_id"] for e in entries if e["sampler"] == "paper"}
    assert twin == paper and twin
    # one job per track, whichever name asked for it
    keys = [k for k in plan.llc_jobs if k[1] == plan.samplers["paper"].sampler_id]
    assert len(keys) == len(set(keys)) == len(paper)


def test_refine_names_adaptive_tracks_apart_and_changes_only_their_params():
    cfg = base_config()
    before = plan_of(copy.deepcopy(cfg))
    cfg["llc"]["samplers"]["paper"]["refine"] = {"coarse": 3, "tolerance": 0.2}
    after = plan_of(cfg)
    paper = after.samplers["paper"].sampler_id
    assert {k for k in after.llc_jobs if k[1] != paper} == {
        k for k in before.llc_jobs if k[1] != paper
    }  # other samplers' tracks: untouched
    assert any(j.every > 0 for k, j in after.llc_jobs.items() if k[1] == paper)
    olds = {(k[0], k[1]): j for k, j in before.llc_jobs.items() if k[1] == paper}
    for key, job in after.llc_jobs.items():
        if key[1] != paper:
            assert job.params() == before.llc_jobs[key].params()
            continue
        old = olds[(key[0], key[1])]
        if job.every == 0:  # a final-only track is one checkpoint: nothing to refine
            assert job.track == "final" and job.params() == old.params()
            continue
        assert job.track == f"every{job.every}-refine3-0.2-0.5"
        assert job.params() == {
            **old.params(),
            "refine": {"coarse": 3, "tolerance": 0.2, "max_fraction": 0.5},
        }
        assert job.path.endswith(f"/{job.track}.parquet")
    assert {j.sampler.sampler_id for j in after.llc_jobs.values()} == {
        j.sampler.sampler_id for j in before.llc_jobs.values()
    }  # the estimates are unchanged


@pytest.mark.parametrize(
    ("refine", "key"),
    [({"coarse": 1}, "coarse"), ({"tolerance": -1.0}, "tolerance"),
     ({"max_fraction": 0.0}, "max_fraction"), ({"max_fraction": 2.0}, "max_fraction"),
     ({"stride": 2}, "stride")],
)  # fmt: skip
def test_bad_refine_settings_are_refused_with_the_key(refine, key):
    cfg = base_config()
    cfg["llc"]["samplers"]["paper"]["refine"] = refine
    with pytest.raises(Exception, match=key):
        validate_config(cfg)


def test_runs_equal_but_for_the_seed_are_trained_together_within_the_stack_size():
    from grokking_llc.pipeline.jobs import MAX_TRAIN_STACK, train_stack_size

    cfg = base_config()
    cfg["studies"] = {
        "seeds": {"width": 8, "seed": list(range(8))},  # 8 runs of one setting
        "mixed": {"width": 8, "lr": [1.0e-3, 2.0e-3], "seed": [0, 1]},  # 2 settings x 2 seeds
        "alone": {"width": 16},  # one run of its setting
        "tf": {"model": "transformer", "width": 16, "loss": "cross_entropy",
               "model_options": {"ff_dim": 16}, "seed": [0, 1]},  # not batched: transformer
    }  # fmt: skip
    plan = plan_of(only_figures(cfg, fig14={"study": "seeds"}))
    groups = list(plan.train_groups.values())
    assert MAX_TRAIN_STACK == 6 and train_stack_size(7, 8) == 6
    sizes = sorted(len(g.runs) for g in groups)
    # seeds: 6 + 2; mixed: 2 + 2 (seed 0 at lr 1e-3 may be a seeds run: then 6 + 3 or so)
    grouped = [r.run_id for g in groups for r in g.runs]
    assert len(grouped) == len(set(grouped))  # a run is in one group at most
    assert sorted(grouped + plan.solo_runs) == sorted(plan.runs)
    for g in groups:
        base = {**g.runs[0].train.to_dict(), "seed": None}
        assert all({**r.train.to_dict(), "seed": None} == base for r in g.runs)
        assert [r.train.seed for r in g.runs] == sorted(r.train.seed for r in g.runs)
        assert g.runs[0].train.model == "quadratic"
        assert g.rule_name == f"train_group_{g.group_id}" and g.rule_name.isidentifier()
        assert g.params() == {"runs": [r.params() for r in g.runs]}
    assert max(sizes) == 6 and 1 not in sizes
    tf_runs = [rid for rid in plan.runs if rid.startswith("transformer")]
    assert len(tf_runs) == 2 and set(tf_runs) <= set(plan.solo_runs)


def test_stack_size_from_the_parameter_count():
    from grokking_llc.pipeline.jobs import TRAIN_STACK_FLOATS, train_stack_size

    assert train_stack_size(53, 64) == 6
    assert train_stack_size(53, 256) == 6  # 40,704 parameters: 6 fit in 250k floats
    assert train_stack_size(53, 512) == 3
    assert train_stack_size(53, 1024) == 1  # alone: stacking K=1024 does not pay
    assert train_stack_size(1, TRAIN_STACK_FLOATS) == 1


def test_plan_batches_exactly_the_runs_train_many_can_train():
    from grokking_llc.core.settings import TrainConfig
    from grokking_llc.training.train_many import can_batch

    seen = {True: 0, False: 0}
    for kw in ({}, {"model": "transformer", "loss": "cross_entropy"},
               {"loss": "cross_entropy"}):  # fmt: skip
        cfg = base_config()
        cfg["studies"] = {"s": {"width": 8, "seed": [0, 1], **kw}}
        plan = plan_of(only_figures(cfg, fig14={"study": "s"}))
        for rid, run in plan.runs.items():
            batched = can_batch(TrainConfig(**run.params()))
            assert (rid not in plan.solo_runs) == batched
            seen[batched] += 1
    assert seen[True] >= 2 and seen[False] >= 4


def test_batch_training_off_trains_every_run_alone():
    cfg = base_config()
    assert plan_of(copy.deepcopy(cfg)).train_groups  # lr_wd has two seeds per setting
    cfg["batch_training"] = False
    plan = plan_of(cfg)
    assert plan.train_groups == {} and plan.solo_runs == list(plan.runs)


def test_refine_leaves_final_only_tracks_alone():
    """A final-only track is one checkpoint: refine changes neither its name nor its params."""
    cfg = base_config()
    before = plan_of(copy.deepcopy(cfg))
    cfg["llc"]["samplers"]["calibrated"]["refine"] = {"coarse": 2}
    after = plan_of(cfg)
    finals = [k for k, j in after.llc_jobs.items() if j.every == 0]
    assert finals  # .test: the calibrated sampler's over_p runs are final-only
    for key in finals:
        job = after.llc_jobs[key]
        assert job.refine is None and job.track == "final"
        assert job.params() == before.llc_jobs[key].params()
        assert "refine" not in job.params()
    refined = [j for j in after.llc_jobs.values() if j.refine is not None]
    assert refined and all(dict(j.refine)["coarse"] == 2 for j in refined)


def test_one_calibration_per_model_shape_of_the_calibrated_sampler():
    """.test: the calibrated sampler estimates baseline (p 7) and over_p (p 7, 11, 13), all at
    width 16: three shapes, three calibrations, each at a run of its own shape."""
    plan = plan_of(base_config())
    sampler = plan.samplers["calibrated"]
    shapes = {shape_of(r.train) for s in ("baseline", "over_p")
              for r in map(plan.runs.get, plan.study_runs[s])}  # fmt: skip
    assert shapes == {"quadratic-p7-K16", "quadratic-p11-K16", "quadratic-p13-K16"}
    assert sorted(c.shape for c in plan.calibrations.values()) == sorted(shapes)
    for cal in plan.calibrations.values():
        assert [shape_of(r.train) for r in cal.runs] == [cal.shape]  # llc.calibration.runs: 1
        assert cal.runs == tuple(plan.shape_runs(sampler, cal.shape))
        assert cal.base == sampler.settings and cal.backend == sampler.backend
        assert cal.path in plan.intermediate_targets() and cal.path in plan.table_targets()
    # the paper's sampler (settings as written) has no calibration
    assert plan.calibration_for(plan.samplers["paper"], plan.first_run("baseline")) is None


def test_a_shapes_calibration_runs_at_its_most_typical_run():
    """Fewest training settings away from `train` first, then the smallest seed: the run with
    the config's own lr at seed 1 beats a run at another lr at seed 0."""
    cfg = base_config()
    cfg["studies"]["sweep"] = {"lr": [3.0e-3, 1.0e-2], "seed": [1, 2]}
    cfg["figures"]["fig4"] = {"study": "sweep"}
    cfg["figures"]["lr_vs_max_llc"] = {"study": "sweep"}
    plan = plan_of(calibrated_only(cfg, ["sweep"]))
    (cal,) = plan.calibrations.values()
    (run,) = cal.runs
    assert (run.train.lr, run.train.seed) == (1.0e-2, 1)  # train.lr is 1e-2
    cfg["llc"]["calibration"]["runs"] = 3
    runs = next(iter(plan_of(cfg).calibrations.values())).runs
    assert [(r.train.lr, r.train.seed) for r in runs] == [(1.0e-2, 1), (1.0e-2, 2), (3.0e-3, 1)]


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.update(seed=[0, 1, 2]),  # a seed added
        lambda s: s.update(lr=[3.0e-3, 1.0e-2, 3.0e-2]),  # a sweep value added
        lambda s: s.update(weight_decay=[0.0, 1.0e-4, 1.0e-3]),  # another swept key
    ],
    ids=["seed", "lr", "weight_decay"],
)
def test_adding_a_seed_or_a_sweep_value_does_not_move_a_shapes_calibration(edit):
    cfg = base_config()
    cfg["figures"]["lr_vs_max_llc"] = {"study": "lr_wd"}
    calibrated_only(cfg, ["lr_wd"])
    before = plan_of(copy.deepcopy(cfg))
    edit(cfg["studies"]["lr_wd"])
    after = plan_of(cfg)
    assert len(after.study_runs["lr_wd"]) > len(before.study_runs["lr_wd"])
    assert {n: c.params() for n, c in after.calibrations.items()} == {
        n: c.params() for n, c in before.calibrations.items()
    }
    sid = before.samplers["calibrated"].sampler_id
    assert after.samplers["calibrated"].sampler_id == sid
    for key, job in before.llc_jobs.items():  # the old runs' tracks: untouched
        assert after.llc_jobs[key].params() == job.params()
        assert after.llc_jobs[key].calibration == job.calibration


def test_a_new_shape_adds_its_calibration_and_leaves_the_others():
    cfg = base_config()
    before = plan_of(copy.deepcopy(cfg))
    cfg["studies"]["over_p"]["p"].append(17)
    after = plan_of(cfg)
    new = set(after.calibrations) - set(before.calibrations)
    assert set(before.calibrations) <= set(after.calibrations)
    assert [after.calibrations[n].shape for n in new] == ["quadratic-p17-K16"]
    for name, cal in before.calibrations.items():
        assert after.calibrations[name].params() == cal.params()


def test_a_calibration_edit_changes_only_calibrations_and_calibrated_tracks():
    cfg = base_config()
    before = plan_of(copy.deepcopy(cfg))
    cfg["llc"]["calibration"]["num_steps"] = 50
    after = plan_of(cfg)
    cal_before, cal_after = (p.samplers["calibrated"].sampler_id for p in (before, after))
    assert cal_before != cal_after
    assert not set(after.calibrations) & set(before.calibrations)
    changed = {k for k in before.llc_jobs if k not in after.llc_jobs}
    assert changed == {k for k in before.llc_jobs if k[1] == cal_before}
    for key, job in after.llc_jobs.items():
        if key[1] != cal_after:
            assert job.params() == before.llc_jobs[key].params()
    assert {g: j.params() for g, j in after.grid_jobs.items()} == {
        g: j.params() for g, j in before.grid_jobs.items()
    }
    assert after.train_groups.keys() == before.train_groups.keys()
    assert {r: j.params() for r, j in after.runs.items()} == {
        r: j.params() for r, j in before.runs.items()
    }


def test_two_calibrated_samplers_calibrate_each_shape_apart_unless_they_are_one_setting():
    cfg = base_config()
    twin = copy.deepcopy(cfg["llc"]["samplers"]["calibrated"])
    cfg["llc"]["samplers"]["twin"] = twin
    plan = plan_of(copy.deepcopy(cfg))
    assert plan.samplers["twin"].sampler_id == plan.samplers["calibrated"].sampler_id
    assert len(plan.calibrations) == 3  # one setting: one calibration per shape
    twin["num_chains"] = 6  # another base: its own calibration of each shape
    plan = plan_of(cfg)
    assert len(plan.calibrations) == 6
    for s in ("calibrated", "twin"):
        sampler = plan.samplers[s]
        for run in map(plan.runs.get, plan.study_runs["over_p"]):
            cal = plan.calibration_for(sampler, run)
            assert cal.base == sampler.settings and plan.calibrations[cal.name] == cal


def test_a_transformer_is_a_shape_of_its_own():
    cfg = base_config()
    cfg["llc"]["samplers"]["calibrated"]["studies"] = ["baseline", "transformer"]
    cfg["llc"]["samplers"]["calibrated"]["every_by_study"] = {"transformer": 0}
    plan = plan_of(cfg)
    assert sorted(c.shape for c in plan.calibrations.values()) == [
        "quadratic-p7-K16", "transformer-p7-K16",
    ]  # fmt: skip


def test_no_calibrated_sampler_no_calibration():
    cfg = base_config()
    del cfg["llc"]["samplers"]["calibrated"]
    plan = plan_of(cfg)
    assert plan.calibrations == {}
    assert not [n for n in plan.figures if n.startswith("fig_calibration")]
    assert not [p for p in plan.intermediate_targets() if "/calibration/" in p]


@pytest.mark.parametrize(
    "args, message",
    [
        ((10, 1, 3, 3), "chunk 3 outside 0..2"),
        ((10, 1, -1, 2), "chunk -1 outside 0..1"),
        ((0, 1), "a run without checkpoints has no LLC track"),
        ((10, -2), "every must be >= 0, got -2"),
    ],
)
def test_select_checkpoints_refuses_with_its_message(args, message):
    with pytest.raises(ValueError) as err:
        select_checkpoints(*args)
    assert str(err.value) == message


def test_sampler_ids_and_the_calibration_params(plan):
    assert plan.llc_studies == ["base"]
    assert plan.samplers["paper"].sampler_id == PAPER_SID
    assert plan.samplers["paper"].backend == "fast"
    assert plan.samplers["cal"].sampler_id == CAL_SID
    assert plan.samplers["cal"].backend == "fast"
    assert list(plan.calibrations) == [CAL_NAME]
    cal = plan.calibrations[CAL_NAME]
    assert cal.params() == CAL_PARAMS
    assert cal.cal_id == short_hash(CAL_PARAMS, {})
    assert (cal.shape, cal.name) == ("quadratic-p7-K16", CAL_NAME)
    assert cal.path == CAL_PATH


def test_calibration_params_are_what_the_calibration_stage_accepts(plan):
    from grokking_llc.pipeline.stages.calibrate import CALIBRATION_DEFAULTS

    params = plan.calibrations[CAL_NAME].params()
    assert set(params) == {"calibration", "runs"}
    assert set(params["calibration"]) <= set(CALIBRATION_DEFAULTS)
    # every key of llc.calibration but `runs` reaches the stage (none dropped on the way)
    assert set(CAL_SPEC) <= set(params["calibration"])
    assert [TrainConfig(**r).run_id for r in params["runs"]] == [R0.run_id]


def test_calibration_params_without_a_grid():
    job = CalibrationJob("s", "devinterp", SamplerConfig(), (("num_steps", 10),), ())
    assert job.params() == {
        "calibration": {
            "num_steps": 10,
            "grid": {},
            "backend": "devinterp",
            "base": SamplerConfig().to_dict(),
        },
        "runs": [],
    }


def test_one_calibration_per_shape_at_its_most_typical_run_written_out():
    from grokking_llc.pipeline.catalog import figure_catalog

    plan = plan_of_edge(shape_config())
    p11 = {**CAL_PARAMS, "runs": [R11.to_dict()]}
    name11 = f"quadratic-p11-K16-{short_hash(p11, {})}"
    assert {n: c.params() for n, c in plan.calibrations.items()} == {
        CAL_NAME: CAL_PARAMS,  # R0 (seed 0), not R1: the most typical run of the shape
        name11: p11,
    }
    assert {n: c.shape for n, c in plan.calibrations.items()} == {
        CAL_NAME: "quadratic-p7-K16",
        name11: "quadratic-p11-K16",
    }
    # more shapes rename neither the sampler nor the first shape's calibration
    assert plan.samplers["cal"].sampler_id == CAL_SID
    want = {R0.run_id: CAL_NAME, R1.run_id: CAL_NAME, R11.run_id: name11}
    cal_jobs = [j for j in plan.llc_jobs.values() if j.sampler.name == "cal"]
    assert {j.run.run_id: j.calibration.name for j in cal_jobs} == want
    assert all(j.params()["sampler"] is None for j in cal_jobs)
    assert all(j.calibration is None for j in plan.llc_jobs.values() if j.sampler.name == "paper")
    caption = figure_catalog()["calibration"].caption
    for name, path in ((CAL_NAME, CAL_PATH), (name11, f"results/calibration/{name11}.parquet")):
        fig = plan.figures[f"fig_calibration_{name}"]
        assert fig.path == f"results/figures/fig_calibration_{name}.png"
        assert fig.input_files() == {"calibration": path}
        assert fig.params() == {"key": "calibration", "plots": {"dpi": 60, "style": "whitegrid"},
                                "shape": plan.calibrations[name].shape,
                                "caption": caption}  # fmt: skip
    assert sorted(n for n in plan.figures if n.startswith("fig_calibration")) == sorted(
        f"fig_calibration_{n}" for n in (CAL_NAME, name11)
    )


def test_calibration_runs_takes_the_shapes_most_typical_runs_first():
    cfg = shape_config()
    cfg["llc"]["calibration"]["runs"] = 2
    plan = plan_of_edge(cfg)
    spec = {k: v for k, v in CAL_PARAMS.items() if k != "runs"}
    p7 = {**spec, "runs": [R0.to_dict(), R1.to_dict()]}  # seed 0 first
    p11 = {**spec, "runs": [R11.to_dict()]}  # the shape has one run
    assert {n: c.params() for n, c in plan.calibrations.items()} == {
        f"quadratic-p7-K16-{short_hash(p7, {})}": p7,
        f"quadratic-p11-K16-{short_hash(p11, {})}": p11,
    }
    # the sampler keeps its id: its p 7 tracks read the new calibration (a new input file)
    assert plan.samplers["cal"].sampler_id == CAL_SID
    assert plan.samplers["paper"].sampler_id == PAPER_SID


def test_llc_jobs_params_and_chunk_paths(plan):
    assert list(plan.llc_jobs) == sorted(
        [(R0.run_id, PAPER_SID, "every3"), (R0.run_id, CAL_SID, "every3")]
    )
    paper = plan.llc_jobs[(R0.run_id, PAPER_SID, "every3")]
    assert paper.params() == {
        "run": R0.to_dict(),
        "backend": "fast",
        "sampler": PAPER_SETTINGS.to_dict(),
        "every": 3,
    }
    assert paper.chunk_paths() == [
        f"results/llc/{R0.run_id}/{PAPER_SID}/every3-chunk0of2.parquet",
        f"results/llc/{R0.run_id}/{PAPER_SID}/every3-chunk1of2.parquet",
    ]
    cal = plan.llc_jobs[(R0.run_id, CAL_SID, "every3")]
    assert cal.params() == {"run": R0.to_dict(), "backend": "fast", "sampler": None, "every": 3}
    assert cal.calibration == plan.calibrations[CAL_NAME]
    assert paper.calibration is None


def test_grid_params(plan):
    assert plan.grid_jobs["b2"].params() == {
        "run": R0.to_dict(),
        "backend": "fast",
        "sampler": PAPER_SETTINGS.to_dict(),
        "grid": [
            {"localization": 1.0, "lr": 1e-4},
            {"localization": 10.0, "lr": 1e-4},
            {"localization": 1.0, "lr": 3e-4},
            {"localization": 10.0, "lr": 3e-4},
        ],
    }
    nbeta = 16 / math.log(16)  # SPEC section 4: m / ln m at the sampler's batch of 16
    grid = plan.grid_jobs["bias_reduced"].params()["grid"]
    assert [g["nbeta"] for g in grid] == pytest.approx([0.5 * nbeta, 2.0 * nbeta])
    assert plan.grid_jobs["b2"].path == (f"results/llc_grid/b2/{R0.run_id}-{PAPER_SID}.parquet")


def test_split_run_and_summary_params(plan):
    assert {k: s.params() for k, s in plan.splits.items()} == {
        "p7-f0.6-s0": {"p": 7, "train_frac": 0.6, "seed": 0},
        "p11-f0.6-s0": {"p": 11, "train_frac": 0.6, "seed": 0},
    }
    assert plan.training_summary_params() == {
        R0.run_id: {"run": R0.to_dict(), "studies": ["base", "seeds"]},
        R1.run_id: {"run": R1.to_dict(), "studies": ["seeds"]},
        R11.run_id: {"run": R11.to_dict(), "studies": ["other"]},
    }


def test_theory_params_take_the_finest_positive_stride():
    cfg = config()
    cfg["llc"]["samplers"]["cal"]["every"] = 1
    plan = plan_of_edge(cfg)
    assert plan.theory_runs == [plan.runs[R0.run_id]]
    assert plan.theory_params(plan.runs[R0.run_id]) == {"run": R0.to_dict(), "every": 1}
    cfg["llc"]["samplers"]["cal"]["every"] = 0  # cal: final only, paper: every 3rd
    plan = plan_of_edge(cfg)
    assert plan.theory_params(plan.runs[R0.run_id]) == {"run": R0.to_dict(), "every": 3}
    cfg["llc"]["samplers"]["paper"]["every"] = 0
    plan = plan_of_edge(cfg)
    assert plan.theory_params(plan.runs[R0.run_id]) == {"run": R0.to_dict(), "every": 0}


def test_figure_params_name_their_figure(plan):
    assert plan.figures
    for job in plan.figures.values():
        assert job.params()["key"] == job.key
        assert job.params()["plots"] == {"dpi": 60, "style": "whitegrid"}


def test_intermediate_and_table_targets_written_out(plan):
    assert plan.intermediate_targets() == [
        "results/splits/p11-f0.6-s0.parquet",
        "results/splits/p7-f0.6-s0.parquet",
        *[
            p
            for r in sorted([R0, R1, R11], key=lambda r: r.run_id)
            for p in (
                f"results/runs/{r.run_id}/checkpoints.pt",
                f"results/runs/{r.run_id}/train_log.parquet",
            )
        ],
        *[
            p
            for sid in sorted([PAPER_SID, CAL_SID])
            for p in (
                llc_path(R0, sid).replace(".parquet", "-chunk0of2.parquet"),
                llc_path(R0, sid).replace(".parquet", "-chunk1of2.parquet"),
                llc_path(R0, sid),
            )
        ],
        f"results/llc_grid/b2/{R0.run_id}-{PAPER_SID}.parquet",
        f"results/llc_grid/bias_reduced/{R0.run_id}-{PAPER_SID}.parquet",
        CAL_PATH,
    ]
    assert plan.table_targets() == [
        "results/tables/training_summary.parquet",
        "results/tables/runs.parquet",
        "results/tables/claims.parquet",
        f"results/theory/{R0.run_id}.parquet",
        CAL_PATH,
    ]


def test_runs_table_entries_written_out(plan):
    assert plan.runs_table_entries() == [
        {"run_id": R0.run_id, "sampler": "cal", "sampler_id": CAL_SID,
         "path": llc_path(R0, CAL_SID)},
        {"run_id": R0.run_id, "sampler": "paper", "sampler_id": PAPER_SID,
         "path": llc_path(R0, PAPER_SID)},
    ]  # fmt: skip


def test_claims_inputs_and_params_written_out(plan):
    track = [llc_path(R0, CAL_SID), llc_path(R0, PAPER_SID)]  # samplers in sorted order
    assert plan.claims_inputs() == {
        "runs": "results/tables/runs.parquet",
        "training": "results/tables/training_summary.parquet",
        "fig3_0_train_log": f"results/runs/{R0.run_id}/train_log.parquet",
        "fig3_0_llc": track,
    }
    assert plan.claims_params() == {
        "samplers": ["cal", "paper"],
        "studies": {"fig3": "base", "b2": "base", "bias_reduced": "base"},
        "published": [],
        "seed": 0,
        "fig3_tracks": [{"samplers": ["cal", "paper"], "run": R0.to_dict()}],
        "fig13_tracks": [],
        "theory_baseline": {"p": 7, "width": 16, "train_frac": 0.6, "data_seed": 0},
    }


def test_claims_and_figure_3_with_a_sampler_drawn_on_its_own_study():
    """figures.fig3.by_sampler: the calibrated sampler's Figure 3 (and its claim) on another
    study's first run, in its own figure; the other samplers stay on fig3.study."""
    cfg = config()
    cfg["llc"]["samplers"]["cal"]["studies"] = ["base", "other"]
    cfg["figures"]["fig3"] = {"study": "base", "by_sampler": {"cal": "other"}}
    plan = plan_of_edge(cfg)
    assert plan.claims_inputs() == {
        "runs": "results/tables/runs.parquet",
        "training": "results/tables/training_summary.parquet",
        "fig3_0_train_log": f"results/runs/{R0.run_id}/train_log.parquet",
        "fig3_0_llc": [llc_path(R0, PAPER_SID)],
        "fig3_1_train_log": f"results/runs/{R11.run_id}/train_log.parquet",
        "fig3_1_llc": [llc_path(R11, CAL_SID)],
    }
    params = plan.claims_params()
    assert params["fig3_tracks"] == [
        {"samplers": ["paper"], "run": R0.to_dict()},
        {"samplers": ["cal"], "run": R11.to_dict()},
    ]
    shared = plan.figures["fig3_llc_tracks_generalisation"]
    own = plan.figures["cal/fig3_llc_tracks_generalisation"]
    assert shared.input_files() == {
        "train_log": f"results/runs/{R0.run_id}/train_log.parquet",
        "llc": [llc_path(R0, PAPER_SID)],
    }
    assert own.input_files() == {
        "train_log": f"results/runs/{R11.run_id}/train_log.parquet",
        "llc": [llc_path(R11, CAL_SID)],
    }
    assert own.path == "results/figures/cal/fig3_llc_tracks_generalisation.png"
    assert (own.params()["samplers"], own.params()["study"]) == (["cal"], "other")
    assert "by_sampler" not in own.params()["options"]
    # the calibrated sampler's shapes: base's (p 7) and other's (p 11)
    assert sorted(c.shape for c in plan.calibrations.values()) == [
        "quadratic-p11-K16",
        "quadratic-p7-K16",
    ]


def test_claims_with_figure_13_and_samplers_limited_to_studies():
    cfg = config()
    cfg["studies"]["tr"] = {"model": "transformer", "loss": "cross_entropy", "lr": 1e-3,
                            "model_options": {"ff_dim": 16}}  # fmt: skip
    cfg["llc"]["samplers"]["paper"]["studies"] = ["base", "tr"]
    cfg["figures"]["fig13"] = {"study": "tr"}
    plan = plan_of_edge(cfg)
    rt = TrainConfig(**{**TRAIN, **cfg["studies"]["tr"]})
    inputs = plan.claims_inputs()
    assert inputs["fig13_0_train_log"] == f"results/runs/{rt.run_id}/train_log.parquet"
    assert inputs["fig13_0_llc"] == [llc_path(rt, PAPER_SID)]
    assert inputs["fig3_0_llc"] == [llc_path(R0, CAL_SID), llc_path(R0, PAPER_SID)]
    params = plan.claims_params()
    assert params["fig13_tracks"] == [{"samplers": ["paper"], "run": rt.to_dict()}]
    assert params["studies"]["fig13"] == "tr"


def test_claims_without_figure_3_or_with_a_transformer_baseline():
    cfg = config()
    cfg["figures"]["fig3"] = {"study": None}
    cfg["figures"]["fig13"] = {"study": "base"}
    plan = plan_of_edge(cfg)
    params = plan.claims_params()
    assert params["theory_baseline"] is None
    assert params["fig3_tracks"] == []
    assert params["fig13_tracks"] == [{"samplers": ["cal", "paper"], "run": R0.to_dict()}]
    assert not [k for k in plan.claims_inputs() if k.startswith("fig3_")]
    assert "fig13_0_llc" in plan.claims_inputs()
    cfg = config()
    cfg["studies"]["base"] = {"model": "transformer", "loss": "cross_entropy", "lr": 1e-3,
                              "model_options": {"ff_dim": 16}}  # fmt: skip
    assert plan_of_edge(cfg).claims_params()["theory_baseline"] is None


def test_a_study_without_llc_figures_asks_for_no_stride():
    # R0 is in base (an LLC study, stride 4) and seeds (no LLC figure, stride 2): 4
    plan = plan_of_edge(stride_config(every=4, every_by_study={"seeds": 2}))
    assert plan.stride(plan.runs[R0.run_id], plan.samplers["paper"]) == 4


def test_zero_asks_for_nothing_when_another_study_asks_for_a_stride():
    cfg = stride_config(every=4)
    cfg["llc"]["samplers"]["paper"]["every_by_study"] = {"base": 0}
    cfg["figures"]["traces"] = {"study": "seeds"}
    plan = plan_of_edge(cfg)
    assert plan.stride(plan.runs[R0.run_id], plan.samplers["paper"]) == 4
    assert plan.stride(plan.runs[R1.run_id], plan.samplers["paper"]) == 4


def test_stride_one_is_every_checkpoint_in_chunks():
    plan = plan_of_edge(stride_config(every=1))
    job = plan.track(plan.runs[R0.run_id], plan.samplers["paper"])
    assert (job.every, job.chunks, job.track) == (1, 2, "every1")
    cfg = stride_config(every=1)
    cfg["llc"]["samplers"]["paper"]["every"] = 0
    plan = plan_of_edge(cfg)
    job = plan.track(plan.runs[R0.run_id], plan.samplers["paper"])
    assert (job.every, job.chunks, job.track) == (0, 1, "final")
