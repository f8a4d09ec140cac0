"""Appendix H.3 (SPEC section 7 item 6): the maximum of each run's LLC curve against learning
rate, a line per weight decay (valid maxima: mean ± std over seeds; invalid ones hollow, not a
minimum a grey x; under the paper's protocol every maximum, as the paper draws them).
Numbers: :func:`grokking_llc.science.scaling.lr_vs_max_llc`."""

from __future__ import annotations

import pandas as pd

from grokking_llc.figures._common import (
    Panel,
    draw_means,
    draw_runs,
    fmt,
    n_text,
    no_data,
    palette,
    single_panel,
    use_of,
)
from grokking_llc.figures.registry import register
from grokking_llc.science.scaling import lr_vs_max_llc

PANEL = Panel(
    size=(6.4, 3.9),
    xlabel="learning rate (log scale)",
    ylabel="maximum estimated LLC over training",
    title="Maximum of the LLC curve vs learning rate",
)


def _notes(res: dict) -> list:
    """Runs and valid maxima; per weight decay the counts, Spearman(lr, max LLC) and the runs per
    point; then the analysis' own notes."""
    notes = [f"{res['n_runs']} runs, {res['n_valid']} with a valid maximum"]
    for wd, d in res["per_wd"].items():
        notes.append(
            f"wd {fmt(wd)}: {d['n_valid']} of {d['n']} valid, {d['n_used']} used; "
            f"Spearman(lr, max LLC) = {fmt(d['spearman'], 3)}; "
            f"{n_text(d['means'], 'runs (seeds)') or 'no point used'}"
        )
    return notes + res["notes"]


@register("lr_vs_max_llc", stem="fig_lr_vs_max_llc", reads="runs", per_sampler=True)
def draw_lr_vs_max_llc(runs: pd.DataFrame, params: dict):
    """Appendix H.3: maximum of the LLC curve over training against the learning rate, a line
    per weight decay (valid estimates: mean ± std over seeds; invalid ones hollow, left out;
    under the paper's protocol every maximum)."""
    res = lr_vs_max_llc(runs, use=use_of(params))
    fig, ax = single_panel(PANEL, _notes(res), params)
    pts = res["points"]
    if pts.empty:
        no_data(ax, "no runs with finite lr, maximum LLC and weight decay")
        return fig
    ax.set_xscale("log")
    wds = list(res["per_wd"])
    for wd, col in zip(wds, palette(len(wds)), strict=True):
        sub = pts[pts["weight_decay"] == wd]
        draw_runs(ax, sub["lr"], sub["llc"], sub["llc_used"], status=sub["llc_status"], color=col)
        draw_means(ax, res["per_wd"][wd]["means"], "lr", color=col, label=f"weight decay {fmt(wd)}")
    ax.legend(fontsize=6.5, loc="best")
    return fig
