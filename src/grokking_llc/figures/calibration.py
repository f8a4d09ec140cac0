"""The sampler calibration (issue 10): the estimate against the SGLD step size eps, a line per
localisation gamma, a panel per nbeta (columns) and checkpoint (rows); settings that failed the
validity checks hollow, the chosen setting ringed. Numbers:
:func:`grokking_llc.analysis.calibration_points`."""

from __future__ import annotations

import pandas as pd

from grokking_llc import analysis
from grokking_llc.figures._common import (
    FIT_COLOUR,
    dpi_of,
    draw_runs,
    fmt,
    log_axis_ok,
    new_figure,
    no_data,
    palette,
)
from grokking_llc.figures.registry import register


@register(
    "calibration",
    stem="fig_calibration",
    reads="calibration",
    per_sampler=False,
    caption="Sampler calibration: the LLC estimate against the SGLD step size, a line per "
    "localisation, a panel per nbeta and checkpoint; settings that failed the validity checks "
    "hollow, the chosen setting ringed in red.",
)
def draw_calibration(table: pd.DataFrame, params: dict):
    res = analysis.calibration_points(table)
    pts = res["points"]
    chosen = res["chosen"]
    notes = [
        f"{res['n']} settings tried, {res['n_valid']} valid",
        *[
            f"chosen at step {fmt(r.step, 8)}: eps {fmt(r.lr)}, γ {fmt(r.localization)}, "
            f"nbeta {fmt(r.nbeta)} -> LLC {fmt(r.llc_mean)}"
            for r in chosen.itertuples()
        ],
        *res["notes"],
    ]
    steps, nbetas = res["steps"] or [0], res["nbetas"] or [0]
    fig, axes = new_figure(
        len(steps), len(nbetas), notes, panel_w=3.6, panel_h=2.8, dpi=dpi_of(params), sharex=True
    )
    if pts.empty:
        no_data(axes[0, 0], "no calibration settings")
        return fig
    gammas = sorted(pts["localization"].unique())
    colours = dict(zip(gammas, palette(len(gammas)), strict=True))
    for i, step in enumerate(steps):
        for j, nb in enumerate(nbetas):
            ax = axes[i, j]
            sub = pts[(pts["step"] == step) & (pts["nbeta"] == nb)]
            ax.set_title(f"step {fmt(step, 8)}, nbeta {fmt(nb)}", fontsize=8)
            ax.set_xscale("log")
            if log_axis_ok(sub["llc_mean"], min_ratio=20.0):
                ax.set_yscale("log")
            for g in gammas:
                line = sub[sub["localization"] == g].sort_values("lr")
                if line.empty:
                    continue
                ax.plot(
                    line["lr"],
                    line["llc_mean"],
                    color=colours[g],
                    lw=1.0,
                    label=f"γ = {fmt(g)}" if (i, j) == (0, 0) else None,
                )
                draw_runs(
                    ax,
                    line["lr"],
                    line["llc_mean"],
                    line["valid"],
                    color=colours[g],
                    ms=4.0,
                    alpha=1.0,
                )
            mark = sub[sub["chosen"]]
            if len(mark):
                ax.plot(
                    mark["lr"],
                    mark["llc_mean"],
                    ls="",
                    marker="o",
                    ms=11,
                    mfc="none",
                    mec=FIT_COLOUR,
                    mew=1.6,
                    gid="chosen",
                    label="chosen" if (i, j) == (0, 0) else None,
                )
            if i == len(steps) - 1:
                ax.set_xlabel("SGLD step size eps")
            if j == 0:
                ax.set_ylabel("estimated LLC")
    axes[0, 0].plot([], [], ls="", marker="o", mfc="none", mec="0.3", label="not valid")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside upper center",
        ncols=min(6, len(labels)),
        fontsize=7,
        frameon=False,
    )
    return fig
