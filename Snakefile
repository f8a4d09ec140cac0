# grokking-llc: grokking as a phase transition, measured with the local learning coefficient.
#
# Paths (everything under results/, git-ignored): see src/grokking_llc/plan.py, which turns the
# validated config into every job of this workflow. In short:
#   splits/{split}.parquet                               make_split        (SPEC section 1)
#   runs/{run}/checkpoints.pt, train_log.parquet         train_model       (SPEC section 3)
#   llc/{run}/{sampler}/{track}-chunk{i}of{n}.parquet    estimate_llc      (SPEC sections 4, 10)
#   llc/{run}/{sampler}/{track}.parquet                  gather_llc
#   llc_grid/{grid}/{run}-{sampler}.parquet              estimate_llc_grid (appendix B.1, B.2)
#   calibration/{calibration}.parquet                    calibrate_sampler (SPEC section 10)
#   theory/{run}.parquet                                 compute_theory    (SPEC section 5)
#   tables/training_summary.parquet, runs.parquet, claims.parquet
#   figures/{stem}.png, figures/{sampler name}/{stem}.png                  plot_figure (SPEC 7)
#   logs/..., benchmarks/...                             one per job, mirroring the outputs
# {run} is "<model>-p<p>-K<width>-<hash of training settings>", {sampler} is
# "<backend>-<hash of sampler settings>", {track} "every<k>" or "final", and {calibration}
# "<model>-p<p>-K<width>-<hash>" (one per model shape of a calibrated sampler).
#
# The config is config/config.yaml, or exactly the file(s) given with --configfile (no merge
# with the default file); --config KEY=VALUE overrides single values on top.

from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/llc.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        PLAN.figure_targets(),
        PLAN.table_targets(),
        PLAN.intermediate_targets(),


rule figures:
    input:
        PLAN.figure_targets(),
        get_scorecard_targets(),
        get_summary_targets(),
        PLAN.intermediate_targets(),
