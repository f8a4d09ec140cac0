"""Rule compute_theory: closed-form learning coefficients at a run's checkpoints (SPEC 5)."""

from grokking_llc.pipeline.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)  # before the stage imports torch
from grokking_llc.pipeline.stages.theory import run_compute_theory

run_compute_theory(
    snakemake.input.checkpoints,
    snakemake.input.train_log,
    snakemake.output[0],
    snakemake.params.job,
)
