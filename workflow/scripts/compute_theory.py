"""Rule compute_theory: closed-form learning coefficients beside the LLC estimates (SPEC 5)."""

from grokking_llc.stages import run_compute_theory, setup_job

setup_job(snakemake.log[0], snakemake.threads)
run_compute_theory(
    snakemake.input.checkpoints, snakemake.input.llc, snakemake.output[0], snakemake.params.run
)
