"""Rule estimate_llc_grid: the LLC at a run's final checkpoint over a grid of sampler settings."""

from grokking_llc.pipeline.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)  # before the stage imports torch
from grokking_llc.pipeline.stages.llc import run_estimate_llc_grid

run_estimate_llc_grid(
    snakemake.input.checkpoints,
    snakemake.input.split,
    snakemake.input.train_log,
    snakemake.output[0],
    snakemake.params.job,
    device=snakemake.params.device,
    sampler_id=snakemake.wildcards.sampler,
)
