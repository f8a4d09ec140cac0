"""Rule plot_llc_traces: SGLD loss traces of a few checkpoints (sampler diagnostics)."""

import pandas as pd

from grokking_llc import plots
from grokking_llc.io import save_figure
from grokking_llc.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)
plots.set_style(snakemake.params.plots["style"])
fig = plots.plot_llc_traces(pd.read_parquet(snakemake.input[0]), dpi=snakemake.params.plots["dpi"])
save_figure(fig, snakemake.output[0])
