"""Figures (SPEC section 7). Each function takes tables and returns a matplotlib Figure;
saving (atomically) is the caller's job, so plots are testable without files.

Conventions shared by every figure built from the per-run table ``runs``:

* a point is the mean over the runs (seeds) that share its x value (and its line's key), its error
  bar the standard deviation over those runs (``ddof=1``; no bar when one run stands behind it);
  the number of runs per point is printed (once, when every point has the same count, otherwise
  next to each point);
* rows whose plotted values are NaN or infinite are dropped and the plot says how many;
* fits use :mod:`grokking_llc.gsm` (``fit_linear``, ``fit_exponential_decay``) on the per-run
  points, and are skipped -- with a note in the plot -- when there are too few distinct x values;
  theory curves come from :mod:`grokking_llc.theory`;
* nothing here raises on a small or degenerate table: an empty selection gives a figure that
  says so.

The ``fit_*`` helpers return the numbers the figures print, so that text can quote them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from grokking_llc import gsm, theory  # noqa: E402

LOSS_COLOURS = {"train": "tab:blue", "val": "tab:orange"}
LLC_COLOUR = "tab:green"
DATA_COLOUR = "black"
FIT_COLOUR = "tab:red"
THEORY_COLOUR = "tab:blue"
BOUND_COLOUR = "tab:purple"

# SPEC section 7 item 9 (paper H.3.2): Tian (2025)'s critical ratio and the paper's baseline.
TIAN_CRITICAL_RATIO = 2.75
PAPER_BASELINE_RATIO = 5.3
# SPEC section 6: the paper's own GSM-on-LLC line (its sampler settings; quoted, never drawn).
PAPER_GSM_LLC_SLOPE = 0.1288
PAPER_GSM_LLC_INTERCEPT = -2.098
PAPER_GSM_LLC_R2 = 0.955

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

# Hyperparameters that should be constant within a figure's selection (beyond its x variable);
# when they are not, the figure says so.
_HYPERPARAMETERS = (
    "model",
    "loss",
    "p",
    "width",
    "train_frac",
    "lr",
    "weight_decay",
    "batch_size",
    "max_steps",
)
_MIN_DISTINCT_LINEAR = 2
_MIN_DISTINCT_EXP = 3


def set_style(style: str = "whitegrid") -> None:
    sns.set_theme(style=style, context="paper")


# --------------------------------------------------------------------------- one-run panels


def draw_loss_llc(
    ax,
    train_log: pd.DataFrame,
    llc: pd.DataFrame,
    *,
    legend: bool = True,
    loss_label: str | None = None,
):
    """Train and validation loss (log scale) and the LLC with its chain spread on a twin axis.

    ``loss_label`` overrides the loss axis label (default: "loss (centred MSE)").
    Returns the twin axis holding the LLC.
    """
    ax.plot(
        train_log["step"], train_log["train_loss"], color=LOSS_COLOURS["train"], label="train loss"
    )
    ax.plot(
        train_log["step"], train_log["val_loss"], color=LOSS_COLOURS["val"], label="validation loss"
    )
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    if loss_label is None:
        loss_label = "loss (centred MSE)" if "train_loss" in train_log else "loss"
    ax.set_ylabel(loss_label)
    ax2 = ax.twinx()
    ax2.grid(False)
    step, mean, std = llc["step"], llc["llc_mean"], llc["llc_std"].fillna(0.0)
    ax2.plot(step, mean, color=LLC_COLOUR, marker="o", ms=2.5, lw=1.2, label="LLC (mean of chains)")
    ax2.fill_between(step, mean - std, mean + std, color=LLC_COLOUR, alpha=0.2, lw=0)
    ax2.set_ylabel("estimated LLC", color=LLC_COLOUR)
    ax2.tick_params(axis="y", colors=LLC_COLOUR)
    if legend:
        handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper right", fontsize=7, frameon=True)
    return ax2


def grok_steps(train_log: pd.DataFrame, threshold: float = 0.99) -> tuple[float, float]:
    """First steps with train and with validation accuracy >= threshold (NaN when never)."""

    def first(col: str) -> float:
        hit = train_log.loc[train_log[col] >= threshold, "step"]
        return float(hit.iloc[0]) if len(hit) else float("nan")

    return first("train_acc"), first("val_acc")


def _draw_run_panel(
    ax,
    train_log: pd.DataFrame,
    llc: pd.DataFrame,
    title: str,
    *,
    legend: bool = True,
    loss_label: str | None = None,
    title_size: float = 9,
):
    """Figure 3's panel: :func:`draw_loss_llc` plus dotted lines at the 0.99 accuracy steps."""
    ax2 = draw_loss_llc(ax, train_log, llc, legend=legend, loss_label=loss_label)
    t_mem, t_gen = grok_steps(train_log)
    for t, lab in ((t_mem, "train acc 0.99"), (t_gen, "val acc 0.99")):
        if np.isfinite(t):
            ax.axvline(t, color="grey", ls=":", lw=1)
            ax.text(
                t, ax.get_ylim()[0], f" {lab}", rotation=90, va="bottom", fontsize=6, color="grey"
            )
    ax.set_title(title, fontsize=title_size)
    return ax2


def plot_fig3(train_log: pd.DataFrame, llc: pd.DataFrame, title: str, dpi: int = 150):
    """Figure 3: losses and LLC against the training step for one run (SPEC section 7).

    Dotted vertical lines mark memorisation (train acc >= 0.99) and generalisation
    (validation acc >= 0.99).
    """
    fig, ax = plt.subplots(figsize=(7, 4), dpi=dpi)
    _draw_run_panel(ax, train_log, llc, title)
    fig.tight_layout()
    return fig


def plot_fig13_transformer(
    train_log: pd.DataFrame,
    llc: pd.DataFrame,
    title: str,
    dpi: int = 150,
    *,
    loss_label: str = "loss (cross-entropy)",
):
    """Figure 13 (SPEC section 7 item 8, paper H.3.1): the transformer's losses and LLC curve.

    As :func:`plot_fig3` (train / validation loss on a log axis, LLC mean and chain spread on a
    twin axis, dotted lines at the 0.99 accuracy steps) with the loss axis labelled for the
    transformer's loss; pass ``loss_label`` if the run used another loss than cross-entropy.
    """
    fig, ax = plt.subplots(figsize=(7, 4), dpi=dpi)
    _draw_run_panel(ax, train_log, llc, title, loss_label=loss_label)
    fig.tight_layout()
    return fig


def plot_h2_panels(panels: Sequence[tuple[str, pd.DataFrame, pd.DataFrame]], dpi: int = 150):
    """Appendix H.2 (SPEC section 7 item 7): Figure 3's panel repeated over a hyperparameter.

    ``panels`` is a list of ``(title, train_log, llc)``, one per run (e.g. one per p, width,
    learning rate, weight decay or batch size), drawn in order on a grid of up to 3 columns; the
    legend is on the first panel only. Each panel has two axes (loss and its LLC twin), so the
    figure has ``2 * len(panels)`` axes (one, holding a note, when ``panels`` is empty).
    """
    panels = list(panels)
    if not panels:
        fig, ax = plt.subplots(figsize=(5, 3), dpi=dpi)
        _no_data(ax, "no runs to show")
        return fig
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.6 * ncols, 3.2 * nrows), dpi=dpi, squeeze=False
    )
    flat = axes.ravel()
    for i, (title, train_log, llc) in enumerate(panels):
        _draw_run_panel(flat[i], train_log, llc, str(title), legend=i == 0, title_size=8)
    for ax in flat[len(panels) :]:
        fig.delaxes(ax)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- shared helpers


