# grokking-llc: grokking as a phase transition, measured with the local learning coefficient.
#
# Path scheme (everything under results/, git-ignored):
#   results/splits/{split}.parquet                      make_split    (SPEC section 1)
#   results/runs/{run}/checkpoints.pt, train_log.parquet train_model  (SPEC section 3)
#   results/llc/{run}/{sampler}/chunk{i}of{n}.parquet   estimate_llc  (SPEC section 4)
#   results/llc/{run}/{sampler}.parquet                 gather_llc
#   results/llc_grid/{grid}/{run}-{sampler}.parquet     estimate_llc_grid (B.1 / B.2 sweeps)
#   results/theory/{run}/{sampler}.parquet              compute_theory (SPEC section 5)
#   results/tables/training_summary.parquet, runs.parquet  summarize_training, summarize_runs
#   results/figures/*.png                               plot_*        (SPEC section 7)
#   results/logs/..., results/benchmarks/...            one per job, mirroring the outputs
# {run} is "<model>-p<p>-K<width>-<hash of training settings>", {sampler} is
# "<backend>-<hash of sampler settings>": see src/grokking_llc/config.py.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/llc.smk"
include: "workflow/rules/theory.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/plots.smk"


rule all:
    default_target: True
    input:
        get_figure_targets(),
        get_table_targets(),


rule figures:
    input:
        get_figure_targets(),
