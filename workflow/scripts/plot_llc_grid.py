"""Rule plot_llc_grid: sampler-sensitivity (B.2) or bias-reduced LLC (B.1) figure."""

import pandas as pd

from grokking_llc import plots
from grokking_llc.io import save_figure
from grokking_llc.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)
plots.set_style(snakemake.params.plots["style"])
table = pd.read_parquet(snakemake.input[0])
draw = {
    "fig_b2_sampler_sensitivity": plots.plot_sampler_sensitivity,
    "fig_bias_reduced_llc": plots.plot_bias_reduced,
}[snakemake.wildcards.grid_figure]
save_figure(draw(table, dpi=snakemake.params.plots["dpi"]), snakemake.output[0])