def _fmt(x: Any, digits: int = 4) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def _mode(values: pd.Series) -> tuple[Any, list[Any]]:
    """Most common value (ties: the smallest) and the sorted distinct values."""
    counts = values.value_counts()
    top = counts[counts == counts.max()].index
    distinct = sorted(counts.index.tolist())
    return sorted(top.tolist())[0], distinct


def _finite_rows(df: pd.DataFrame, cols: Iterable[str]) -> tuple[pd.DataFrame, int]:
    """Rows whose ``cols`` are all finite numbers, and how many rows were dropped."""
    mask = np.ones(len(df), dtype=bool)
    for c in cols:
        if c not in df:
            mask[:] = False
            break
        vals = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
        mask &= np.isfinite(vals)
    return df.loc[mask].reset_index(drop=True), int((~mask).sum())


def _aggregate(df: pd.DataFrame, by: str | list[str], y: str) -> pd.DataFrame:
    """Per group of ``by``: ``mean``, ``std`` (ddof=1; NaN for one run) and ``n`` of ``y``."""
    g = df.groupby(by, sort=True)[y]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.size()}).reset_index()
    out.loc[out["n"] < 2, "std"] = np.nan
    return out


def _draw_means(ax, agg: pd.DataFrame, x: str, *, color, label=None, marker="o", ls="-"):
    """Seed means with std error bars (none where one run); returns the data line."""
    std = agg["std"].to_numpy(dtype=float)
    yerr = std if np.any(np.isfinite(std)) else None  # NaN (one run): no bar at that point
    cont = ax.errorbar(
        agg[x].to_numpy(dtype=float),
        agg["mean"].to_numpy(dtype=float),
        yerr=yerr,
        color=color,
        marker=marker,
        ms=4,
        ls=ls,
        lw=1.2,
        capsize=2.5,
        label=label,
    )
    return cont.lines[0]


def _n_text(ax, agg: pd.DataFrame, x: str, color="0.3") -> str | None:
    """Runs per point: returns one line of text when every point has the same count, otherwise
    writes ``n=k`` beside each point and returns None."""
    counts = agg["n"].to_numpy(dtype=int)
    if counts.size == 0:
        return None
    if np.all(counts == counts[0]):
        k = int(counts[0])
        return (
            "each point: 1 run"
            if k == 1
            else f"each point: mean ± std (ddof=1) over {k} runs (seeds)"
        )
    for xv, yv, k in zip(agg[x], agg["mean"], counts, strict=True):
        ax.annotate(
            f"n={k}",
            (float(xv), float(yv)),
            textcoords="offset points",
            xytext=(3, 4),
            fontsize=6,
            color=color,
        )
    return "points: mean ± std (ddof=1) over the n runs (seeds) written beside them"


def _note_box(ax, lines: Iterable[str | None], loc: str = "upper left", fontsize: float = 6.5):
    """Write the non-empty ``lines`` in a box in a corner of ``ax``."""
    text = "\n".join(s for s in lines if s)
    if not text:
        return None
    xy = {
        "upper left": (0.02, 0.98, "left", "top"),
        "upper right": (0.98, 0.98, "right", "top"),
        "lower right": (0.98, 0.02, "right", "bottom"),
        "lower left": (0.02, 0.02, "left", "bottom"),
        "outside right": (1.02, 0.0, "left", "bottom"),
    }[loc]
    return ax.text(
        xy[0],
        xy[1],
        text,
        transform=ax.transAxes,
        ha=xy[2],
        va=xy[3],
        fontsize=fontsize,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"},
        zorder=10,
    )


