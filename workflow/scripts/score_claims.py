"""Rule score_claims: the paper's claims as a table, one row per claim and sampler."""

from grokking_llc.pipeline.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)  # before the stage imports torch
from grokking_llc.pipeline.stages.claims import run_score_claims

run_score_claims(
    dict(snakemake.input.items()),
    snakemake.params.job,
    snakemake.output.claims,
    snakemake.output.html,
)
