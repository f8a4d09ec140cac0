"""Rule train_model: train one run, resuming from its partial state if an earlier job was killed."""

import pandas as pd

from grokking_llc.config import TrainConfig
from grokking_llc.stages import setup_job
from grokking_llc.train import train_run

setup_job(snakemake.log[0], snakemake.threads)
train_run(
    TrainConfig(**snakemake.params.run),
    pd.read_parquet(snakemake.input.split),
    log_path=snakemake.output.train_log,
    checkpoints_path=snakemake.output.checkpoints,
    work_dir=snakemake.params.work_dir,
    device=snakemake.params.device,
)
