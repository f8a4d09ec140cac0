"""Rule estimate_llc: LLC at one chunk of a run's checkpoints (SPEC section 4)."""

from grokking_llc.llc import run_estimate_llc
from grokking_llc.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)
run_estimate_llc(
    snakemake.input.checkpoints,
    snakemake.input.split,
    snakemake.output[0],
    snakemake.params.run,
    snakemake.params.llc,
    chunk=int(snakemake.wildcards.chunk),
    chunks=int(snakemake.wildcards.chunks),
    device=snakemake.params.device,
    run_id=snakemake.wildcards.run,
    sampler_id=snakemake.wildcards.sampler,
)
