"""Rule plot_summary: a figure drawn from a per-run summary table (SPEC 7)."""

import pandas as pd

from grokking_llc import plots
from grokking_llc.io import save_figure
from grokking_llc.stages import runs_of_study, setup_job

setup_job(snakemake.log[0], snakemake.threads)
plots.set_style(snakemake.params.plots["style"])
figure = snakemake.params.figure
table = runs_of_study(pd.read_parquet(snakemake.input[0]), figure["study"])
fig = getattr(plots, figure["function"])(table, dpi=snakemake.params.plots["dpi"])
save_figure(fig, snakemake.output[0])
