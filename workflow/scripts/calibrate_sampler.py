"""Rule calibrate_sampler: a grid of SGLD settings at a few checkpoints of a study's runs, each
with its validity checks, and one setting chosen for all of them (SPEC section 10)."""

from grokking_llc.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)  # before the stage imports torch
from grokking_llc.stages.calibrate import run_calibrate_sampler

run_calibrate_sampler(
    list(snakemake.input.checkpoints),
    list(snakemake.input.splits),
    snakemake.params.job["runs"],
    snakemake.params.job["calibration"],
    snakemake.output[0],
    device=snakemake.params.device,
)
