"""Rule plot_figure: one figure of the registry (grokking_llc.figures), saved atomically."""

from grokking_llc.pipeline.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)  # before the stage imports torch
from grokking_llc.pipeline.stages.figures import run_plot_figure

run_plot_figure(dict(snakemake.input.items()), snakemake.params.figure, snakemake.output[0])
