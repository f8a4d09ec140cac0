"""Drawing helpers shared by the figure modules: colours, figure layouts (one panel, a grid of
panels, each with the notes panel below), seed means with error bars, valid (filled) and invalid
(hollow) points. Nothing here fits or decides a number.

Two ways to draw LLC estimates (issue 20), chosen by the named sampler (:func:`use_of`):

* a validated sampler: valid estimates filled, invalid ones hollow, estimates at a checkpoint
  that is not a minimum as a grey x; only valid ones enter means and fits;
* a sampler that runs the paper's protocol (``params["protocol"] == "paper"``, SPEC section 4):
  what the paper draws -- every estimate filled and fitted -- marked as the paper's protocol in
  the title, the notes counting the estimates that fail the validity checks.

Artists that tests read back carry a ``gid``:

* ``"means"``: the data line of a seed-mean error bar (its container is in ``ax.containers``);
* ``"runs_valid"`` / ``"runs_invalid"`` / ``"runs_not_a_minimum"``: one marker per run,
  filled / hollow (``markerfacecolor == "none"``) / a grey x;
* ``"fit"``: a fitted curve; ``"notes"``: the notes panel's text.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from grokking_llc.science.tables import STATUS_NOT_A_MINIMUM, USE_ALL, USE_VALID
from grokking_llc.science.text import fmt

LOSS_COLOURS = {"train": "tab:blue", "val": "tab:orange"}
LLC_COLOURS = ("tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
DATA_COLOUR = "black"
FIT_COLOUR = "tab:red"
THEORY_COLOUR = "tab:blue"
BOUND_COLOUR = "tab:purple"
NOT_A_MINIMUM_COLOUR = "0.55"
NOTE_FONTSIZE = 7.0
_NOTE_LINE_IN = NOTE_FONTSIZE * 1.45 / 72.0  # height of one note line, inches

__all__ = [
    "BOUND_COLOUR",
    "DATA_COLOUR",
    "FIT_COLOUR",
    "LLC_COLOURS",
    "LOSS_COLOURS",
    "Panel",
    "THEORY_COLOUR",
    "draw_means",
    "draw_points",
    "draw_runs",
    "fmt",
    "new_figure",
    "no_data",
    "no_data_figure",
    "n_text",
    "palette",
    "panel_grid",
    "set_style",
    "single_panel",
    "wrap",
]


def set_style(style: str = "whitegrid") -> None:
    sns.set_theme(style=style, context="paper")


def palette(n: int, name: str = "viridis") -> list:
    return list(sns.color_palette(name, max(n, 1)))[:n]


def wrap(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters (its own line breaks kept)."""
    lines = [
        "\n".join(textwrap.wrap(part, width=width, break_long_words=False)) or part
        for part in str(text).split("\n")
    ]
    return "\n".join(lines)


def _note_lines(notes: Iterable[str | None], width: int) -> list[str]:
    out: list[str] = []
    for n in notes:
        if n:
            out.extend(textwrap.wrap(str(n), width=width, subsequent_indent="   ") or [""])
    return out


def new_figure(
    nrows: int,
    ncols: int,
    notes: Iterable[str | None],
    *,
    panel_w: float,
    panel_h: float,
    dpi: int = 150,
    height_ratios: Sequence[float] | None = None,
    sharex: bool = False,
    sharey: bool = False,
) -> tuple[Figure, np.ndarray]:
    """A figure with an ``nrows x ncols`` grid of axes and, below it, a notes panel holding the
    ``notes`` (one line each, wrapped to the figure's width; None and "" skipped).

    The notes never cover data: their panel is a row of its own, sized to their line count
    (constrained layout). Returns the figure and the 2-D array of plotting axes.
    """
    width = panel_w * ncols
    lines = _note_lines(notes, width=max(40, int((width - 0.6) * 72 / (NOTE_FONTSIZE * 0.6))))
    note_h = _NOTE_LINE_IN * len(lines) + 0.08 if lines else 0.0
    ratios = list(height_ratios) if height_ratios is not None else [1.0] * nrows
    plot_h = panel_h * nrows
    fig = plt.figure(figsize=(width, plot_h + note_h), dpi=dpi, layout="constrained")
    rows = [plot_h * r / sum(ratios) for r in ratios] + ([note_h] if lines else [])
    gs = fig.add_gridspec(len(rows), ncols, height_ratios=rows)
    axes = np.empty((nrows, ncols), dtype=object)
    for i in range(nrows):
        for j in range(ncols):
            kw = {}
            if sharex and (i, j) != (0, 0):
                kw["sharex"] = axes[0, 0]
            if sharey and (i, j) != (0, 0):
                kw["sharey"] = axes[0, 0]
            axes[i, j] = fig.add_subplot(gs[i, j], **kw)
    if lines:
        note_ax = fig.add_subplot(gs[nrows, :])
        note_ax.set_axis_off()
        note_ax.set_gid("notes_panel")
        note_ax.text(
            0.0,
            1.0,
            "\n".join(lines),
            transform=note_ax.transAxes,
            ha="left",
            va="top",
            fontsize=NOTE_FONTSIZE,
            color="0.2",
            gid="notes",
        )
    return fig, axes


