"""Rule summarize_runs: the training summary plus final and maximum LLC per run."""

from grokking_llc.stages import run_summarize_runs, setup_job

setup_job(snakemake.log[0], snakemake.threads)
run_summarize_runs(
    snakemake.input.training,
    list(snakemake.input.llc),
    snakemake.output[0],
    snakemake.params.llc_runs,
    snakemake.params.sampler_ids,
)
