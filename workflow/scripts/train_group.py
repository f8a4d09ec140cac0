"""Rules train_group_<id>: train the runs of one setting (all but the seed equal) together,
each resuming from its partial state if an earlier job was killed."""

from grokking_llc.pipeline.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)  # before the stage imports torch
from grokking_llc.pipeline.stages.train import run_train_group

run_train_group(
    snakemake.params.group,
    list(snakemake.input.splits),
    train_logs=list(snakemake.output.train_logs),
    checkpoints=list(snakemake.output.checkpoints),
    work_dirs=list(snakemake.params.work_dirs),
    device=snakemake.params.device,
)
