"""Rule summarize_runs: one row per run and named sampler, with the final and maximum LLC."""

from grokking_llc.pipeline.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)  # before the stage imports torch
from grokking_llc.pipeline.stages.summary import run_summarize_runs

run_summarize_runs(snakemake.input.training, snakemake.params.tracks, snakemake.output[0])
