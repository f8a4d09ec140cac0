"""Figures (SPEC section 7). Each function takes tables and returns a matplotlib Figure;
saving (atomically) is the caller's job, so plots are testable without files."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

LOSS_COLOURS = {"train": "tab:blue", "val": "tab:orange"}
LLC_COLOUR = "tab:green"


def set_style(style: str = "whitegrid") -> None:
    sns.set_theme(style=style, context="paper")


def draw_loss_llc(ax, train_log: pd.DataFrame, llc: pd.DataFrame, *, legend: bool = True):
    """Train and validation loss (log scale) and the LLC with its chain spread on a twin axis.

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
    ax.set_ylabel("loss (centred MSE)" if "train_loss" in train_log else "loss")
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


def plot_fig3(train_log: pd.DataFrame, llc: pd.DataFrame, title: str, dpi: int = 150):
    """Figure 3: losses and LLC against the training step for one run (SPEC section 7).

    Dotted vertical lines mark memorisation (train acc >= 0.99) and generalisation
    (validation acc >= 0.99).
    """
    fig, ax = plt.subplots(figsize=(7, 4), dpi=dpi)
    draw_loss_llc(ax, train_log, llc)
    t_mem, t_gen = grok_steps(train_log)
    for t, lab in ((t_mem, "train acc 0.99"), (t_gen, "val acc 0.99")):
        if np.isfinite(t):
            ax.axvline(t, color="grey", ls=":", lw=1)
            ax.text(
                t, ax.get_ylim()[0], f" {lab}", rotation=90, va="bottom", fontsize=6, color="grey"
            )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
