"""Rule plot_h2_panels: Figure 3's panel repeated over runs (appendix H.2)."""

import pandas as pd

from grokking_llc import plots
from grokking_llc.io import save_figure
from grokking_llc.stages import setup_job

setup_job(snakemake.log[0], snakemake.threads)
plots.set_style(snakemake.params.plots["style"])
panels = [
    (title, pd.read_parquet(log), pd.read_parquet(llc))
    for title, log, llc in zip(
        snakemake.params.titles, snakemake.input.logs, snakemake.input.llcs, strict=True
    )
]
save_figure(plots.plot_h2_panels(panels, dpi=snakemake.params.plots["dpi"]), snakemake.output[0])
