"""Rule make_split: the seeded modular-addition split as Parquet (SPEC section 1)."""

from grokking_llc.data import make_split
from grokking_llc.io import write_parquet
from grokking_llc.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)
write_parquet(make_split(**snakemake.params.split), snakemake.output[0])
