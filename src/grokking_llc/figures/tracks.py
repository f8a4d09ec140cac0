"""Figures 3 and 13 (SPEC section 7 items 3 and 8): one run's train and validation loss (log
scale) and, in a panel per named sampler below it on the same step axis, its LLC curve.

Every sampler's curve is shown (issue 10): valid estimates filled with the chains' spread as a
band, invalid ones hollow, those at a checkpoint that is not a minimum a grey x. A sampler that
runs the paper's protocol (``params["protocols"]``, SPEC section 4) is drawn as the paper draws
it, every estimate filled, its panel marked as the paper's protocol. Dotted lines mark train
and validation accuracy reaching 0.99 ("never" in the notes when that does not happen). The
notes give, per sampler, how many estimates are valid and how the used ones move with the
validation loss (:func:`grokking_llc.science.trajectory.track_statistics`).
"""

from __future__ import annotations

import pandas as pd

from grokking_llc.figures._common import LLC_COLOURS, dpi_of, fmt, new_figure, wrap
from grokking_llc.figures._track import draw_llc, draw_losses, mark_accuracy_steps
from grokking_llc.figures.registry import register
from grokking_llc.science.tables import USE_ALL, USE_VALID
from grokking_llc.science.text import fmt_step
from grokking_llc.science.trajectory import track_statistics


def _stat_line(name: str, st: dict, window: str) -> str:
    where = "over the grokking window" if window == "grokking" else "over the run"
    c = st["status_counts"]
    head = f"{name}: {st['n_valid']} of {st['n_estimates']} estimates valid"
    if c["not_a_minimum"]:
        head += f" ({c['not_a_minimum']} at a checkpoint that is not a minimum)"
    if st["use"] == USE_ALL:
        head = (
            f"{name} (the paper's protocol: every estimate drawn and used, as the paper does): "
            f"{st['n_estimates'] - st['n_valid']} of {st['n_estimates']} fail the validity checks"
        )
    kind = "valid " if st["use"] == USE_VALID else ""
    if st["n_window"] < 3:
        return f"{head}; fewer than 3 {kind}estimates {where}: no rank correlation"
    ci = f"95% CI {fmt(st['ci_low'], 2)}..{fmt(st['ci_high'], 2)}, " if st["n_window"] > 3 else ""
    return (
        f"{head}; Spearman(LLC, val loss) {where} = {fmt(st['spearman'], 3)} "
        f"({ci}{st['n_window']} estimates); highest {kind}LLC {fmt(st['peak_llc'])} at step "
        f"{fmt_step(st['peak_step'])} ({st['peak_position']})"
    )


def draw_track_figure(
    data: tuple[pd.DataFrame, dict[str, pd.DataFrame]],
    params: dict,
    *,
    loss_label: str,
    window: str,
):
    """Losses on top, one LLC panel per sampler below (shared step axis)."""
    train_log, llcs = data
    protocols = dict(zip(llcs, params.get("protocols") or [None] * len(llcs), strict=True))
    uses = {n: USE_ALL if protocols[n] == "paper" else USE_VALID for n in llcs}
    stats = {
        name: track_statistics(train_log, llc, window=window, use=uses[name])
        for name, llc in llcs.items()
    }
    base = track_statistics(train_log, pd.DataFrame({"step": [], "llc_mean": []}))
    validated = any(u == USE_VALID for u in uses.values())
    notes = [
        f"train acc reaches 0.99 at step {fmt_step(base['t_mem'])}, "
        f"validation acc at step {fmt_step(base['t_gen'])}",
        *[_stat_line(n, s, window) for n, s in stats.items()],
        *sorted({note for s in stats.values() for note in s["notes"]}),
        "validated samplers: filled valid estimates (band: ± std over chains), hollow failed the "
        "validity checks, grey x not a minimum"
        if validated
        else None,
    ]
    n = len(llcs)
    fig, axes = new_figure(
        1 + n,
        1,
        notes,
        panel_w=7.2,
        panel_h=1.7,
        dpi=dpi_of(params),
        height_ratios=[1.3] + [1.0] * n,
        sharex=True,
    )
    ax = axes[0, 0]
    draw_losses(ax, train_log, loss_label=loss_label)
    mark_accuracy_steps(ax, base)
    ax.legend(fontsize=6.5, loc="upper right")
    ax.set_title(wrap(params.get("title") or "", 110), fontsize=9)
    for i, (name, llc) in enumerate(llcs.items()):
        lax = axes[1 + i, 0]
        colour = LLC_COLOURS[i % len(LLC_COLOURS)]
        draw_llc(lax, llc, color=colour, name=name, use=uses[name])
        mark_accuracy_steps(lax, base, label=False)
        if uses[name] == USE_ALL:
            lax.set_title(f"{name}: the paper's protocol (SPEC section 4)", fontsize=7, loc="left")
        lax.set_ylabel(f"LLC\n({name})", color=colour)
        lax.tick_params(axis="y", colors=colour)
        lax.legend(fontsize=6, loc="upper right")
    for a in axes[:-1, 0]:
        a.tick_params(labelbottom=False)
    axes[-1, 0].set_xlabel("training step")
    return fig


@register("fig3", stem="fig3_llc_tracks_generalisation", reads="track", per_sampler=False)
def draw_fig3(data, params: dict):
    """Figure 3: one run's training and validation loss (log scale) and, below, the estimated
    LLC under every named sampler against the training step: valid estimates filled with the
    spread over chains, invalid ones hollow (the paper's protocol: every estimate filled, as the
    paper draws it); dotted lines mark train and validation accuracy reaching 0.99."""
    return draw_track_figure(data, params, loss_label="loss (centred MSE)", window="grokking")


@register("fig13", stem="fig13_transformer", reads="track", per_sampler=False)
def draw_fig13(data, params: dict):
    """Figure 13 (transformer): losses (cross-entropy, log scale) and the estimated LLC under
    every named sampler against the training step; invalid estimates hollow (the paper's
    protocol: every estimate filled). The paper's transformer does not grok either (H.3.1); its
    claim is that the LLC curve tracks the test loss."""
    return draw_track_figure(data, params, loss_label="loss (cross-entropy)", window="all")
