"""Rule train_model: train one run, resuming from its partial state if an earlier job was killed."""

from grokking_llc.pipeline.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)  # before the stage imports torch
from grokking_llc.pipeline.stages.train import run_train_model

run_train_model(
    snakemake.params.run,
    snakemake.input.split,
    train_log=snakemake.output.train_log,
    checkpoints=snakemake.output.checkpoints,
    work_dir=snakemake.params.work_dir,
    device=snakemake.params.device,
)