def _no_data(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _finite_positive_rows(
    df: pd.DataFrame, cols: Iterable[str], positive: str
) -> tuple[pd.DataFrame, int]:
    """:func:`_finite_rows`, also dropping rows whose ``positive`` column is <= 0 (log axes)."""
    kept, dropped = _finite_rows(df, cols)
    if len(kept):
        mask = kept[positive] > 0
        dropped += int((~mask).sum())
        kept = kept[mask]
    return kept, dropped


def _dropped_note(n: int, what: str) -> str | None:
    return f"dropped {n} run(s) with NaN {what}" if n else None


def _varying_note(df: pd.DataFrame, exclude: Iterable[str]) -> str | None:
    """A note naming the hyperparameters (other than ``exclude``) that vary within ``df``."""
    ex = set(exclude)
    varying = []
    for c in _HYPERPARAMETERS:
        if c in ex or c not in df or df.empty:
            continue
        vals = df[c].dropna().unique()
        if len(vals) > 1:
            shown = ", ".join(_fmt(v, 3) for v in sorted(vals, key=str)[:4])
            more = ", ..." if len(vals) > 4 else ""
            varying.append(f"{c} in {{{shown}{more}}}")
    return ("mixed: " + "; ".join(varying)) if varying else None


def _r2(y: np.ndarray, fitted: np.ndarray) -> float:
    """Centred R^2, ``1 - SSE/SST`` (the definition gsm's fits use; NaN for constant y)."""
    return gsm._r_squared(np.asarray(y, dtype=float), np.asarray(fitted, dtype=float))


def _proportional(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares through the origin, ``y ~ c x``: ``c = sum(x y) / sum(x^2)`` and the
    centred R^2 of that line (can be negative when the line misses the mean)."""
    den = float(np.sum(x * x))
    if den == 0.0:
        return math.nan, math.nan
    c = float(np.sum(x * y)) / den
    return c, _r2(y, c * x)


@lru_cache(maxsize=4096)
def _bound_cached(p: int, K: int, train_frac: float, data_seed: int) -> float:
    return float(theory.data_restricted_bound(p, K, train_frac=train_frac, seed=data_seed))


def _bound_per_run(df: pd.DataFrame) -> tuple[np.ndarray | None, str | None]:
    """:func:`theory.data_restricted_bound` for each run (graph counting on its split, cheap);
    None and the reason when the table lacks the columns or a split cannot be drawn."""
    need = ("p", "width", "train_frac", "data_seed")
    if any(c not in df for c in need):
        return None, "data-restricted bound skipped: no train_frac / data_seed columns"
    try:
        vals = [
            _bound_cached(int(r.p), int(r.width), float(r.train_frac), int(r.data_seed))
            for r in df[list(need)].itertuples(index=False)
        ]
    except (ValueError, TypeError) as exc:
        return None, f"data-restricted bound skipped ({exc})"
    return np.asarray(vals, dtype=float), None


def _theory_quadratic(p: Iterable[Any], K: Iterable[Any]) -> np.ndarray:
    return np.asarray(
        [theory.llc_quadratic(int(pp), int(kk)) for pp, kk in zip(p, K, strict=True)], dtype=float
    )


def _as_int_grid(lo: float, hi: float, num: int = 200) -> np.ndarray:
    lo_i, hi_i = int(math.floor(lo)), int(math.ceil(hi))
    return np.unique(np.linspace(lo_i, hi_i, num).round().astype(int))


# --------------------------------------------------------------------------- Figure 1


def _select_fixed(
    runs: pd.DataFrame, y: str, fixed: str, vary: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Runs with finite ``y`` at the most common value of ``fixed``; info and notes."""
    info: dict[str, Any] = {"notes": []}
    df, dropped = _finite_rows(runs, [y, vary, fixed])
    info["n_dropped_nan"] = dropped
    if dropped:
        info["notes"].append(_dropped_note(dropped, f"{y} / {vary} / {fixed}"))
    if df.empty:
        info[fixed] = math.nan
        return df, info
    value, distinct = _mode(df[fixed])
    info[fixed] = value
    if len(distinct) > 1:
        info["notes"].append(
            f"{len(distinct)} values of {fixed} present ({', '.join(_fmt(v) for v in distinct)}); "
            f"using the most common, {fixed} = {_fmt(value)}"
        )
    df = df[df[fixed] == value].copy()
    info["notes"].append(_varying_note(df, exclude=(vary, fixed)))
    return df, info


def _theory_fit(
    y: np.ndarray, t: np.ndarray, x: np.ndarray, prefix: str, out: dict[str, Any]
) -> None:
    """Scale ``t`` to ``y`` by least squares (``c = argmin sum (y - c t)^2``) and record the scale,
    its R^2 and the slope (against ``x``) of the scaled curve over the distinct x values."""
    c, r2 = _proportional(t, y)
    out[f"{prefix}scale"] = c
    out[f"{prefix}r2"] = r2
    per_x = pd.Series(t).groupby(np.asarray(x, dtype=float)).mean()  # seeds / splits averaged
    if per_x.size >= _MIN_DISTINCT_LINEAR and math.isfinite(c):
        out[f"{prefix}slope"] = gsm.fit_linear(per_x.index.to_numpy(), per_x.to_numpy())["slope"]
        out[f"{prefix}slope_scaled"] = c * out[f"{prefix}slope"]
    else:
        out[f"{prefix}slope"] = math.nan
        out[f"{prefix}slope_scaled"] = math.nan


def fit_llc_vs_p(runs: pd.DataFrame) -> dict[str, Any]:
    """Numbers behind Figure 1 (SPEC section 7 item 1): final LLC against p at one width.

    Selection: runs with finite ``llc_final``, ``p`` and ``width``, at the most common width.
    Returns a dict with ``width``, ``n_runs``, ``n_p`` (distinct p), ``n_dropped_nan``;
    the least-squares line on the per-run points (``slope``, ``intercept``, ``r2``; NaN with fewer
    than 2 distinct p); the theory's shape ``theory.llc_quadratic(p, K)`` scaled to the data by
    ``scale = argmin_c sum (llc - c * theory)^2`` with ``theory_r2`` (R^2 of ``scale * theory``),
    ``theory_slope`` (the unscaled theory's least-squares slope in p over the observed p values;
    ``3K/2`` wherever the under-parametrised regime ``K (3p-1)/2`` holds) and
    ``theory_slope_scaled = scale * theory_slope``, the number to compare with ``slope``; the
    same for the data-restricted bound ``theory.data_restricted_bound(p, K, train_frac,
    data_seed)`` under ``bound_scale``, ``bound_r2``, ``bound_slope``, ``bound_slope_scaled``
    (NaN when it cannot be computed); and ``notes`` (what was dropped, skipped or mixed).
    """
    df, info = _select_fixed(runs, "llc_final", fixed="width", vary="p")
    return _fit_llc_scaling(df, info, x="p", fixed="width")


def _fit_llc_scaling(df: pd.DataFrame, info: dict[str, Any], x: str, fixed: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        fixed: info[fixed],
        "n_runs": len(df),
        f"n_{'p' if x == 'p' else 'width'}": int(df[x].nunique()) if len(df) else 0,
        "n_dropped_nan": info["n_dropped_nan"],
        "slope": math.nan,
        "intercept": math.nan,
        "r2": math.nan,
        "fit_skipped": None,
    }
    notes = list(info["notes"])
    keys = ("scale", "r2", "slope", "slope_scaled")
    for prefix in ("theory_", "bound_"):
        out.update({prefix + k: math.nan for k in keys})
    if df.empty:
        out["fit_skipped"] = "no runs with a finite final LLC"
        out["notes"] = [n for n in notes + [out["fit_skipped"]] if n]
        return out
    xv = df[x].to_numpy(dtype=float)
    yv = df["llc_final"].to_numpy(dtype=float)
    n_distinct = np.unique(xv).size
    if n_distinct >= _MIN_DISTINCT_LINEAR:
        out.update({k: v for k, v in gsm.fit_linear(xv, yv).items() if k != "n"})
    else:
        out["fit_skipped"] = (
            f"fits skipped: {n_distinct} distinct {x} value(s), need {_MIN_DISTINCT_LINEAR}"
        )
        notes.append(out["fit_skipped"])
    t = _theory_quadratic(df["p"], df["width"])
    _theory_fit(yv, t, xv, "theory_", out)
    bound, why = _bound_per_run(df)
    if bound is None:
        notes.append(why)
    else:
        _theory_fit(yv, bound, xv, "bound_", out)
    out["notes"] = [n for n in notes if n]
    return out


def _draw_theory_curves(ax, df: pd.DataFrame, fit: dict[str, Any], x: str, grid: np.ndarray):
    """Scaled Q-level theory on an integer grid of ``x`` and the scaled data-restricted bound at
    the observed runs (seed-averaged per x)."""
    if math.isfinite(fit["theory_scale"]):
        if x == "p":
            t = _theory_quadratic(grid, np.full(grid.shape, int(fit["width"])))
        else:
            t = _theory_quadratic(np.full(grid.shape, int(fit["p"])), grid)
        ax.plot(
            grid,
            fit["theory_scale"] * t,
            color=THEORY_COLOUR,
            ls="--",
            lw=1.2,
            label=(
                f"theory llc_quadratic × {_fmt(fit['theory_scale'], 3)} "
                f"(R² {_fmt(fit['theory_r2'], 3)})"
            ),
        )
    if math.isfinite(fit["bound_scale"]):
        bound, _ = _bound_per_run(df)
        if bound is not None:
            b = pd.DataFrame({x: df[x].to_numpy(dtype=float), "b": bound})
            b = b.groupby(x, sort=True)["b"].mean().reset_index()
            ax.plot(
                b[x],
                fit["bound_scale"] * b["b"],
                color=BOUND_COLOUR,
                ls=":",
                marker="x",
                ms=4,
                lw=1.2,
                label=(
                    f"data-restricted bound × {_fmt(fit['bound_scale'], 3)} "
                    f"(R² {_fmt(fit['bound_r2'], 3)})"
                ),
            )


def plot_fig1_llc_vs_p(runs: pd.DataFrame, dpi: int = 150):
    """Figure 1 (SPEC section 7 item 1): final LLC against p at a fixed width K.

    Points: mean ± std over seeds of ``llc_final`` per p; red line: least-squares fit on the
    per-run points (slope, R^2 in the legend); dashed: the Q-level theory
    ``theory.llc_quadratic(p, K)`` times the least-squares scale factor; dotted crosses: the
    data-restricted bound scaled the same way. Only the shape of the theory is compared (absolute
    LLC values depend on the estimator, SPEC section 4). Numbers: :func:`fit_llc_vs_p`.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=dpi)
    df, info = _select_fixed(runs, "llc_final", fixed="width", vary="p")
    fit = _fit_llc_scaling(df, info, x="p", fixed="width")
    ax.set_xlabel("modulus p")
    ax.set_ylabel("final estimated LLC (dimensionless)")
    if df.empty:
        _no_data(ax, "no runs with a finite final LLC")
        _note_box(ax, fit["notes"])
        return fig
    ax.set_title(f"Final LLC vs p at width K = {_fmt(fit['width'])}", fontsize=9)
    agg = _aggregate(df, "p", "llc_final")
    _draw_means(ax, agg, "p", color=DATA_COLOUR, label="final LLC (mean ± std over seeds)", ls="")
    n_line = _n_text(ax, agg, "p")
    xs = agg["p"].to_numpy(dtype=float)
    if fit["fit_skipped"] is None:
        grid = np.linspace(xs.min(), xs.max(), 50)
        ax.plot(
            grid,
            fit["slope"] * grid + fit["intercept"],
            color=FIT_COLOUR,
            lw=1.2,
            label=(
                f"least squares: slope {_fmt(fit['slope'])}, "
                f"intercept {_fmt(fit['intercept'])}, R² {_fmt(fit['r2'], 3)}"
            ),
        )
    _draw_theory_curves(ax, df, fit, "p", _as_int_grid(xs.min(), xs.max()))
    ax.legend(fontsize=6.5, loc="lower right")
    _note_box(
        ax,
        [
            f"{fit['n_runs']} runs, {fit['n_p']} values of p",
            n_line,
            f"scaled theory slope {_fmt(fit['theory_slope_scaled'])} vs fitted {_fmt(fit['slope'])}"
            if math.isfinite(fit["theory_slope_scaled"])
            else None,
            *fit["notes"],
        ],
    )
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Figure 2


def fit_llc_vs_width(runs: pd.DataFrame) -> dict[str, Any]:
    """Numbers behind Figure 2 (SPEC section 7 item 2): final LLC against width K at one p.

    Selection: runs with finite ``llc_final``, ``width`` and ``p``, at the most common p.
    Returns ``p``, ``n_runs``, ``n_width``, ``n_dropped_nan``; the proportional fit through the
    origin on the per-run points, ``prop_c = sum(K y) / sum(K^2)`` with ``prop_r2`` (centred R^2,
    ``1 - SSE/SST`` of ``y = prop_c K``; can be negative); the free line ``slope``,
    ``intercept``, ``r2`` (:func:`gsm.fit_linear`); all NaN with fewer than 2 distinct widths
    (``fit_skipped`` says why); ``theory_scale`` / ``theory_r2`` / ``theory_slope`` /
    ``theory_slope_scaled`` for ``theory.llc_quadratic(p, K)`` and ``bound_*`` for
    ``theory.data_restricted_bound`` as in :func:`fit_llc_vs_p` (slopes now in K); ``notes``.
    """
    df, info = _select_fixed(runs, "llc_final", fixed="p", vary="width")
    return _fit_llc_width(df, info)


def _fit_llc_width(df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any]:
    out = _fit_llc_scaling(df, info, x="width", fixed="p")
    out["prop_c"], out["prop_r2"] = math.nan, math.nan
    if not df.empty and out["fit_skipped"] is None:
        out["prop_c"], out["prop_r2"] = _proportional(
            df["width"].to_numpy(dtype=float), df["llc_final"].to_numpy(dtype=float)
        )
    return out


def plot_fig2_llc_vs_width(runs: pd.DataFrame, dpi: int = 150):
    """Figure 2 (SPEC section 7 item 2): final LLC against width K at a fixed p.

    Points: mean ± std over seeds per width; solid red: the proportional fit ``y = c K``
    through the origin (c and its R^2 in the legend); thin grey: the free least-squares line
    (slope, intercept, R^2); dashed: ``theory.llc_quadratic(p, K)`` scaled by least squares
    (proportional to K below the over-parametrisation threshold); dotted crosses: the scaled
    data-restricted bound. Numbers: :func:`fit_llc_vs_width`.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=dpi)
    df, info = _select_fixed(runs, "llc_final", fixed="p", vary="width")
    fit = _fit_llc_width(df, info)
    ax.set_xlabel("hidden width K (units)")
    ax.set_ylabel("final estimated LLC (dimensionless)")
    if df.empty:
        _no_data(ax, "no runs with a finite final LLC")
        _note_box(ax, fit["notes"])
        return fig
    ax.set_title(f"Final LLC vs width at p = {_fmt(fit['p'])}", fontsize=9)
    agg = _aggregate(df, "width", "llc_final")
    _draw_means(
        ax, agg, "width", color=DATA_COLOUR, label="final LLC (mean ± std over seeds)", ls=""
    )
    n_line = _n_text(ax, agg, "width")
    xs = agg["width"].to_numpy(dtype=float)
    if fit["fit_skipped"] is None:
        grid = np.linspace(0.0, xs.max(), 50)
        ax.plot(
            grid,
            fit["prop_c"] * grid,
            color=FIT_COLOUR,
            lw=1.3,
            label=(
                f"proportional fit: c = {_fmt(fit['prop_c'])} per unit, "
                f"R² {_fmt(fit['prop_r2'], 3)}"
            ),
        )
        ax.plot(
            grid,
            fit["slope"] * grid + fit["intercept"],
            color="0.5",
            lw=0.9,
            label=(
                f"free line: slope {_fmt(fit['slope'])}, intercept {_fmt(fit['intercept'])}, "
                f"R² {_fmt(fit['r2'], 3)}"
            ),
        )
    _draw_theory_curves(ax, df, fit, "width", _as_int_grid(max(1.0, xs.min() / 2), xs.max()))
    ax.set_xlim(left=0.0)
    ax.legend(fontsize=6.5, loc="lower right")
    _note_box(ax, [f"{fit['n_runs']} runs, {fit['n_width']} widths", n_line, *fit["notes"]])
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Figure 4


def _exp_fit_or_skip(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    nan_fit = {"a": math.nan, "b": math.nan, "c": math.nan, "r2": math.nan, "n": int(x.size)}
    n_distinct = np.unique(x).size
    if n_distinct < _MIN_DISTINCT_EXP:
        return {
            **nan_fit,
            "skipped": f"fit skipped: {n_distinct} distinct lr value(s), need {_MIN_DISTINCT_EXP}",
        }
    try:
        fit = gsm.fit_exponential_decay(x, y)
    except ValueError as exc:
        return {**nan_fit, "skipped": f"fit skipped: {exc}"}
    return {**fit, "skipped": None}


def _lr_gsm_rows(runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    df, dropped = _finite_rows(runs, ["lr", "gsm", "weight_decay"])
    bad_lr = df["lr"] <= 0
    return df.loc[~bad_lr], dropped + int(bad_lr.sum())


def fit_lr_vs_gsm(runs: pd.DataFrame) -> dict[float, dict[str, Any]]:
    """Numbers behind Figure 4 (SPEC section 7 item 4): per weight decay, the exponential-decay
    fit ``GSM = a exp(-b lr) + c`` (:func:`gsm.fit_exponential_decay`) on the per-run points.

    Keys: the weight-decay values (floats, ascending). Each value holds the fit's dict (``a``,
    ``b``, ``c``, ``r2``, ``sse``, ``n``, ``method``, ``a_at_x_min``, ``b_at_search_limit``,
    ...) plus ``n_runs``, ``n_lr`` and ``skipped`` (None, or why the fit was skipped -- fewer
    than 3 distinct learning rates -- in which case ``a``, ``b``, ``c``, ``r2`` are NaN).
    Runs with NaN lr / gsm / weight decay, or lr <= 0, are left out.
    """
    df, _ = _lr_gsm_rows(runs)
    out: dict[float, dict[str, Any]] = {}
    for wd, sub in df.groupby("weight_decay", sort=True):
        x = sub["lr"].to_numpy(dtype=float)
        fit = _exp_fit_or_skip(x, sub["gsm"].to_numpy(dtype=float))
        fit["n_runs"] = len(sub)
        fit["n_lr"] = int(np.unique(x).size)
        out[float(wd)] = fit
    return out


def plot_fig4_lr_vs_gsm(runs: pd.DataFrame, dpi: int = 150):
    """Figure 4 (SPEC section 7 item 4, and appendix H.3 for other weight decays): GSM against
    learning rate, one panel per weight decay (shared y axis).

    Points: mean ± std over seeds of the GSM (SPEC section 6, dimensionless) per learning rate
    (log x axis); red curve: ``GSM = a exp(-b lr) + c`` fitted on the per-run points
    (:func:`fit_lr_vs_gsm`), its parameters and R^2 printed on the panel (``b`` flagged when the
    fit's rate search ended at its limit, i.e. the data show no resolved exponential curvature).
    """
    df, dropped = _lr_gsm_rows(runs)
    fits = fit_lr_vs_gsm(runs)
    wds = list(fits)
    n = max(1, len(wds))
    fig, axes = plt.subplots(1, n, figsize=(4.3 * n, 3.8), dpi=dpi, sharey=True, squeeze=False)
    axes = axes.ravel()
    if not wds:
        _no_data(axes[0], "no runs with finite lr, GSM and weight decay")
        _note_box(axes[0], [_dropped_note(dropped, "lr / GSM / weight decay (or lr <= 0)")])
        return fig
    varying = _varying_note(df, exclude=("lr", "weight_decay"))
    for ax, wd in zip(axes, wds, strict=True):
        sub = df[df["weight_decay"] == wd]
        fit = fits[wd]
        agg = _aggregate(sub, "lr", "gsm")
        _draw_means(ax, agg, "lr", color=DATA_COLOUR, label="GSM (mean ± std over seeds)", ls="")
        n_line = _n_text(ax, agg, "lr")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_title(f"weight decay {_fmt(wd)}", fontsize=9)
        if fit["skipped"] is None:
            lo, hi = float(agg["lr"].min()), float(agg["lr"].max())
            grid = np.geomspace(lo, hi, 200)
            curve = fit["a_at_x_min"] * np.exp(-fit["b"] * (grid - fit["x_min"])) + fit["c"]
            ax.plot(grid, curve, color=FIT_COLOUR, lw=1.2, label="a·exp(−b·lr) + c")
            fit_lines = [
                f"a = {_fmt(fit['a'])}, b = {_fmt(fit['b'])}, c = {_fmt(fit['c'])}",
                f"R² = {_fmt(fit['r2'], 3)}",
                "b at its search limit: no exponential curvature resolved"
                if fit.get("b_at_search_limit")
                else None,
            ]
        else:
            fit_lines = [fit["skipped"]]
        ax.legend(fontsize=6.5, loc="lower left")
        _note_box(
            ax,
            [
                "GSM = a·exp(−b·lr) + c (per-run fit)",
                *fit_lines,
                f"{fit['n_runs']} runs, {fit['n_lr']} learning rates",
                n_line,
            ],
            loc="upper right",
        )
    axes[0].set_ylabel("grokking severity GSM (dimensionless)")
    extra = [_dropped_note(dropped, "lr / GSM / weight decay (or lr <= 0)"), varying]
    if any(extra):
        _note_box(axes[0], extra, loc="lower right")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- H.3: lr vs max LLC


def plot_lr_vs_max_llc(runs: pd.DataFrame, dpi: int = 150):
    """Appendix H.3 (SPEC section 7 item 6): the maximum of the LLC curve (``llc_max``) against
    learning rate (log x axis), one line per weight decay, mean ± std over seeds."""
    fig, ax = plt.subplots(figsize=(6.2, 4.0), dpi=dpi)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("maximum estimated LLC over training (dimensionless)")
    df, dropped = _finite_positive_rows(runs, ["lr", "llc_max", "weight_decay"], positive="lr")
    notes = [_dropped_note(dropped, "lr / llc_max / weight decay (or lr <= 0)")]
    if df.empty:
        _no_data(ax, "no runs with finite lr, llc_max and weight decay")
        _note_box(ax, notes)
        return fig
    ax.set_xscale("log")
    wds = sorted(df["weight_decay"].unique())
    colours = sns.color_palette("viridis", len(wds))
    per_wd: list[str | None] = []
    for wd, col in zip(wds, colours, strict=True):
        agg = _aggregate(df[df["weight_decay"] == wd], "lr", "llc_max")
        _draw_means(ax, agg, "lr", color=col, label=f"weight decay {_fmt(wd)}")
        per_wd.append(_n_text(ax, agg, "lr", color=col))
    if len(set(per_wd)) == 1:
        notes.append(per_wd[0])
    else:
        notes += [f"wd {_fmt(wd)}: {line}" for wd, line in zip(wds, per_wd, strict=True)]
    notes.append(f"{len(df)} runs")
    notes.append(_varying_note(df, exclude=("lr", "weight_decay")))
    ax.set_title("Maximum of the LLC curve vs learning rate", fontsize=9)
    ax.legend(fontsize=6.5, loc="lower right")
    _note_box(ax, notes)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- GSM vs LLC


def fit_gsm_vs_llc(runs: pd.DataFrame) -> dict[str, Any]:
    """Linear fit ``GSM = slope * llc_final + intercept`` on the per-run points (SPEC section 6;
    the paper reports 0.1288 LLC - 2.098, R^2 = 0.955 for its own sampler).

    Returns ``slope``, ``intercept``, ``r2`` (NaN when skipped), ``n`` (runs used),
    ``n_dropped_nan`` and ``skipped`` (None, or why: fewer than 2 distinct LLC values).
    """
    df, dropped = _finite_rows(runs, ["gsm", "llc_final"])
    x = df["llc_final"].to_numpy(dtype=float)
    out: dict[str, Any] = {
        "slope": math.nan,
        "intercept": math.nan,
        "r2": math.nan,
        "n": int(x.size),
        "n_dropped_nan": dropped,
        "skipped": None,
    }
    n_distinct = np.unique(x).size
    if n_distinct < _MIN_DISTINCT_LINEAR:
        out["skipped"] = (
            f"fit skipped: {n_distinct} distinct LLC value(s), need {_MIN_DISTINCT_LINEAR}"
        )
        return out
    fit = gsm.fit_linear(x, df["gsm"].to_numpy(dtype=float))
    out.update({k: fit[k] for k in ("slope", "intercept", "r2")})
    return out


def plot_gsm_vs_llc(runs: pd.DataFrame, dpi: int = 150):
    """GSM against final LLC (SPEC section 6; the paper's GSM-LLC regression beside Figure 4).

    One point per run, coloured by learning rate (log colour scale); red line: least-squares fit
    (:func:`fit_gsm_vs_llc`), printed with its R^2. The paper's line GSM = 0.1288 LLC - 2.098 is
    quoted in the text box and not drawn: absolute LLC values depend on the sampler settings
    (SPEC section 4), so only the sign and quality of the relation are comparable.
    """
    fig, ax = plt.subplots(figsize=(6.2, 4.2), dpi=dpi)
    ax.set_xlabel("final estimated LLC (dimensionless)")
    ax.set_ylabel("grokking severity GSM (dimensionless)")
    fit = fit_gsm_vs_llc(runs)
    df, _ = _finite_rows(runs, ["gsm", "llc_final"])
    paper = (
        f"paper (its sampler; not drawn): GSM = {PAPER_GSM_LLC_SLOPE} LLC "
        f"{PAPER_GSM_LLC_INTERCEPT:+}, R² {PAPER_GSM_LLC_R2}"
    )
    notes = [_dropped_note(fit["n_dropped_nan"], "GSM / final LLC")]
    if df.empty:
        _no_data(ax, "no runs with finite GSM and final LLC")
        _note_box(ax, [*notes, paper])
        return fig
    lr = pd.to_numeric(df["lr"], errors="coerce").to_numpy(dtype=float) if "lr" in df else None
    x = df["llc_final"].to_numpy(dtype=float)
    y = df["gsm"].to_numpy(dtype=float)
    if lr is not None and np.all(np.isfinite(lr)) and np.all(lr > 0):
        lo, hi = float(lr.min()), float(lr.max())
        if lo == hi:
            lo, hi = lo / 1.5, hi * 1.5
        sc = ax.scatter(x, y, c=lr, cmap="viridis", norm=LogNorm(lo, hi), s=18, zorder=3)
        fig.colorbar(sc, ax=ax, label="learning rate (log colour scale)")
    elif lr is not None and np.any(np.isfinite(lr)):
        sc = ax.scatter(x, y, c=lr, cmap="viridis", norm=Normalize(), s=18, zorder=3)
        fig.colorbar(sc, ax=ax, label="learning rate (linear: some lr <= 0 or NaN)")
    else:
        ax.scatter(x, y, color=DATA_COLOUR, s=18, zorder=3)
    if fit["skipped"] is None:
        grid = np.linspace(x.min(), x.max(), 50)
        ax.plot(
            grid,
            fit["slope"] * grid + fit["intercept"],
            color=FIT_COLOUR,
            lw=1.2,
            label="least squares on the runs",
        )
        ax.legend(fontsize=6.5, loc="lower right")
        fit_line = (
            f"fit: GSM = {_fmt(fit['slope'])} LLC {float(fit['intercept']):+.4g}, "
            f"R² = {_fmt(fit['r2'], 3)}"
        )
    else:
        fit_line = fit["skipped"]
    _note_box(
        ax,
        [
            fit_line,
            f"each point: one run ({fit['n']} runs)",
            paper,
            *notes,
            _varying_note(df, exclude=("lr", "weight_decay", "batch_size", "p", "width")),
        ],
    )
    ax.set_title("Grokking severity vs final LLC", fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Figure 14


def plot_fig14_scaling_regimes(runs: pd.DataFrame, dpi: int = 150):
    """Figure 14 (SPEC section 7 item 9, paper H.3.2): final validation accuracy against the
    scaled data size ``n_train / (p ln p)``, one line per p.

    Lines join the seed means (± std) per training-set size, sorted by x; each run is also marked
    with its regime's shape (cross: no generalisation, circle: grokking, triangle: immediate
    generalisation). Dashed vertical line: Tian (2025)'s critical ratio 2.75; dotted: the paper's
    baseline 5.3.
    """
    fig, ax = plt.subplots(figsize=(8.2, 4.4), dpi=dpi, layout="constrained")
    ax.set_xlabel("scaled training-set size n_train / (p ln p)")
    ax.set_ylabel("final validation accuracy (fraction)")
    df, dropped = _finite_rows(runs, ["p", "n_train", "final_val_acc"])
    bad_p = df["p"] <= 1
    df = df.loc[~bad_p].copy()
    notes = [_dropped_note(dropped + int(bad_p.sum()), "p / n_train / final_val_acc")]
    ref_handles = [
        Line2D(
            [], [], color="0.3", ls="--", lw=1, label=f"Tian critical ratio {TIAN_CRITICAL_RATIO}"
        ),
        Line2D([], [], color="0.3", ls=":", lw=1, label=f"paper baseline {PAPER_BASELINE_RATIO}"),
    ]
    ax.axvline(TIAN_CRITICAL_RATIO, color="0.3", ls="--", lw=1)
    ax.axvline(PAPER_BASELINE_RATIO, color="0.3", ls=":", lw=1)
    if df.empty:
        _no_data(ax, "no runs with finite p, n_train and final validation accuracy")
        _note_box(ax, notes)
        ax.legend(handles=ref_handles, fontsize=6.5, loc="lower right")
        return fig
    p = df["p"].to_numpy(dtype=float)
    df["x"] = df["n_train"].to_numpy(dtype=float) / (p * np.log(p))
    regime = df["regime"].fillna("unknown").astype(str) if "regime" in df else None
    ps = sorted(df["p"].unique())
    colours = sns.color_palette("viridis", len(ps))
    p_handles = []
    counts_all: list[int] = []
    for pv, col in zip(ps, colours, strict=True):
        sub = df[df["p"] == pv]
        agg = _aggregate(sub, "x", "final_val_acc")
        counts_all.extend(agg["n"].tolist())
        _draw_means(ax, agg, "x", color=col, marker="", ls="-")
        p_handles.append(Line2D([], [], color=col, lw=1.5, label=f"p = {_fmt(pv)}"))
        if regime is not None:
            for reg, rsub in sub.groupby(regime.loc[sub.index]):
                ax.scatter(
                    rsub["x"],
                    rsub["final_val_acc"],
                    marker=REGIME_MARKERS.get(reg, "s"),
                    color=col,
                    s=22,
                    zorder=3,
                    linewidths=1.2,
                )
        else:
            ax.scatter(sub["x"], sub["final_val_acc"], color=col, s=16, zorder=3)
    regime_handles = []
    if regime is not None:
        for reg in [*REGIME_MARKERS, *sorted(set(regime) - set(REGIME_MARKERS))]:
            if reg in set(regime):
                regime_handles.append(
                    Line2D(
                        [],
                        [],
                        color="black",
                        marker=REGIME_MARKERS.get(reg, "s"),
                        ls="",
                        label=REGIME_LABELS.get(reg, reg),
                    )
                )
    else:
        notes.append("no regime column: runs not marked by regime")
    # One legend (moduli, then regimes, then reference lines) outside the axes: the constrained
    # layout makes room for an axes' own legend, not for extra legend artists.
    ax.legend(
        handles=p_handles + regime_handles + ref_handles,
        fontsize=6.5,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    counts = np.asarray(counts_all)
    if counts.size and np.all(counts == counts[0]):
        n_line = (
            "lines: one run per point"
            if counts[0] == 1
            else f"lines: mean ± std (ddof=1) over {counts[0]} runs (seeds) per point"
        )
    else:
        n_line = (
            f"lines: mean ± std over {counts.min()}-{counts.max()} runs (seeds) per point; "
            "markers: single runs"
        )
    _note_box(
        ax,
        [
            f"{len(df)} runs, {len(ps)} values of p",
            n_line,
            *notes,
            _varying_note(df, exclude=("p", "train_frac")),
        ],
    )
    ax.set_title("Final validation accuracy vs scaled data size", fontsize=9)
    return fig


# --------------------------------------------------------------------------- B.2: sampler


def plot_sampler_sensitivity(table: pd.DataFrame, dpi: int = 150):
    """Appendix B.2 (SPEC section 7 item 5): estimated LLC against the localisation strength
    gamma (log x axis; log y too when every estimate is positive), one line per SGLD step size.

    ``table`` has columns ``localization``, ``sampler_lr``, ``llc_mean`` and ``llc_std``, one row
    per sampler setting for the same trained model; error bars are ``llc_std`` (the spread over
    chains). Rows repeating a (localization, sampler_lr) pair are averaged (mean of ``llc_mean``,
    root-mean-square of ``llc_std``) and the plot says so.
    """
    fig, ax = plt.subplots(figsize=(6.2, 4.2), dpi=dpi)
    ax.set_xlabel("localisation strength γ (log scale)")
    ax.set_ylabel("estimated LLC (dimensionless)")
    df, dropped = _finite_positive_rows(
        table, ["localization", "sampler_lr", "llc_mean"], positive="localization"
    )
    notes = [_dropped_note(dropped, "localization / sampler_lr / llc_mean (or γ <= 0)")]
    if df.empty:
        _no_data(ax, "no finite sampler-sensitivity estimates")
        _note_box(ax, notes)
        return fig
    df["llc_std"] = pd.to_numeric(df.get("llc_std", np.nan), errors="coerce")
    df["var"] = df["llc_std"] ** 2
    g = df.groupby(["sampler_lr", "localization"], sort=True)
    agg = g.agg(llc_mean=("llc_mean", "mean"), var=("var", "mean"), n=("llc_mean", "size"))
    agg = agg.reset_index()
    agg["llc_std"] = np.sqrt(agg["var"])
    if (agg["n"] > 1).any():
        notes.append(f"{int((agg['n'] > 1).sum())} repeated settings averaged")
    ax.set_xscale("log")
    all_pos = bool((agg["llc_mean"] > 0).all())
    if all_pos:
        ax.set_yscale("log")
    else:
        notes.append("linear y axis: some estimates are <= 0")
    lrs = sorted(agg["sampler_lr"].unique())
    colours = sns.color_palette("viridis", len(lrs))
    for lr, col in zip(lrs, colours, strict=True):
        sub = agg[agg["sampler_lr"] == lr]
        std = sub["llc_std"].to_numpy(dtype=float)
        yerr = std if np.any(np.isfinite(std)) else None  # NaN: no bar at that point
        if yerr is not None and all_pos:
            mean = sub["llc_mean"].to_numpy(dtype=float)
            yerr = np.vstack([np.minimum(yerr, mean * 0.999), yerr])  # keep bars on a log axis
        ax.errorbar(
            sub["localization"],
            sub["llc_mean"],
            yerr=yerr,
            color=col,
            marker="o",
            ms=4,
            capsize=2.5,
            lw=1.2,
            label=f"SGLD step size {_fmt(lr)}",
        )
    ax.legend(fontsize=6.5, loc="best")
    _note_box(
        ax,
        [
            f"{len(df)} estimates; each point one sampler setting, bars: std over chains",
            *notes,
        ],
        loc="lower right" if all_pos else "upper left",
    )
    ax.set_title("LLC estimate vs localisation, per SGLD step size", fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- LLC diagnostics


def _infer_burnin(trace: np.ndarray, init_loss: float, nbeta: float, per_chain) -> int | None:
    """The burn-in length ``b`` for which ``nbeta * (mean(trace[c, b:]) - init_loss)`` reproduces
    the stored per-chain LLCs (traces are stored in float32, so to ~1e-3 relative); None if no
    ``b`` does."""
    try:
        target = np.asarray(per_chain, dtype=float)
    except (TypeError, ValueError):
        return None
    n_chains, T = trace.shape
    if target.shape != (n_chains,) or T < 2 or not math.isfinite(nbeta * init_loss):
        return None
    ok = np.isfinite(target) & np.all(np.isfinite(trace), axis=1)
    if not ok.any():
        return None
    tr = trace[ok]
    # suffix means: mean(trace[:, b:]) for b = 0..T-1
    suffix = np.cumsum(tr[:, ::-1], axis=1)[:, ::-1] / np.arange(T, 0, -1)[None, :]
    pred = nbeta * (suffix - init_loss)
    scale = np.maximum(np.abs(target[ok]), 1e-8)[:, None]
    err = np.max(np.abs(pred - target[ok][:, None]) / scale, axis=0)
    b = int(np.argmin(err))
    return b if err[b] < 1e-3 else None


def _trace_array(value) -> np.ndarray | None:
    if value is None:
        return None
    try:
        arr = np.asarray([np.asarray(row, dtype=float) for row in value], dtype=float)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 2 or arr.size == 0:
        return None
    return arr


def plot_llc_traces(
    llc: pd.DataFrame,
    steps: Sequence[int] | None = None,
    dpi: int = 150,
    *,
    num_burnin_steps: int | None = None,
):
    """LLC diagnostics (SPEC section 4, beside Figure 3): SGLD loss traces per chain.

    One subplot per checkpoint: ``steps`` (those present in the table), or by default up to 4
    evenly spaced checkpoints, always including the last. Each chain's minibatch loss is drawn
    against the SGLD step, burn-in included and shaded, with its LLC in the legend; diverged
    chains are dashed red; the loss at the checkpoint (``init_loss``, L(w*)) is a dotted line.
    The burn-in length is ``num_burnin_steps`` when given, else a ``num_burnin_steps`` column,
    else inferred from the stored per-chain LLCs (and left unshaded if that fails).
    """
    if llc is None or len(llc) == 0 or "step" not in llc:
        fig, ax = plt.subplots(figsize=(5, 3), dpi=dpi)
        _no_data(ax, "no LLC estimates")
        return fig
    table = llc.sort_values("step").drop_duplicates("step", keep="last")
    all_steps = table["step"].to_numpy()
    missing: list[Any] = []
    if steps is None:
        idx = np.unique(np.linspace(0, len(all_steps) - 1, min(4, len(all_steps))).round())
        chosen = [all_steps[int(i)] for i in idx]
    else:
        present = set(all_steps.tolist())
        chosen = [s for s in steps if s in present]
        missing = [s for s in steps if s not in present]
    if not chosen:
        fig, ax = plt.subplots(figsize=(5, 3), dpi=dpi)
        _no_data(ax, f"none of the requested steps {list(steps or [])} has an LLC estimate")
        return fig
    ncols = min(2, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(7.6 * ncols, 3.4 * nrows),
        dpi=dpi,
        squeeze=False,
        layout="constrained",
    )
    flat = axes.ravel()
    for ax in flat[len(chosen) :]:
        fig.delaxes(ax)
    for ax, step in zip(flat, chosen, strict=False):
        row = table[table["step"] == step].iloc[0]
        _draw_trace_panel(ax, row, num_burnin_steps)
    if missing:
        _note_box(flat[0], [f"no estimate at step(s) {missing}"], loc="lower left")
    return fig


def _draw_trace_panel(ax, row: pd.Series, num_burnin_steps: int | None) -> None:
    step = row["step"]
    ax.set_title(
        f"checkpoint step {_fmt(step, 8)}: LLC {_fmt(row.get('llc_mean'))} "
        f"± {_fmt(row.get('llc_std'), 3)}",
        fontsize=8,
    )
    ax.set_xlabel("SGLD step")
    ax.set_ylabel("minibatch loss")
    trace = _trace_array(row.get("loss_trace"))
    if trace is None:
        _no_data(ax, "no loss trace stored")
        return
    n_chains, T = trace.shape
    trace = np.where(np.isfinite(trace), trace, np.nan)
    per_chain = row.get("llc_per_chain")
    per_chain = (
        np.asarray(per_chain, dtype=float)
        if per_chain is not None and len(per_chain) == n_chains
        else np.full(n_chains, np.nan)
    )
    diverged = row.get("diverged")
    diverged = (
        np.asarray(diverged, dtype=bool)
        if diverged is not None and len(diverged) == n_chains
        else np.zeros(n_chains, dtype=bool)
    )
    init_loss = float(row.get("init_loss", np.nan))
    nbeta = float(row.get("nbeta", np.nan))
    notes = []
    burn = num_burnin_steps
    if burn is None and "num_burnin_steps" in row and pd.notna(row["num_burnin_steps"]):
        burn = int(row["num_burnin_steps"])
    if burn is None:
        burn = _infer_burnin(trace[~diverged], init_loss, nbeta, per_chain[~diverged])
        notes.append(
            "burn-in inferred from the per-chain LLCs"
            if burn is not None
            else "burn-in length unknown: not shaded"
        )
    x = np.arange(T)
    if burn:
        ax.axvspan(0, burn, color="0.85", alpha=0.6, lw=0, label=f"burn-in ({burn} steps)")
    colours = sns.color_palette("tab10", n_chains)
    for c in range(n_chains):
        if diverged[c]:
            ax.plot(
                x,
                trace[c],
                color="red",
                ls="--",
                lw=0.9,
                label=f"chain {c}: LLC {_fmt(per_chain[c], 3)} (diverged)",
            )
        else:
            ax.plot(
                x,
                trace[c],
                color=colours[c],
                lw=0.8,
                label=f"chain {c}: LLC {_fmt(per_chain[c], 3)}",
            )
    if math.isfinite(init_loss):
        ax.axhline(init_loss, color="black", ls=":", lw=1.1, label="L(w*) at the checkpoint")
    good = trace[~diverged]
    if diverged.any() and good.size and np.any(np.isfinite(good)):
        lo = float(np.nanmin(good))
        hi = float(np.nanmax(good))
        if math.isfinite(init_loss):
            lo, hi = min(lo, init_loss), max(hi, init_loss)
        pad = 0.1 * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1e-12)
        ax.set_ylim(lo - pad, hi + pad)
        notes.append(f"{int(diverged.sum())} diverged chain(s); y range set by the others")
    reason = row.get("reason")
    if isinstance(reason, str) and reason:
        notes.append(f"reason: {reason}")
    for extra in ("r_hat", "ess"):
        val = row.get(extra)
        if val is not None and np.ndim(val) == 0 and pd.notna(val):
            notes.append(f"{extra} = {_fmt(val, 3)}")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _note_box(ax, [f"{n_chains} chains, {T} SGLD steps", *notes], loc="outside right", fontsize=6)


def plot_bias_reduced(table: pd.DataFrame, dpi: int = 150):
    """Bias-reduced LLC (SPEC section 4, appendix B.1): the estimates at the final checkpoint
    against ``1 / nbeta`` with the least-squares line; its intercept (``1/beta -> 0``) is the
    bias-reduced LLC. ``table``: the temperature sweep (columns nbeta, llc_mean, llc_std)."""
    from grokking_llc.llc import bias_reduced_llc

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=dpi)
    df, dropped = _finite_rows(table, ["nbeta", "llc_mean"])
    if df.empty:
        _no_data(ax, "no finite estimates in the temperature sweep")
        return fig
    x = 1.0 / df["nbeta"].to_numpy()
    ax.errorbar(x, df["llc_mean"], yerr=df["llc_std"].fillna(0.0), fmt="o", color=LLC_COLOUR,
                capsize=3, label="estimate (mean +- sd of chains)")  # fmt: skip
    lines = [_dropped_note(dropped, "non-finite estimates")]
    try:
        fit = bias_reduced_llc(df["nbeta"], df["llc_mean"])
    except ValueError as err:
        lines.append(f"no fit: {err}")
    else:
        grid = np.linspace(0.0, x.max() * 1.05, 50)
        ax.plot(grid, fit["intercept"] + fit["slope"] * grid, color="0.3", lw=1,
                label="least squares in 1/nbeta")  # fmt: skip
        ax.plot([0.0], [fit["intercept"]], marker="*", ms=12, color="tab:red", ls="none",
                label=f"bias-reduced LLC = {_fmt(fit['intercept'])}")  # fmt: skip
        lines.append(
            f"slope {_fmt(fit['slope'])}, R^2 {_fmt(fit['r2'], 3)}, {fit['n']} temperatures"
        )
    ax.set_xlabel("1 / nbeta  (inverse of n * beta)")
    ax.set_ylabel("estimated LLC")
    ax.set_title("Bias-reduced LLC from a temperature sweep (final checkpoint)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    _note_box(ax, lines)
    fig.tight_layout()
    return fig
