"""Rule plot_fig3: losses and LLC against the training step (SPEC section 7, Figure 3)."""

import pandas as pd

from grokking_llc.io import save_figure
from grokking_llc.plots import plot_fig3, set_style
from grokking_llc.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)
set_style(snakemake.params.plots["style"])
fig = plot_fig3(
    pd.read_parquet(snakemake.input.train_log),
    pd.read_parquet(snakemake.input.llc),
    snakemake.params.title,
    dpi=snakemake.params.plots["dpi"],
)
save_figure(fig, snakemake.output[0])
