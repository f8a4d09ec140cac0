"""Rule gather_llc: the chunks of one LLC track in one table, sorted by step."""

from grokking_llc.stages import setup_job
from grokking_llc.stages.llc import run_gather_llc

setup_job(snakemake.log[0], snakemake.threads)
run_gather_llc(list(snakemake.input), snakemake.output[0])
