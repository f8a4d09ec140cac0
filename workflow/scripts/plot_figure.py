"""Rule plot_figure: one figure of the registry (grokking_llc.figures), saved atomically."""

from grokking_llc.stages import setup_job
from grokking_llc.stages.figures import run_plot_figure

setup_job(snakemake.log[0], snakemake.threads)
run_plot_figure(dict(snakemake.input.items()), snakemake.params.figure, snakemake.output[0])
