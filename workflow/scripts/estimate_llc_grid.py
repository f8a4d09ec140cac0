"""Rule estimate_llc_grid: LLC at a run's final checkpoint over a grid of sampler settings."""

from grokking_llc.llc import run_estimate_llc_grid
from grokking_llc.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)
run_estimate_llc_grid(
    snakemake.input.checkpoints,
    snakemake.input.split,
    snakemake.output[0],
    snakemake.params.run,
    snakemake.params.llc,
    snakemake.params.grid,
    device=snakemake.params.device,
)
