"""The sampler calibration of one model shape (SPEC section 10,
:mod:`grokking_llc.sampling.calibrate`):
the LLC estimate against the resolution ``kappa = nbeta lambda / gamma`` of the localisation
ladder, a panel per sampler kind, a line per inverse temperature nbeta through its rungs; each
candidate (a black diamond) with the runs of its checks beside it (a halved step, nbeta / 2 at
the same resolution, the function-preserving rescalings x2 and x0.5 run at their own stability
edge, a Metropolis-adjusted reference: one marker shape each); estimates that are not valid
hollow, those at a checkpoint that is not a minimum a grey x, as in every LLC figure; the
chosen setting ringed in red. A last panel shows the chosen and checked settings at the other
targets (other checkpoints or runs). Numbers:
:func:`grokking_llc.science.sampler_checks.calibration_points`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from grokking_llc.figures._common import (
    FIT_COLOUR,
    NOT_A_MINIMUM_COLOUR,
    dpi_of,
    draw_runs,
    fmt,
    log_axis_ok,
    new_figure,
    no_data,
    palette,
)
from grokking_llc.figures.registry import register
from grokking_llc.science.sampler_checks import calibration_points
from grokking_llc.science.tables import STATUS_NOT_A_MINIMUM

# marker and horizontal offset (in octaves of kappa, so the runs of one candidate do not hide
# each other) of each check's run
CHECK_STYLE = {
    "step": ("v", -0.12, "halved step"),
    "nbeta": ("s", 0.12, "nbeta / 2, γ / 2"),
    "rescale x2": (">", 0.24, "rescaled x2 (own edge)"),
    "rescale x0.5": ("<", -0.24, "rescaled x0.5 (own edge)"),
    "reference": ("*", 0.0, "MALA reference"),
}


def draw_checks(ax, checks: pd.DataFrame, colours: dict, *, label: bool) -> None:
    """Each check's run at its candidate's resolution (shifted by its role's offset): filled
    if valid, hollow if not (gid ``check:<role>``), a grey x at a checkpoint that is not a
    minimum (gid ``check_not_a_minimum``)."""
    for role, (marker, offset, name) in CHECK_STYLE.items():
        sub = checks[checks["role"] == role]
        if sub.empty:
            continue
        x = sub["x"].to_numpy(float) * 2.0**offset
        y = sub["llc_mean"].to_numpy(float)
        nam = (sub["status"] == STATUS_NOT_A_MINIMUM).to_numpy()
        valid = sub["valid"].to_numpy(bool)
        colour = [colours.get(s, "0.3") for s in sub["series"]]
        for i in range(len(sub)):
            if nam[i]:
                ax.plot(x[i], y[i], ls="", marker="x", ms=5, color=NOT_A_MINIMUM_COLOUR,
                        gid="check_not_a_minimum", zorder=3)  # fmt: skip
                continue
            ax.plot(x[i], y[i], ls="", marker=marker, ms=5.5, color=colour[i], mec=colour[i],
                    mfc=colour[i] if valid[i] else "none", mew=1.0, gid=f"check:{role}",
                    zorder=3)  # fmt: skip
        if label:
            ax.plot([], [], ls="", marker=marker, ms=5.5, color="0.3", label=name)


def ring(ax, x, y, *, gid: str, label: str | None = None) -> None:
    ax.plot(x, y, ls="", marker="o", ms=12, mfc="none", mec=FIT_COLOUR, mew=1.6, gid=gid,
            label=label, zorder=4)  # fmt: skip


def chosen_note(res: dict) -> str | None:
    chosen = res["chosen"]
    if chosen.empty:
        return None
    own = chosen[chosen["role"] == "candidate"]
    r = (own if len(own) else chosen).iloc[0]
    word = "valid" if res["chosen_valid"] else "NOT valid"
    return (
        f"chosen ({word}): {r['kind']}, nbeta {fmt(r['nbeta'])}, γ {fmt(r['localization'])} "
        f"(κ {fmt(r['x'], 3)}), eps {fmt(r['lr'], 3)} -> LLC {fmt(r['llc_mean'])} at "
        f"{res['target_labels'].get(int(r['target']), '')}"
    )


@register("calibration", stem="fig_calibration", reads="calibration", per_sampler=False)
def draw_calibration(table: pd.DataFrame, params: dict):
    """Sampler calibration of one model shape (SPEC section 10): the LLC estimate against the
    localisation ladder's resolution κ = nbeta λ / γ, a panel per sampler kind, a line per
    nbeta; each candidate (diamond) with its checks' runs beside it (halved step, nbeta / 2,
    rescalings at their own stability edge, MALA reference); not valid hollow, not a minimum a
    grey x; the chosen setting ringed in red; the other targets on the right."""
    res = calibration_points(table)
    pts, ladder, checks = res["points"], res["ladder"], res["checks"]
    targets, chosen = res["targets"], res["chosen"]
    search = res["target_labels"].get(res["search_target"], "")
    notes = [
        f"{res['n']} estimates, {res['n_valid']} valid; ladders and checks at {search}"
        if res["n"]
        else None,
        chosen_note(res),
        f"calibration: {res['reason']}" if res["reason"] else None,
        *res["notes"],
    ]
    kinds = res["kinds"] or sorted(set(pts["panel"])) or ["sgld"]
    extra = 1 if len(targets) else 0
    fig, axes = new_figure(
        1, len(kinds) + extra, notes, panel_w=3.8, panel_h=3.0, dpi=dpi_of(params)
    )
    if pts.empty:
        no_data(axes[0, 0], "no calibration estimates")
        return fig
    nbetas = sorted(set(pts["series"].dropna()), reverse=True)
    colours = dict(zip(nbetas, palette(len(nbetas)), strict=True))
    at_search = pts["target"] == res["search_target"]
    for j, kind in enumerate(kinds):
        ax = axes[0, j]
        first = j == 0
        ax.set_title(f"{kind}, at {search}", fontsize=8)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        sub = pts[at_search & (pts["panel"] == kind)]
        if log_axis_ok(sub["llc_mean"], min_ratio=20.0):
            ax.set_yscale("log")
        for nb in nbetas:
            line = ladder[(ladder["panel"] == kind) & (ladder["series"] == nb)].sort_values("x")
            if line.empty:
                continue
            ax.plot(line["x"], line["llc_mean"], color=colours[nb], lw=1.0, gid="ladder",
                    label=f"nbeta = {fmt(nb)}" if first else None)  # fmt: skip
            draw_runs(ax, line["x"], line["llc_mean"], line["valid"], color=colours[nb],
                      status=line["status"], ms=4.0, alpha=1.0)  # fmt: skip
        draw_checks(ax, checks[checks["panel"] == kind], colours, label=first)
        cands = res["candidates"][res["candidates"]["panel"] == kind]
        if len(cands):
            ax.plot(cands["x"], cands["llc_mean"], ls="", marker="D", ms=8, mfc="none",
                    mec="black", mew=1.0, gid="candidate", zorder=3,
                    label="candidate" if first else None)  # fmt: skip
        mark = chosen[(chosen["target"] == res["search_target"]) & (chosen["panel"] == kind)]
        mark = mark[mark["role"] == "candidate"] if (mark["role"] == "candidate").any() else mark
        if len(mark):
            mark = mark.drop_duplicates(subset=["x", "llc_mean"])
            ring(ax, mark["x"], mark["llc_mean"], gid="chosen", label="chosen")
        ax.set_xlabel("resolution κ = nbeta λ / γ")
        if first:
            ax.set_ylabel("estimated LLC")
    if extra:
        draw_other_targets(axes[0, -1], targets, res, colours)
    ax0 = axes[0, 0]
    ax0.plot([], [], ls="", marker="o", mfc="none", mec="0.3", label="not valid")
    ax0.plot([], [], ls="", marker="x", color=NOT_A_MINIMUM_COLOUR, label="not a minimum")
    handles, labels = ax0.get_legend_handles_labels()
    if not any(lab == "chosen" for lab in labels) and not chosen.empty:
        handles.append(ax0.plot([], [], ls="", marker="o", mfc="none", mec=FIT_COLOUR)[0])
        labels.append("chosen")
    fig.legend(handles, labels, loc="outside upper center", ncols=min(5, len(labels)),
               fontsize=7, frameon=False)  # fmt: skip
    return fig


def draw_other_targets(ax, targets: pd.DataFrame, res: dict, colours: dict) -> None:
    """The estimates at the targets other than the search's (a column each, labelled), by
    status, coloured by nbeta; the chosen setting ringed."""
    order = sorted(targets["target"].unique())
    pos = {t: i for i, t in enumerate(order)}
    x = targets["target"].map(pos).to_numpy(float)
    for nb in sorted(set(targets["series"].dropna()), reverse=True):
        m = (targets["series"] == nb).to_numpy()
        draw_runs(ax, x[m], targets["llc_mean"].to_numpy(float)[m], targets["valid"][m],
                  color=colours.get(nb, "0.3"), status=targets["status"][m], ms=4.5,
                  alpha=1.0)  # fmt: skip
    mark = np.asarray(targets["chosen"], dtype=bool)
    if mark.any():
        ring(ax, x[mark], targets["llc_mean"].to_numpy(float)[mark], gid="chosen_other")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([res["target_labels"].get(int(t), str(t)) for t in order], fontsize=6,
                       rotation=20, ha="right")  # fmt: skip
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_title("other targets (the candidates' step)", fontsize=8)
