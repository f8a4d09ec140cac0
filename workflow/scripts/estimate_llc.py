"""Rule estimate_llc: the LLC, with its validity, at one chunk of a run's track (SPEC 4, 10)."""

from grokking_llc.pipeline.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)  # before the stage imports torch
from grokking_llc.pipeline.stages.llc import run_estimate_llc

run_estimate_llc(
    snakemake.input.checkpoints,
    snakemake.input.split,
    snakemake.input.train_log,
    snakemake.output[0],
    snakemake.params.job,
    chunk=int(snakemake.wildcards.chunk),
    chunks=int(snakemake.wildcards.chunks),
    device=snakemake.params.device,
    run_id=snakemake.wildcards.run,
    sampler_id=snakemake.wildcards.sampler,
    calibration_path=snakemake.input.get("calibration"),
    calibration_provenance=snakemake.params.provenance.get("calibration"),
)
