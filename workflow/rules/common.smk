# Helpers only: read and validate the config, build the plan, map wildcards to plan entries.
# Every decision about what to compute lives in src/grokking_llc/plan.py (unit-tested).
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from grokking_llc.core.settings import ConfigError

from grokking_llc.pipeline.config import load_workflow_config  # noqa: E402
from grokking_llc.core.io import heal_outputs, provenance  # noqa: E402
from grokking_llc.pipeline.plan import RESULTS, build_plan  # noqa: E402
from grokking_llc.pipeline.versions import code_version  # noqa: E402

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
    calibration="|".join(PLAN.calibrations) or "NO_CALIBRATIONS",
    figure="|".join(PLAN.figures) or "NO_FIGURES",


def gather_in_process(chunks, out, log_path, expected=None):
    from grokking_llc.pipeline.stages.gather import run_gather_llc

    df = run_gather_llc(chunks, out, provenance=expected)
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
    job = PLAN.calibrations[wildcards.calibration]
    return {
        "checkpoints": [r.checkpoints for r in job.runs],
        "train_logs": [r.train_log for r in job.runs],
        "splits": [r.split_path for r in job.runs],
    }


def get_calibration_params(wildcards):
    return PLAN.calibrations[wildcards.calibration].params()


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


def get_summary_targets():
    """The summary tables the figures and the scorecard are drawn from: targets of `figures`
    too, so that one moved aside as damaged is rebuilt (see planned_outputs)."""
    return [PLAN.training_summary_path] + ([PLAN.runs_table_path] if PLAN.llc_jobs else [])


# ------------------------------------------------------------------------------------------
# Provenance (grokking_llc.core.io): the ids and settings hash each output must carry, as its job
# computes them from its params. Jobs check their inputs against these; the check below
# compares every output's digest record with them.
# ------------------------------------------------------------------------------------------


def run_provenance(run):
    return provenance(run.run_id, run.params())


def llc_provenance(job):
    return provenance(job.run.run_id, job.params(), sampler_id=job.sampler.sampler_id)


def calibration_provenance(cal):
    return provenance([r.run_id for r in cal.runs], cal.params())


def get_llc_provenance(wildcards):
    return llc_provenance(_llc_job(wildcards))


def get_llc_input_provenance(wildcards):
    """What an estimate_llc job checks beyond its run (which its params name): the
    calibration table of a calibrated sampler."""
    job = _llc_job(wildcards)
    cal = job.calibration
    return {"calibration": calibration_provenance(cal) if cal is not None else {}}


def planned_outputs():
    """Every output of the plan -> the provenance it must carry (None: it carries none)."""
    out = {s.path: None for s in PLAN.splits.values()}
    for run in PLAN.runs.values():
        out[run.checkpoints] = out[run.train_log] = run_provenance(run)
    for job in PLAN.llc_jobs.values():
        for path in [*job.chunk_paths(), job.path]:
            out[path] = llc_provenance(job)
    for grid in PLAN.grid_jobs.values():
        out[grid.path] = provenance(
            grid.run.run_id, grid.params(), sampler_id=grid.sampler.sampler_id
        )
    for cal in PLAN.calibrations.values():
        out[cal.path] = calibration_provenance(cal)
    for run in PLAN.theory_runs:
        out[PLAN.theory_path(run)] = provenance(run.run_id, PLAN.theory_params(run))
    for path in [*get_summary_targets(), *get_scorecard_targets(), *PLAN.figure_targets()]:
        out[path] = None
    if PLAN.llc_jobs:
        out[f"{RESULTS}/report/scorecard.html"] = None
    return out


# Damage heals (README, "Interruptions, damaged files"): before the DAG is built, every planned
# output that exists is checked against the digest record its job wrote and the provenance the
# plan expects; a damaged one is reported in one line and moved to results/.damaged/<time>/,
# so this run rebuilds it and what depends on it. A dry run only reports. Nothing is checked
# in a job's own Snakemake process (cluster jobs), in the modes that run no job (--unlock,
# --lint, --report, --list-*, --summary, --touch, ...), or while another Snakemake holds this
# directory's lock (its jobs may be writing).
_NO_RUN_FLAGS = (
    "archive", "cleanup_metadata", "cleanup_shadow", "conda_cleanup_envs",
    "conda_create_envs_only", "containerize", "d3dag", "dag", "delete_all_output",
    "delete_temp_output", "detailed_summary", "edit_notebook", "export_cwl", "filegraph",
    "generate_unit_tests", "lint", "list_changes", "list_conda_envs", "list_input_changes",
    "list_params_changes", "list_rules", "list_target_rules", "list_untracked",
    "print_compilation", "report", "rulegraph", "summary", "touch", "unlock",
)  # fmt: skip


def _heal_mode():
    """"heal", "report" (a dry run, or arguments this check cannot read) or None."""
    if not workflow.is_main_process:
        return None
    locks = Path(".snakemake") / "locks"
    if locks.is_dir() and any(locks.iterdir()):
        return None
    try:
        from snakemake.cli import get_argument_parser

        args, _ = get_argument_parser().parse_known_args(sys.argv[1:])
    except BaseException:  # noqa: BLE001 - not Snakemake's command line (the API, a test)
        return "report"
    if any(getattr(args, flag, None) for flag in _NO_RUN_FLAGS):
        return None
    return "report" if args.dryrun else "heal"


_mode = _heal_mode()
if _mode is not None:
    heal_outputs(
        planned_outputs(),
        RESULTS,
        move=_mode == "heal",
        say=lambda line: print(line, file=sys.stderr),
    )