class Panel(NamedTuple):
    """What a one-panel figure shows around its data: the panel's size (width, height; inches),
    its axis labels and its title."""

    size: tuple[float, float]
    xlabel: str
    ylabel: str
    title: str


def single_panel(
    panel: Panel, notes: Iterable[str | None], params: dict, *, per_sampler: bool = True
) -> tuple[Figure, Axes]:
    """A figure of one panel with the notes below: ``panel``'s size, axis labels and title, the
    title followed by the named sampler (:func:`sampler_suffix`) unless ``per_sampler`` is
    False. Returns the figure and the panel."""
    w, h = panel.size
    fig, axes = new_figure(1, 1, notes, panel_w=w, panel_h=h, dpi=dpi_of(params))
    ax = axes[0, 0]
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.set_title(panel.title + (sampler_suffix(params) if per_sampler else ""), fontsize=9)
    return fig, ax


def panel_grid(
    n: int, max_cols: int, notes: Iterable[str | None], params: dict, *, size: tuple[float, float]
) -> tuple[Figure, list[Axes]]:
    """A figure of ``n`` panels (each ``size`` inches) in rows of at most ``max_cols``, the
    cells left over blank, with the notes below. Returns the figure and the ``n`` panels in
    reading order."""
    ncols = min(max_cols, n)
    w, h = size
    fig, axes = new_figure(
        math.ceil(n / ncols), ncols, notes, panel_w=w, panel_h=h, dpi=dpi_of(params)
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_axis_off()
    return fig, flat[:n]


def no_data_figure(params: dict, message: str) -> Figure:
    """A figure of one panel and no notes, saying ``message`` where the data would be."""
    fig, axes = new_figure(1, 1, [], panel_w=5.0, panel_h=3.0, dpi=dpi_of(params))
    no_data(axes[0, 0], message)
    return fig


def plotting_axes(fig: Figure) -> list:
    """The figure's axes other than its notes panel."""
    return [ax for ax in fig.axes if ax.get_gid() != "notes_panel"]


def no_data(ax, message: str) -> None:
    ax.text(
        0.5, 0.5, wrap(message, 50), transform=ax.transAxes, ha="center", va="center", fontsize=9
    )
    ax.set_xticks([])
    ax.set_yticks([])


def draw_means(ax, agg: pd.DataFrame, x: str, *, color, label=None, marker="o", ls="-", gid=None):
    """Seed means (column ``mean``) with std error bars (``std``; none where NaN, a single run)
    against column ``x``; returns the data line (``gid`` "means" unless given)."""
    if agg.empty:
        return None
    std = agg["std"].to_numpy(dtype=float)
    yerr = std if np.any(np.isfinite(std)) else None
    cont = ax.errorbar(
        agg[x].to_numpy(dtype=float),
        agg["mean"].to_numpy(dtype=float),
        yerr=yerr,
        color=color,
        marker=marker,
        ms=4.5,
        ls=ls,
        lw=1.2,
        capsize=2.5,
        label=label,
        zorder=3,
    )
    cont.lines[0].set_gid(gid or "means")
    return cont.lines[0]


def draw_points(ax, x, y, kinds: dict, *, color, gid: str, **common) -> dict:
    """Points by kind, a marker each and no line: ``"valid"`` filled circles, ``"invalid"``
    hollow circles (``markerfacecolor == "none"``), ``"not_a_minimum"`` grey crosses.

    ``kinds``: ``{kind: (mask, marker size, style)}``, drawn in that order, a kind with no point
    skipped; each line's gid is ``gid`` with ``{kind}`` filled in, its style ``common`` and the
    kind's ``style``. Returns ``{kind: line}``."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    lines = {}
    for kind, (mask, ms, style) in kinds.items():
        if not np.any(mask):
            continue
        if kind == "not_a_minimum":
            look = {"marker": "x", "color": NOT_A_MINIMUM_COLOUR}
        else:
            look = {"marker": "o", "color": color, "mfc": color if kind == "valid" else "none"}
        (lines[kind],) = ax.plot(
            xa[mask],
            ya[mask],
            ls="",
            ms=ms,
            gid=gid.replace("{kind}", kind),
            **look,
            **common,
            **style,
        )
    return lines


def draw_runs(
    ax,
    x,
    y,
    valid,
    *,
    color,
    status=None,
    ms: float = 3.5,
    alpha: float = 0.45,
    label_invalid: str | None = None,
):
    """One marker per run: filled where ``valid`` (gid ``runs_valid``), hollow where not (gid
    ``runs_invalid``), and -- where ``status``
    (:func:`grokking_llc.science.tables.estimate_status`)
    says ``not_a_minimum`` -- a grey x instead (gid ``runs_not_a_minimum``). Returns the filled
    and hollow lines (either may be None when empty)."""
    v = np.asarray(valid, dtype=bool)
    nam = np.zeros_like(v)
    if status is not None:
        nam = (np.asarray(status, dtype=object) == STATUS_NOT_A_MINIMUM) & ~v
    nam_label = "not a minimum (LLC undefined, not used)" if label_invalid else None
    kinds = {
        "not_a_minimum": (nam, ms + 0.5, {"mew": 1.0, "label": nam_label}),
        "valid": (v, ms, {"alpha": alpha, "mec": color}),
        "invalid": (~v & ~nam, ms + 1.0, {"mec": color, "mew": 1.0, "label": label_invalid}),
    }
    lines = draw_points(ax, x, y, kinds, color=color, gid="runs_{kind}", zorder=2)
    return lines.get("valid"), lines.get("invalid")


def n_text(agg: pd.DataFrame, what: str = "valid runs (seeds)", dots: bool = True) -> str | None:
    """The runs-per-point sentence: one count, or the range of counts."""
    counts = agg["n"].to_numpy(dtype=int) if len(agg) else np.zeros(0, dtype=int)
    if counts.size == 0:
        return None
    lo, hi = int(counts.min()), int(counts.max())
    if lo == hi == 1:
        return f"each point: 1 {what.replace('runs', 'run')}, no error bar"
    span = f"{lo}" if lo == hi else f"{lo}-{hi}"
    tail = "; small dots: single runs" if dots else ""
    return f"points: mean ± std (ddof=1) over {span} {what}{tail}"


def log_axis_ok(values, min_ratio: float = 1.0) -> bool:
    """Every value finite and positive, spanning at least ``min_ratio`` (max / min)."""
    v = np.asarray(values, dtype=float)
    if not (v.size and np.all(np.isfinite(v)) and np.all(v > 0)):
        return False
    return bool(v.max() / v.min() >= min_ratio)


def dpi_of(params: dict) -> int:
    return int((params.get("plots") or {}).get("dpi", 150))


def use_of(params: dict) -> str:
    """Which estimates a figure's means and fits use: every one for a sampler that runs the
    paper's protocol (``params["protocol"] == "paper"``: drawn as the paper draws), the valid
    ones otherwise (:data:`grokking_llc.science.tables.USES`)."""
    return USE_ALL if params.get("protocol") == "paper" else USE_VALID


PAPER_PROTOCOL_MARK = "the paper's protocol: every estimate drawn and fitted"


def sampler_suffix(params: dict) -> str:
    s = params.get("sampler")
    if not s:
        return ""
    if use_of(params) == USE_ALL:
        return f" (sampler: {s}, {PAPER_PROTOCOL_MARK})"
    return f" (sampler: {s})"


def finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
