"""The plan's job params, paths and target lists written out by hand for one small config, and the
stride rule at its edges. Expected values are built here from the config's literals (TrainConfig
and SamplerConfig of those literals, grokking_llc.pipeline.config's ids, SHA-256 of the hand-built
calibration params), never read back from the plan; the keys are the ones the stage entry
points read (grokking_llc.pipeline.stages.*). Cases found unchecked by the mutation run
(docs/mutation.md)."""

import copy
import math

import pytest

from grokking_llc.core.settings import SamplerConfig, TrainConfig, sampler_id, short_hash
from grokking_llc.pipeline.config import validate_config
from grokking_llc.pipeline.plan import CalibrationJob, build_plan
from grokking_llc.sampling.refine import select_checkpoints

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


def plan_of(cfg):
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
    return plan_of(config())


# ----------------------------------------------------------------------------- checkpoints


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


# ----------------------------------------------------------------------------- samplers and jobs


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


def shape_config() -> dict:
    """config() with the calibrated sampler on every study: two shapes, quadratic p 7 (R0 and
    R1, seeds 0 and 1) and p 11 (R11), at width 16."""
    cfg = config()
    cfg["llc"]["samplers"]["cal"]["studies"] = ["base", "seeds", "other"]
    cfg["figures"].update(fig1={"study": "seeds"}, fig2={"study": "other"})
    return cfg


def test_one_calibration_per_shape_at_its_most_typical_run_written_out():
    from grokking_llc.pipeline.catalog import figure_catalog

    plan = plan_of(shape_config())
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
    plan = plan_of(cfg)
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
    plan = plan_of(cfg)
    assert plan.theory_runs == [plan.runs[R0.run_id]]
    assert plan.theory_params(plan.runs[R0.run_id]) == {"run": R0.to_dict(), "every": 1}
    cfg["llc"]["samplers"]["cal"]["every"] = 0  # cal: final only, paper: every 3rd
    plan = plan_of(cfg)
    assert plan.theory_params(plan.runs[R0.run_id]) == {"run": R0.to_dict(), "every": 3}
    cfg["llc"]["samplers"]["paper"]["every"] = 0
    plan = plan_of(cfg)
    assert plan.theory_params(plan.runs[R0.run_id]) == {"run": R0.to_dict(), "every": 0}


def test_figure_params_name_their_figure(plan):
    assert plan.figures
    for job in plan.figures.values():
        assert job.params()["key"] == job.key
        assert job.params()["plots"] == {"dpi": 60, "style": "whitegrid"}


# ----------------------------------------------------------------------------- targets


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


# ----------------------------------------------------------------------------- scorecard


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
    plan = plan_of(cfg)
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
    plan = plan_of(cfg)
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
    plan = plan_of(cfg)
    params = plan.claims_params()
    assert params["theory_baseline"] is None
    assert params["fig3_tracks"] == []
    assert params["fig13_tracks"] == [{"samplers": ["cal", "paper"], "run": R0.to_dict()}]
    assert not [k for k in plan.claims_inputs() if k.startswith("fig3_")]
    assert "fig13_0_llc" in plan.claims_inputs()
    cfg = config()
    cfg["studies"]["base"] = {"model": "transformer", "loss": "cross_entropy", "lr": 1e-3,
                              "model_options": {"ff_dim": 16}}  # fmt: skip
    assert plan_of(cfg).claims_params()["theory_baseline"] is None


# ----------------------------------------------------------------------------- strides


def stride_config(**llc) -> dict:
    cfg = config()
    cfg["figures"] = {"fig3": {"study": "base"}, "traces": {"study": None}}
    cfg["llc"]["samplers"] = {"paper": dict(PAPER)}
    cfg["llc"].update(llc)
    return cfg


def test_a_study_without_llc_figures_asks_for_no_stride():
    # R0 is in base (an LLC study, stride 4) and seeds (no LLC figure, stride 2): 4
    plan = plan_of(stride_config(every=4, every_by_study={"seeds": 2}))
    assert plan.stride(plan.runs[R0.run_id], plan.samplers["paper"]) == 4


def test_zero_asks_for_nothing_when_another_study_asks_for_a_stride():
    cfg = stride_config(every=4)
    cfg["llc"]["samplers"]["paper"]["every_by_study"] = {"base": 0}
    cfg["figures"]["traces"] = {"study": "seeds"}
    plan = plan_of(cfg)
    assert plan.stride(plan.runs[R0.run_id], plan.samplers["paper"]) == 4
    assert plan.stride(plan.runs[R1.run_id], plan.samplers["paper"]) == 4


def test_stride_one_is_every_checkpoint_in_chunks():
    plan = plan_of(stride_config(every=1))
    job = plan.track(plan.runs[R0.run_id], plan.samplers["paper"])
    assert (job.every, job.chunks, job.track) == (1, 2, "every1")
    cfg = stride_config(every=1)
    cfg["llc"]["samplers"]["paper"]["every"] = 0
    plan = plan_of(cfg)
    job = plan.track(plan.runs[R0.run_id], plan.samplers["paper"])
    assert (job.every, job.chunks, job.track) == (0, 1, "final")
