"""The sampler grids at a run's final checkpoint: appendix B.2 (LLC against the localisation
gamma, a line per SGLD step size; SPEC section 7 item 5) and B.1 (the bias-reduced LLC from a
temperature sweep; SPEC section 4). Invalid estimates hollow and, for B.1, left out of the fit.
Numbers: :func:`grokking_llc.science.sampler_checks.sampler_sensitivity` and
:func:`~grokking_llc.science.sampler_checks.bias_reduced`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from grokking_llc.figures._common import (
    FIT_COLOUR,
    LLC_COLOURS,
    Panel,
    draw_runs,
    fmt,
    no_data,
    palette,
    single_panel,
)
from grokking_llc.figures.registry import register
from grokking_llc.science.sampler_checks import bias_reduced, sampler_sensitivity

PANELS = {
    "b2": Panel(
        size=(6.4, 4.0),
        xlabel="localisation strength γ (log scale)",
        ylabel="estimated LLC",
        title="LLC estimate vs localisation, per SGLD step size",
    ),
    "bias_reduced": Panel(
        size=(5.8, 3.8),
        xlabel="1 / nbeta  (inverse of n β)",
        ylabel="estimated LLC",
        title="Bias-reduced LLC from a temperature sweep",
    ),
}


@register("b2", stem="fig_b2_sampler_sensitivity", reads="grid", per_sampler=True)
def draw_b2(table: pd.DataFrame, params: dict):
    """Appendix B.2: estimated LLC at the final checkpoint against the localisation gamma, a
    line per SGLD step size (bars: std over chains); estimates that failed the validity checks
    hollow."""
    res = sampler_sensitivity(table)
    pts = res["points"]
    notes = [
        f"{res['n']} estimates, {res['n_valid']} valid; each point one sampler setting, "
        "bars: std over chains",
        f"{res['n_repeated']} repeated settings drawn as separate points"
        if res["n_repeated"]
        else None,
        None if res["all_positive"] or pts.empty else "linear y axis: some estimates are <= 0",
        *res["notes"],
    ]
    fig, ax = single_panel(PANELS["b2"], notes, params)
    if pts.empty:
        no_data(ax, "no finite sampler-sensitivity estimates")
        return fig
    ax.set_xscale("log")
    if res["all_positive"]:
        ax.set_yscale("log")
    lrs = sorted(pts["sampler_lr"].unique())
    for lr, col in zip(lrs, palette(len(lrs)), strict=True):
        sub = pts[pts["sampler_lr"] == lr].sort_values("localization")
        x, y = sub["localization"].to_numpy(float), sub["llc_mean"].to_numpy(float)
        err = sub["llc_std"].to_numpy(float)
        if res["all_positive"]:
            err = np.vstack([np.minimum(err, y * 0.999), err])  # bars stay on a log axis
        ax.errorbar(
            x,
            y,
            yerr=err,
            color=col,
            ls="-",
            lw=1.1,
            marker="",
            capsize=2.5,
            label=f"SGLD step size {fmt(lr)}",
        )
        draw_runs(ax, x, y, sub["valid"], color=col, ms=4.0, alpha=1.0)
    ax.legend(fontsize=6.5, loc="best")
    return fig


@register("bias_reduced", stem="fig_bias_reduced_llc", reads="grid", per_sampler=True)
def draw_bias_reduced(table: pd.DataFrame, params: dict):
    """Appendix B.1: LLC estimates at the final checkpoint over a range of inverse temperatures
    nbeta, against 1/nbeta; the intercept of the least-squares line through the valid estimates
    is the bias-reduced LLC."""
    res = bias_reduced(table)
    fit = res["fit"]
    notes = [
        f"{res['n']} temperatures, {res['n_valid']} valid estimates used in the fit",
        f"slope {fmt(fit['slope'])}, R² {fmt(fit['r2'], 3)}" if fit else None,
        *res["notes"],
    ]
    fig, ax = single_panel(PANELS["bias_reduced"], notes, params)
    pts = res["points"]
    if pts.empty:
        no_data(ax, "no finite estimates in the temperature sweep")
        return fig
    x = 1.0 / pts["nbeta"].to_numpy(float)
    y = pts["llc_mean"].to_numpy(float)
    col = LLC_COLOURS[0]
    ax.errorbar(
        x,
        y,
        yerr=pts["llc_std"].fillna(0.0) if "llc_std" in pts else None,
        fmt="none",
        ecolor=col,
        capsize=3,
    )
    draw_runs(
        ax, x, y, pts["valid"], color=col, ms=4.5, label_invalid="not valid (not fitted)", alpha=1.0
    )
    if fit:
        grid = np.linspace(0.0, x.max() * 1.05, 50)
        ax.plot(
            grid,
            fit["intercept"] + fit["slope"] * grid,
            color="0.3",
            lw=1,
            gid="fit",
            label="least squares in 1/nbeta",
        )
        ax.plot(
            [0.0],
            [fit["intercept"]],
            marker="*",
            ms=12,
            color=FIT_COLOUR,
            ls="none",
            gid="intercept",
            label=f"bias-reduced LLC = {fmt(fit['intercept'])}",
        )
    ax.legend(fontsize=7, loc="best")
    return fig
