"""Drawing one run's curves: losses against the training step and an LLC track (Figure 3's
panel, reused by Figures 3 and 13 and the H.2 panels).

An LLC track is drawn as a thin line through every estimate (gid ``llc_line:<sampler>``, its
y data the per-checkpoint ``llc_mean``), filled markers at valid estimates
(``llc_valid:<sampler>``), hollow markers at invalid ones (``llc_invalid:<sampler>``), grey
crosses at checkpoints that are not a minimum (``llc_not_a_minimum:<sampler>``) and a band of
+- the chains' standard deviation around valid estimates (``llc_band:<sampler>``). A sampler
that runs the paper's protocol is drawn as the paper draws it: every estimate filled, with its
band (``llc_valid:<sampler>`` then holds them all). A track
chosen adaptively (``selection`` column "coarse"/"refined") also gets a rug of its sampled
checkpoints at the bottom of the axes (``llc_sampled_coarse:<sampler>``,
``llc_sampled_refined:<sampler>``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from grokking_llc.figures._common import LOSS_COLOURS, draw_points
from grokking_llc.science.tables import (
    STATUS_NOT_A_MINIMUM,
    USE_ALL,
    USE_VALID,
    estimate_status,
    llc_validity,
)
from grokking_llc.science.trajectory import track_statistics


def draw_losses(ax, train_log: pd.DataFrame, *, loss_label: str | None = None) -> None:
    """Train and validation loss against the training step, log y axis."""
    for split, label in (("train", "train loss"), ("val", "validation loss")):
        ax.plot(
            train_log["step"],
            train_log[f"{split}_loss"],
            color=LOSS_COLOURS[split],
            label=label,
            gid=f"{split}_loss",
        )
    ax.set_yscale("log")
    if loss_label is None:
        loss_label = "loss (centred MSE)"
    ax.set_ylabel(loss_label)


def mark_accuracy_steps(ax, stats: dict, *, label: bool = True) -> None:
    """Dotted vertical lines where train / validation accuracy first reach 0.99."""
    for t, lab in ((stats["t_mem"], "train acc 0.99"), (stats["t_gen"], "val acc 0.99")):
        if math.isfinite(t):
            ax.axvline(t, color="grey", ls=":", lw=1, gid=f"mark:{lab}")
            if label:
                ax.text(
                    t,
                    0.02,
                    f" {lab}",
                    rotation=90,
                    va="bottom",
                    ha="right",
                    fontsize=6,
                    color="grey",
                    transform=ax.get_xaxis_transform(),
                )


def draw_llc(
    ax, llc: pd.DataFrame, *, color, name: str, ms: float = 3.0, use: str = USE_VALID
) -> dict[str, int]:
    """The LLC track of one sampler (``use="all"``: the paper's protocol, every estimate filled);
    returns ``{"n": estimates, "n_valid": valid ones}``."""
    df = llc.sort_values("step")
    valid, _ = llc_validity(df)
    n_valid = int(valid.sum())
    status = estimate_status(df)
    nam = (status == STATUS_NOT_A_MINIMUM) & ~valid
    if use == USE_ALL:
        valid, nam = np.ones(len(df), dtype=bool), np.zeros(len(df), dtype=bool)
    step = df["step"].to_numpy(dtype=float)
    mean = pd.to_numeric(df["llc_mean"], errors="coerce").to_numpy(dtype=float)
    std = pd.to_numeric(df.get("llc_std", np.nan), errors="coerce")
    std = np.nan_to_num(np.asarray(std, dtype=float) * np.ones_like(mean), nan=0.0)
    ax.plot(step, mean, color=color, lw=0.9, alpha=0.6, gid=f"llc_line:{name}")
    if valid.any():
        ax.fill_between(
            step[valid],
            (mean - std)[valid],
            (mean + std)[valid],
            color=color,
            alpha=0.18,
            lw=0,
            gid=f"llc_band:{name}",
        )
    lab, every = f"LLC, {name}", "valid" if use == USE_VALID else "every estimate"
    kinds = {
        "valid": (valid, ms, {"label": f"{lab}: {every}"}),
        "not_a_minimum": (
            nam,
            ms + 0.8,
            {"mew": 0.9, "label": f"{lab}: not a minimum (undefined)"},
        ),
        "invalid": (~valid & ~nam, ms + 0.8, {"mew": 0.9, "label": f"{lab}: not valid (hollow)"}),
    }
    draw_points(ax, step, mean, kinds, color=color, gid="llc_{kind}:" + name)
    if "selection" in df and df["selection"].isin(["coarse", "refined"]).any():
        # adaptive selection (grokking_llc.sampling.refine): a rug of the sampled checkpoints,
        # refined
        # ones taller, so uneven spacing reads as a choice, not missing data
        refined = (df["selection"] == "refined").to_numpy()
        for part, height, kind in ((~refined, 0.03, "coarse"), (refined, 0.06, "refined")):
            if part.any():
                ax.vlines(
                    step[part], 0.0, height, transform=ax.get_xaxis_transform(), color=color,
                    lw=0.8, gid=f"llc_sampled_{kind}:{name}",
                    label=f"checkpoints sampled ({kind}), {name}",
                )  # fmt: skip
    return {"n": int(len(df)), "n_valid": n_valid}


def run_statistics(train_log: pd.DataFrame, llc: pd.DataFrame | None = None) -> dict:
    """:func:`grokking_llc.science.trajectory.track_statistics` (memorisation / generalisation
    steps)."""
    empty = pd.DataFrame({"step": [], "llc_mean": []})
    return track_statistics(train_log, llc if llc is not None else empty)
