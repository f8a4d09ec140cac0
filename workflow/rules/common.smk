# Helpers only: read and validate the config, build the plan, map wildcards to plan entries.
# Every decision about what to compute lives in src/grokking_llc/plan.py (unit-tested).
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from grokking_llc.config import ConfigError, load_workflow_config  # noqa: E402
from grokking_llc.plan import RESULTS, build_plan  # noqa: E402
from grokking_llc.versions import code_version  # noqa: E402

# Jobs inherit the environment: silence devinterp's per-chain progress bars in job logs.
os.environ.setdefault("TQDM_DISABLE", "1")

try:
    _validated = load_workflow_config(
        workflow.config_settings.configfiles, workflow.config_settings.config
    )
    PLAN = build_plan(_validated)
except ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_validated)

DEVICE = config["device"]


wildcard_constraints:
    split="|".join(PLAN.splits) or "NO_SPLITS",
    run="|".join(PLAN.runs) or "NO_RUNS",
    sampler="|".join(sorted({k[1] for k in PLAN.llc_jobs} | {g.sampler.sampler_id for g in PLAN.grid_jobs.values()})) or "NO_SAMPLERS",
    track=r"every\d+(-refine\d+-[0-9.e+-]+-[0-9.e+-]+)?|final",
    chunk=r"\d+",
    chunks=r"\d+",
    grid="|".join(PLAN.grid_jobs) or "NO_GRIDS",
    study="|".join(PLAN.calibrations) or "NO_CALIBRATIONS",
    figure="|".join(PLAN.figures) or "NO_FIGURES",


def gather_in_process(chunks, out, log_path):
    from grokking_llc.stages.gather import run_gather_llc

    df = run_gather_llc(chunks, out)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    Path(log_path).write_text(f"gathered {len(chunks)} chunk(s), {len(df)} rows into {out}\n")


def get_split_params(wildcards):
    return PLAN.splits[wildcards.split].params()


def get_run_params(wildcards):
    return PLAN.runs[wildcards.run].params()


def get_run_split(wildcards):
    return PLAN.runs[wildcards.run].split_path


def get_work_dir(wildcards):
    return PLAN.runs[wildcards.run].work_dir


def _llc_job(wildcards):
    return PLAN.llc_jobs[(wildcards.run, wildcards.sampler, wildcards.track)]


def get_llc_inputs(wildcards):
    job = _llc_job(wildcards)
    inputs = {
        "checkpoints": job.run.checkpoints,
        "train_log": job.run.train_log,
        "split": job.run.split_path,
    }
    if job.calibration is not None:
        inputs["calibration"] = job.calibration.path
    return inputs


def get_llc_params(wildcards):
    return _llc_job(wildcards).params()


def get_llc_chunks(wildcards):
    return _llc_job(wildcards).chunk_paths()


def _grid_job(wildcards):
    job = PLAN.grid_jobs[wildcards.grid]
    if (job.run.run_id, job.sampler.sampler_id) != (wildcards.run, wildcards.sampler):
        raise WorkflowError(f"no grid job {wildcards.grid} for {wildcards.run}-{wildcards.sampler}")
    return job


def get_grid_inputs(wildcards):
    run = _grid_job(wildcards).run
    return {"checkpoints": run.checkpoints, "train_log": run.train_log, "split": run.split_path}


def get_grid_params(wildcards):
    return _grid_job(wildcards).params()


def get_calibration_inputs(wildcards):
    job = PLAN.calibrations[wildcards.study]
    return {
        "checkpoints": [r.checkpoints for r in job.runs],
        "train_logs": [r.train_log for r in job.runs],
        "splits": [r.split_path for r in job.runs],
    }


def get_calibration_params(wildcards):
    return PLAN.calibrations[wildcards.study].params()


def get_theory_inputs(wildcards):
    run = PLAN.runs[wildcards.run]
    return {"checkpoints": run.checkpoints, "train_log": run.train_log}


def get_theory_params(wildcards):
    return PLAN.theory_params(PLAN.runs[wildcards.run])


def get_figure_inputs(wildcards):
    return PLAN.figures[wildcards.figure].input_files()


def get_figure_params(wildcards):
    return PLAN.figures[wildcards.figure].params()


def get_scorecard_targets():
    return [PLAN.claims_path] if PLAN.llc_jobs else []
