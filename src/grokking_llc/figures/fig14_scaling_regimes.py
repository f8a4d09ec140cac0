"""Figure 14 (SPEC section 7 item 9, paper H.3.2): final validation accuracy against the scaled
data size ``n_train / (p ln p)``, a line per p, each run marked with its regime; Tian (2025)'s
critical ratio 2.75 and the paper's baseline 5.3 as reference lines, and the bracket in which
runs start to generalise (:func:`grokking_llc.science.generalisation.regime_boundary`) shaded."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.lines import Line2D

from grokking_llc.figures._common import (
    Panel,
    draw_means,
    fmt,
    n_text,
    no_data,
    palette,
    single_panel,
)
from grokking_llc.figures.registry import register
from grokking_llc.science import gsm
from grokking_llc.science.generalisation import regime_boundary
from grokking_llc.science.notes import varying_note
from grokking_llc.science.paper import PAPER_BASELINE_RATIO, TIAN_CRITICAL_RATIO
from grokking_llc.science.stats import group_stats
from grokking_llc.science.tables import finite_rows, scaled_data_size

REGIME_MARKERS = {
    gsm.NO_GENERALISATION: "x",
    gsm.GROKKING: "o",
    gsm.IMMEDIATE_GENERALISATION: "^",
}
REGIME_LABELS = {
    gsm.NO_GENERALISATION: "no generalisation",
    gsm.GROKKING: "grokking",
    gsm.IMMEDIATE_GENERALISATION: "immediate generalisation",
}

PANEL = Panel(
    size=(7.6, 4.2),
    xlabel="scaled training-set size n_train / (p ln p)",
    ylabel="final validation accuracy (fraction)",
    title="Final validation accuracy vs scaled data size",
)


def _bracket_text(r) -> str:
    head = f"p = {fmt(r.p)}: "
    if math.isfinite(r.x_gen) and math.isfinite(r.x_fail):
        return head + f"runs generalise from x = {fmt(r.x_gen, 3)}, not at {fmt(r.x_fail, 3)}"
    if math.isfinite(r.x_gen):
        return head + f"runs generalise already at the smallest x, {fmt(r.x_gen, 3)}"
    return head + "no setting where at least half the runs generalise from there on"


@register("fig14", stem="fig14_scaling_regimes", reads="training", per_sampler=False)
def draw_fig14(training: pd.DataFrame, params: dict):
    """Figure 14: final validation accuracy against the scaled training-set size n / (p ln p), a
    line per p (mean ± std over seeds), markers for each run's regime; Tian's critical ratio
    2.75 and the paper's baseline 5.3 marked, and the measured bracket where runs start to
    generalise shaded."""
    df, dropped = finite_rows(training, ["p", "n_train", "final_val_acc"])
    bad = df["p"] <= 1
    df = df.loc[~bad].reset_index(drop=True)
    dropped += int(bad.sum())
    df["x"] = scaled_data_size(df["n_train"], df["p"])
    bnd = regime_boundary(df, gsm.GSM_THRESHOLD)
    ps = sorted(df["p"].unique())
    aggs = {p: group_stats(df[df["p"] == p], "x", "final_val_acc") for p in ps}
    per_p = [_bracket_text(r) for r in bnd["per_p"].itertuples()]
    notes = [
        f"{len(df)} runs, {len(ps)} values of p; x = n_train / (p ln p)",
        n_text(pd.concat(aggs.values()), "runs (seeds)", dots=False) if aggs else None,
        *per_p,
        f"boundary bracket (mean over p): {fmt(bnd['lower'], 3)} .. {fmt(bnd['upper'], 3)}"
        if math.isfinite(bnd["lower"])
        else f"boundary open for p = {', '.join(fmt(p) for p in bnd['open_p'])}"
        if bnd["open_p"]
        else None,
        f"dropped {dropped} run(s) with NaN p / n_train / final_val_acc" if dropped else None,
        None if "regime" in df else "no regime column: runs not marked by regime",
        varying_note(df, exclude=("p", "train_frac")),
    ]
    fig, ax = single_panel(PANEL, notes, params, per_sampler=False)
    ref = [
        ax.axvline(
            TIAN_CRITICAL_RATIO,
            color="0.3",
            ls="--",
            lw=1,
            gid="tian",
            label=f"Tian critical ratio {TIAN_CRITICAL_RATIO}",
        ),
        ax.axvline(
            PAPER_BASELINE_RATIO,
            color="0.3",
            ls=":",
            lw=1,
            gid="baseline",
            label=f"paper baseline {PAPER_BASELINE_RATIO}",
        ),
    ]
    if math.isfinite(bnd["lower"]):
        ref.append(
            ax.axvspan(
                bnd["lower"],
                bnd["upper"],
                color="tab:green",
                alpha=0.12,
                lw=0,
                gid="bracket",
                label="measured boundary bracket",
            )
        )
    if df.empty:
        no_data(ax, "no runs with finite p, n_train and final validation accuracy")
        ax.legend(handles=ref, fontsize=6.5, loc="lower right")
        return fig
    handles = []
    for p, col in zip(ps, palette(len(ps)), strict=True):
        draw_means(ax, aggs[p], "x", color=col, marker="", gid=f"means:p={fmt(p)}")
        handles.append(Line2D([], [], color=col, lw=1.5, label=f"p = {fmt(p)}"))
        sub = df[df["p"] == p]
        if "regime" in sub:
            for reg, rsub in sub.groupby(sub["regime"].fillna("unknown").astype(str)):
                ax.scatter(
                    rsub["x"],
                    rsub["final_val_acc"],
                    marker=REGIME_MARKERS.get(reg, "s"),
                    color=col,
                    s=22,
                    zorder=3,
                    linewidths=1.2,
                    gid=f"runs:{reg}",
                )
        else:
            ax.scatter(sub["x"], sub["final_val_acc"], color=col, s=16, zorder=3, gid="runs")
    if "regime" in df:
        present = set(df["regime"].fillna("unknown").astype(str))
        for reg in [*REGIME_MARKERS, *sorted(present - set(REGIME_MARKERS))]:
            if reg in present:
                handles.append(
                    Line2D(
                        [],
                        [],
                        color="black",
                        ls="",
                        marker=REGIME_MARKERS.get(reg, "s"),
                        label=REGIME_LABELS.get(reg, reg),
                    )
                )
    ax.legend(handles=handles + ref, fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
