"""GSM against final LLC (SPEC section 6; the paper's GSM = 0.1288 LLC - 2.098, R^2 0.955).

One point per run, coloured by weight decay (the clusters a pooled line can run through); valid
LLC filled, invalid hollow (not fitted), not a minimum a grey x; under the paper's protocol
every run that generalised is filled and fitted, as the paper does. Lines: a least-squares fit
per weight decay (dashed) and pooled (red). Runs that never generalised have no GSM: they sit
in a strip beneath, at their LLC. The paper's line is quoted, not drawn (absolute LLC values
depend on the sampler).
Numbers: :func:`grokking_llc.science.generalisation.fit_gsm_vs_llc`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from grokking_llc.figures._common import (
    FIT_COLOUR,
    dpi_of,
    draw_runs,
    fmt,
    new_figure,
    no_data,
    palette,
    sampler_suffix,
    use_of,
)
from grokking_llc.figures.registry import register
from grokking_llc.science.generalisation import fit_gsm_vs_llc
from grokking_llc.science.gsm import GSM_THRESHOLD
from grokking_llc.science.paper import PAPER_GSM_LLC


def _fit_text(fit: dict) -> str:
    if fit["skipped"]:
        return fit["skipped"]
    return (
        f"GSM = {fmt(fit['slope'])} LLC {float(fit['intercept']):+.4g}, "
        f"R² {fmt(fit['r2'], 3)}, {fit['n']} runs"
    )


@register("gsm_vs_llc", stem="fig_gsm_vs_llc", reads="runs", per_sampler=True)
def draw_gsm_vs_llc(runs: pd.DataFrame, params: dict):
    """GSM against the final estimated LLC, one point per run coloured by weight decay (invalid
    LLC hollow, not fitted; under the paper's protocol every run fitted), least-squares lines
    per weight decay and pooled; runs that never generalised (no GSM) in a strip beneath. The
    paper reports GSM = 0.1288 LLC - 2.098 (R^2 0.955) for its own sampler."""
    res = fit_gsm_vs_llc(runs, GSM_THRESHOLD, use=use_of(params))
    paper = (
        f"paper (its sampler; quoted, not drawn): GSM = {PAPER_GSM_LLC['slope']} LLC "
        f"{PAPER_GSM_LLC['intercept']:+}, R² {PAPER_GSM_LLC['r2']}"
    )
    notes = [
        f"pooled fit: {_fit_text(res['pooled'])}",
        *[f"wd {fmt(wd)}: {_fit_text(f)}" for wd, f in res["per_wd"].items()],
        paper,
        *res["notes"],
    ]
    fig, axes = new_figure(
        2,
        1,
        notes,
        panel_w=6.6,
        panel_h=2.3,
        dpi=dpi_of(params),
        height_ratios=[3.4, 0.6],
        sharex=True,
    )
    ax, strip = axes[0, 0], axes[1, 0]
    ax.set_ylabel("grokking severity GSM")
    ax.set_title("Grokking severity vs final LLC" + sampler_suffix(params), fontsize=9)
    pts = res["points"]
    if pts.empty:
        no_data(ax, "no runs with finite GSM and final LLC")
        strip.set_axis_off()
        return fig
    wd_col = pts["weight_decay"] if "weight_decay" in pts else pd.Series(np.nan, index=pts.index)
    wds = sorted(wd_col.dropna().unique())
    colours = dict(zip(wds, palette(len(wds), "tab10"), strict=True))
    for wd in wds:
        sub = pts[(wd_col == wd) & pts["generalised"]]
        col = colours[wd]
        draw_runs(
            ax, sub["llc"], sub["gsm"], sub["llc_used"], status=sub["llc_status"], color=col, ms=4.0
        )
        ax.plot([], [], ls="", marker="o", color=col, label=f"weight decay {fmt(wd)}")
        fit = res["per_wd"].get(float(wd))
        ok = sub[sub["llc_used"]]
        if fit and not fit["skipped"]:
            grid = np.linspace(ok["llc"].min(), ok["llc"].max(), 20)
            ax.plot(
                grid,
                fit["slope"] * grid + fit["intercept"],
                color=col,
                ls="--",
                lw=1.0,
                gid=f"fit:{fmt(wd)}",
            )
    used = pts[pts["generalised"] & pts["llc_used"]]
    if not res["pooled"]["skipped"]:
        grid = np.linspace(used["llc"].min(), used["llc"].max(), 20)
        ax.plot(
            grid,
            res["pooled"]["slope"] * grid + res["pooled"]["intercept"],
            color=FIT_COLOUR,
            lw=1.3,
            gid="fit",
            label="pooled least squares",
        )
    if (~pts["llc_used"]).any():
        ax.plot(
            [], [], ls="", marker="o", mfc="none", mec="0.3", label="LLC not valid (not fitted)"
        )
    ax.legend(fontsize=6.5, loc="best")
    never = pts[~pts["generalised"]]
    for wd in wds:
        sub = never[wd_col.loc[never.index] == wd]
        draw_runs(
            strip,
            sub["llc"],
            np.zeros(len(sub)),
            sub["llc_used"],
            status=sub["llc_status"],
            color=colours[wd],
        )
    strip.set_yticks([])
    strip.set_ylabel("never\ngeneralised", fontsize=7)
    strip.set_xlabel("final estimated LLC (dimensionless)")
    ax.tick_params(labelbottom=False)
    return fig
