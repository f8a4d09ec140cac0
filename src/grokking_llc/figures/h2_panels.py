"""Appendix H.2 (SPEC section 7 item 7): Figure 3's panel repeated over runs (p, width, lr,
weight decay, batch size), for one named sampler.

Each panel: train / validation loss (log) and, on a second y axis, the LLC track (valid filled,
invalid hollow, not a minimum a grey x; under the paper's protocol every estimate filled, as the
paper draws it). Panel titles are wrapped to the panel's width so that they neither run into
each other nor get cut off; one legend for the whole figure.
"""

from __future__ import annotations

from grokking_llc.figures._common import LLC_COLOURS, no_data_figure, panel_grid, use_of, wrap
from grokking_llc.figures._track import draw_llc, draw_losses, mark_accuracy_steps, run_statistics
from grokking_llc.figures.registry import register
from grokking_llc.science.tables import STATUS_NOT_A_MINIMUM, USE_ALL, estimate_status

NCOLS = 3


@register("h2", stem="fig_h2_panels", reads="panels", per_sampler=True)
def draw_h2(panels: list, params: dict):
    """Appendix H.2: Figure 3's panel for each run of the studies listed under figures.h2 (first
    seed of each setting), one named sampler: losses (log) and the LLC on a second axis, invalid
    estimates hollow."""
    panels = list(panels)
    sampler = params.get("sampler") or "LLC"
    use = use_of(params)
    n_est = n_valid = n_nam = 0
    for _, _, llc in panels:
        n_est += len(llc)
        n_valid += int(llc["valid"].fillna(False).astype(bool).sum()) if "valid" in llc else 0
        n_nam += int((estimate_status(llc) == STATUS_NOT_A_MINIMUM).sum())
    head = (
        f"sampler {sampler}: {n_valid} of {n_est} estimates valid (filled); hollow markers "
        f"failed the validity checks, grey x: {n_nam} not a minimum"
    )
    if use == USE_ALL:
        head = (
            f"sampler {sampler}, the paper's protocol (SPEC section 4): every estimate drawn "
            f"filled, as the paper does; {n_est - n_valid} of {n_est} fail the validity checks "
            f"({n_nam} not a minimum)"
        )
    notes = [
        head,
        None
        if all("valid" in llc for _, _, llc in panels)
        else "some LLC tables have no validity column: their estimates count as not valid",
        "dotted lines: train / validation accuracy first reach 0.99",
    ]
    if not panels:
        return no_data_figure(params, "no runs to show")
    fig, axes = panel_grid(len(panels), NCOLS, notes, params, size=(4.4, 3.0))
    colour = LLC_COLOURS[0]
    for ax, (title, log, llc) in zip(axes, panels, strict=True):
        draw_losses(ax, log, loss_label="loss")
        mark_accuracy_steps(ax, run_statistics(log), label=False)
        ax.set_xlabel("training step", fontsize=7)
        ax.tick_params(labelsize=6.5)
        ax.set_title(wrap(title, 52), fontsize=7)
        twin = ax.twinx()
        twin.grid(False)
        draw_llc(twin, llc, color=colour, name=sampler, ms=2.2, use=use)
        twin.set_ylabel("estimated LLC", color=colour, fontsize=7)
        twin.tick_params(axis="y", colors=colour, labelsize=6.5)
    handles, labels = [], []
    for a in fig.axes:
        for h, lab in zip(*a.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(
        handles,
        labels,
        loc="outside upper center",
        ncols=min(4, len(labels)),
        fontsize=7,
        frameon=False,
    )
    return fig
