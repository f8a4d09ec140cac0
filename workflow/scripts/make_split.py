"""Rule make_split: the seeded modular-addition split as Parquet (SPEC section 1)."""

from grokking_llc.stages import setup_job
from grokking_llc.stages.split import run_make_split

setup_job(snakemake.log[0], snakemake.threads)
run_make_split(snakemake.params.split, snakemake.output[0])
