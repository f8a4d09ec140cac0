"""Figure 4 (SPEC section 7 item 4, and appendix H.3 for other weight decays): grokking severity
against learning rate, a panel per weight decay, with the exponential-decay fit.

GSM honestly (issue 11): only runs that ended generalised have a GSM; they give the points
(mean ± std over seeds, single runs as dots) and the fit. Runs that never generalised are
counted in a strip under each panel, not drawn as GSM 0. The fitted curve is drawn only when
:func:`grokking_llc.science.fits.fit_exponential_decay` calls it usable; otherwise the panel
says
why (no curvature, a decay faster than the lr spacing, absurd parameters).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from grokking_llc.figures._common import (
    DATA_COLOUR,
    FIT_COLOUR,
    dpi_of,
    draw_means,
    draw_runs,
    fmt,
    n_text,
    new_figure,
    no_data,
)
from grokking_llc.figures.registry import register
from grokking_llc.science.fits import exponential_curve
from grokking_llc.science.generalisation import fit_lr_vs_gsm, gsm_rows
from grokking_llc.science.gsm import GSM_THRESHOLD
from grokking_llc.science.notes import varying_note
from grokking_llc.science.text import describe_exponential


@register("fig4", stem="fig4_lr_vs_gsm", reads="training", per_sampler=False)
def draw_fig4(training: pd.DataFrame, params: dict):
    """Figure 4: grokking severity (GSM, SPEC section 6) against the Adam learning rate, a panel
    per weight decay: runs that generalised (mean ± std over seeds), the exponential-decay fit a
    exp(-b lr) + c where it is usable, and beneath, the number of runs that never generalised
    (no GSM) at each learning rate."""
    fits = fit_lr_vs_gsm(training, GSM_THRESHOLD)
    _, dropped = gsm_rows(training, GSM_THRESHOLD)
    wds = list(fits)
    notes = [
        "GSM = a·exp(−b·lr) + c fitted on the runs that generalised (per-run points)",
        f"generalised: both final accuracies > {GSM_THRESHOLD}; the others have no GSM and are "
        "counted under each panel, not averaged in as 0",
        f"dropped {dropped} run(s) with NaN lr / GSM / weight decay (or lr <= 0)"
        if dropped
        else None,
    ]
    for wd, fit in fits.items():
        notes.append(
            f"wd {fmt(wd)}: {fit['n_generalised']} of {fit['n_runs']} runs generalised, "
            f"{fit['n_lr']} learning rates; {describe_exponential(fit)}"
        )
    means = [f["means"] for f in fits.values()]
    notes.append(n_text(pd.concat(means), "generalised runs (seeds)") if means else None)
    if wds:
        df = pd.concat([f["points"] for f in fits.values()])
        notes.append(varying_note(df, exclude=("lr", "weight_decay")))
    n = max(1, len(wds))
    fig, axes = new_figure(
        2, n, notes, panel_w=4.2, panel_h=1.9, dpi=dpi_of(params), height_ratios=[3.2, 0.8]
    )
    if not wds:
        no_data(axes[0, 0], "no runs with finite lr, GSM and weight decay")
        axes[1, 0].set_axis_off()
        return fig
    for j, wd in enumerate(wds):
        ax, strip = axes[0, j], axes[1, j]
        fit = fits[wd]
        gen = fit["points"][fit["points"]["generalised"]]
        if j:
            ax.sharey(axes[0, 0])
        strip.sharex(ax)
        draw_runs(ax, gen["lr"], gen["gsm"], np.ones(len(gen), dtype=bool), color=DATA_COLOUR)
        draw_means(
            ax,
            fit["means"],
            "lr",
            color=DATA_COLOUR,
            ls="",
            label="GSM of generalised runs (mean ± std)",
        )
        if fit["usable"]:
            grid = np.geomspace(float(gen["lr"].min()), float(gen["lr"].max()), 200)
            ax.plot(
                grid,
                exponential_curve(fit, grid),
                color=FIT_COLOUR,
                lw=1.2,
                gid="fit",
                label=f"a·exp(−b·lr) + c, R² {fmt(fit['r2'], 3)}",
            )
        else:
            ax.text(
                0.98,
                0.97,
                "no usable exponential fit",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=6.5,
                color=FIT_COLOUR,
            )
        ax.set_xscale("log")
        ax.set_title(f"weight decay {fmt(wd)}", fontsize=9)
        ax.tick_params(labelbottom=False)
        ax.legend(fontsize=6, loc="lower left")
        never = fit["never"]
        strip.plot(never["lr"], never["n_never"], ls="", marker="x", color="tab:red", gid="never")
        for lr, k, tot in never[["lr", "n_never", "n_runs"]].itertuples(index=False):
            strip.annotate(
                f"{int(k)}/{int(tot)}",
                (lr, k),
                textcoords="offset points",
                xytext=(4, 2),
                fontsize=6,
            )
        top = max(1, int(never["n_runs"].max()))
        strip.set_ylim(-0.4, top + 0.8)
        strip.margins(x=0.08)
        strip.set_yticks(range(0, top + 1))
        strip.tick_params(labelsize=6)
        strip.set_xlabel("learning rate (log scale)")
    axes[0, 0].set_ylabel("GSM (dimensionless)")
    axes[1, 0].set_ylabel("never\ngeneralised", fontsize=7)
    return fig
