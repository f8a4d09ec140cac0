"""Figures 1 and 2 (SPEC section 7 items 1-2): final LLC against p at fixed width, and against
width at fixed p, with the closed form's shape (SPEC section 5) scaled to the data.

Numbers: :func:`grokking_llc.science.scaling.fit_llc_vs_p` and
:func:`~grokking_llc.science.scaling.fit_llc_vs_width`.
Only valid final estimates enter the means and the fits; invalid ones are drawn hollow (not a
minimum: a grey x). Under the paper's protocol (``params["protocol"] == "paper"``) every
estimate is drawn filled and fitted, as the paper does, and the notes count the invalid ones.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from grokking_llc.figures._common import (
    BOUND_COLOUR,
    DATA_COLOUR,
    FIT_COLOUR,
    THEORY_COLOUR,
    Panel,
    draw_means,
    draw_runs,
    fmt,
    n_text,
    no_data,
    single_panel,
    use_of,
)
from grokking_llc.figures.registry import register
from grokking_llc.science.scaling import fit_llc_vs_p, fit_llc_vs_width, theory_curve
from grokking_llc.science.tables import USE_VALID


def _int_grid(lo: float, hi: float, num: int = 200) -> np.ndarray:
    return np.unique(np.linspace(math.floor(lo), math.ceil(hi), num).round().astype(int))


def _draw_theory(ax, fit: dict, grid: np.ndarray) -> None:
    if math.isfinite(fit["theory_scale"]):
        ax.plot(
            grid,
            theory_curve(fit, grid),
            color=THEORY_COLOUR,
            ls="--",
            lw=1.2,
            gid="theory",
            label=f"closed form (Thm 4.1/4.2) × {fmt(fit['theory_scale'], 3)}, "
            f"R² {fmt(fit['theory_r2'], 3)}",
        )
    if math.isfinite(fit["bound_scale"]) and "bound_points" in fit:
        b = fit["bound_points"]
        ax.plot(
            b[fit["x"]],
            fit["bound_scale"] * b["bound"],
            color=BOUND_COLOUR,
            ls=":",
            marker="x",
            ms=4,
            lw=1.2,
            gid="bound",
            label=f"data-restricted count × {fmt(fit['bound_scale'], 3)}, "
            f"R² {fmt(fit['bound_r2'], 3)}",
        )


class _Axis(NamedTuple):
    """What Figures 1 and 2 write about their x variable."""

    label: str  # the x axis label
    plural: str  # its values, as the notes count them
    held: str  # the variable held fixed, as the title names it
    held_key: str  # its value's key in the fit


_AXES = {
    "p": _Axis("modulus p", "values of p", "width K", "width"),
    "width": _Axis("hidden width K (units)", "widths", "p", "p"),
}


def _draw(fit: dict, params: dict) -> Figure:
    """Final LLC against the fit's x (p or width): every run, the seed means, the least-squares
    line (for width also the line through the origin) and the scaled theory curves."""
    x = fit["x"]
    axis = _AXES[x]
    title = f"Final LLC vs {x} at {axis.held} = {fmt(fit[axis.held_key])}"
    panel = Panel((6.6, 4.0), axis.label, "final estimated LLC (dimensionless)", title)
    fig, ax = single_panel(panel, _notes(fit), params)
    pts = fit["points"]
    if pts.empty:
        no_data(ax, fit["fit_skipped"] or "no runs")
        return fig
    draw_runs(
        ax,
        pts[x],
        pts["llc"],
        pts["llc_used"],
        status=pts["llc_status"],
        color=DATA_COLOUR,
        label_invalid="invalid estimate (not used)",
    )
    what = "valid final LLC" if fit["use"] == USE_VALID else "final LLC, every estimate"
    draw_means(
        ax, fit["means"], x, color=DATA_COLOUR, ls="", label=f"{what}: mean ± std over seeds"
    )
    xs = pts[x].to_numpy(dtype=float)
    lo = 0.0 if x == "width" else xs.min()
    if fit["fit_skipped"] is None:
        grid = np.linspace(lo, xs.max(), 50)
        if x == "width":
            ax.plot(
                grid,
                fit["prop_c"] * grid,
                color=FIT_COLOUR,
                lw=1.3,
                gid="fit",
                label=f"through the origin: c = {fmt(fit['prop_c'])} per unit, "
                f"R² {fmt(fit['prop_r2'], 3)}",
            )
        ax.plot(
            grid,
            fit["slope"] * grid + fit["intercept"],
            color=FIT_COLOUR if x == "p" else "0.5",
            lw=1.2 if x == "p" else 0.9,
            gid="fit" if x == "p" else "fit_free",
            label=f"least squares: slope {fmt(fit['slope'])}, intercept "
            f"{fmt(fit['intercept'])}, R² {fmt(fit['r2'], 3)}",
        )
        _draw_theory(ax, fit, _int_grid(max(1.0, lo if x == "p" else xs.min() / 2), xs.max()))
    if x == "width":
        ax.set_xlim(left=0.0)
    ax.legend(fontsize=6.5, loc="upper left")
    return fig


def _notes(fit: dict) -> list:
    x = fit["x"]
    used = "a valid" if fit["use"] == USE_VALID else "an"
    return [
        f"{fit['n_runs']} runs, {fit['n_valid']} with a valid final LLC, "
        f"{fit[f'n_{x}']} {_AXES[x].plural} with {used} estimate used",
        n_text(fit["means"], "valid runs (seeds)" if used == "a valid" else "runs (seeds)"),
        f"scaled closed-form slope {fmt(fit['theory_slope_scaled'])} vs fitted {fmt(fit['slope'])}"
        if x == "p" and math.isfinite(fit["theory_slope_scaled"])
        else None,
        *fit["notes"],
        "theory curves scaled to the data by least squares: only their shape is compared "
        "(absolute LLC values depend on the sampler, SPEC section 4)",
    ]


@register("fig1", stem="fig1_llc_vs_p", reads="runs", per_sampler=True)
def draw_fig1(runs: pd.DataFrame, params: dict):
    """Figure 1: final estimated LLC against the modulus p at fixed width (valid estimates: mean
    and standard deviation over seeds; invalid ones hollow, left out; under the paper's protocol
    every estimate, as the paper draws them), a least-squares line, and the closed form (Thm
    4.1/4.2) and the data-restricted count scaled to the data."""
    return _draw(fit_llc_vs_p(runs, use=use_of(params)), params)


@register("fig2", stem="fig2_llc_vs_width", reads="runs", per_sampler=True)
def draw_fig2(runs: pd.DataFrame, params: dict):
    """Figure 2: final estimated LLC against the hidden width K at fixed p (valid estimates
    only, invalid hollow; under the paper's protocol every estimate): a line through the origin
    (proportionality) and a free line, with the closed form's shape scaled to the data."""
    return _draw(fit_llc_vs_width(runs, use=use_of(params)), params)
