"""Rule gather_llc: one table of a run's LLC estimates from its chunks."""

from grokking_llc.stages import gather_tables, setup_job

setup_job(snakemake.log[0], snakemake.threads)
gather_tables(list(snakemake.input), snakemake.output[0], sort="step")
