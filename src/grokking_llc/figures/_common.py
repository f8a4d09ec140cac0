"""Drawing helpers shared by the figure modules: colours, the notes panel, seed means with error
bars, valid (filled) and invalid (hollow) points. Nothing here fits or decides a number.

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

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
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
    "THEORY_COLOUR",
    "draw_means",
    "draw_runs",
    "fmt",
    "new_figure",
    "no_data",
    "n_text",
    "palette",
    "set_style",
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
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    v = np.asarray(valid, dtype=bool)
    ok = bad = None
    if status is not None:
        nam = (np.asarray(status, dtype=object) == STATUS_NOT_A_MINIMUM) & ~v
        if nam.any():
            ax.plot(
                xa[nam],
                ya[nam],
                ls="",
                marker="x",
                ms=ms + 0.5,
                color=NOT_A_MINIMUM_COLOUR,
                mew=1.0,
                gid="runs_not_a_minimum",
                zorder=2,
                label="not a minimum (LLC undefined, not used)" if label_invalid else None,
            )
        xa, ya, v = xa[~nam], ya[~nam], v[~nam]
    if v.any():
        (ok,) = ax.plot(
            xa[v],
            ya[v],
            ls="",
            marker="o",
            ms=ms,
            color=color,
            alpha=alpha,
            mec=color,
            mfc=color,
            gid="runs_valid",
            zorder=2,
        )
    if (~v).any():
        (bad,) = ax.plot(
            xa[~v],
            ya[~v],
            ls="",
            marker="o",
            ms=ms + 1.0,
            color=color,
            mfc="none",
            mec=color,
            mew=1.0,
            gid="runs_invalid",
            zorder=2,
            label=label_invalid,
        )
    return ok, bad


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
