"""Rule summarize_training: one row per run with GSM, delay and regime (SPEC 6)."""

from grokking_llc.pipeline.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)  # before the stage imports torch
from grokking_llc.pipeline.stages.summary import run_summarize_training

run_summarize_training(list(snakemake.input.logs), snakemake.output[0], snakemake.params.runs)
