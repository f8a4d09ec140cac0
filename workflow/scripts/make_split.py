"""Rule make_split: the seeded modular-addition split as Parquet (SPEC section 1)."""

from grokking_llc.pipeline.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)  # before the stage imports torch
from grokking_llc.pipeline.stages.split import run_make_split

run_make_split(snakemake.params.split, snakemake.output[0])
