"""Rule calibrate_sampler: one SGLD setting for one model shape, searched and checked at the
final checkpoint of the shape's most typical run (grokking_llc.pipeline.stages.calibrate; SPEC
10)."""

from grokking_llc.pipeline.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)  # before the stage imports torch
from grokking_llc.pipeline.stages.calibrate import run_calibrate_sampler

run_calibrate_sampler(
    list(snakemake.input.checkpoints),
    list(snakemake.input.splits),
    snakemake.params.job["runs"],
    snakemake.params.job["calibration"],
    snakemake.output[0],
    device=snakemake.params.device,
)
