"""Rule plot_track: losses and LLC against the training step for one run (Figures 3, 13)."""

import pandas as pd

from grokking_llc import plots
from grokking_llc.io import save_figure
from grokking_llc.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)
plots.set_style(snakemake.params.plots["style"])
figure = snakemake.params.figure
fig = getattr(plots, figure["function"])(
    pd.read_parquet(snakemake.input.train_log),
    pd.read_parquet(snakemake.input.llc),
    figure["title"],
    dpi=snakemake.params.plots["dpi"],
)
save_figure(fig, snakemake.output[0])
