"""SGLD diagnostics beside Figure 3 (SPEC section 4): per-chain minibatch loss traces at a few
checkpoints, burn-in shaded, the loss at the checkpoint dotted, each panel titled with its
estimate and whether it passed the validity checks (issue 10)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from grokking_llc.figures._common import fmt, no_data, no_data_figure, palette, panel_grid, wrap
from grokking_llc.figures.registry import register

MAX_PANELS = 4


def _trace_array(value) -> np.ndarray | None:
    if value is None:
        return None
    try:
        arr = np.asarray([np.asarray(row, dtype=float) for row in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.ndim == 2 and arr.size else None


def _chosen_steps(table: pd.DataFrame, steps) -> tuple[list, list]:
    all_steps = table["step"].to_numpy()
    if steps is None:
        idx = np.unique(np.linspace(0, len(all_steps) - 1, min(MAX_PANELS, len(all_steps))).round())
        return [all_steps[int(i)] for i in idx], []
    present = set(all_steps.tolist())
    return [s for s in steps if s in present], [s for s in steps if s not in present]


def _burn_in(row: pd.Series) -> int | None:
    for col in ("burn_in", "num_burnin_steps"):
        val = row.get(col)
        if val is not None and np.ndim(val) == 0 and pd.notna(val):
            return int(val)
    return None


def _validity(row: pd.Series) -> str:
    if "valid" not in row or pd.isna(row["valid"]):
        return "not validated"
    if bool(row["valid"]):
        return "valid"
    reason = row.get("invalid_reason")
    return f"NOT valid ({reason})" if isinstance(reason, str) and reason else "NOT valid"


def _panel(ax, row: pd.Series) -> None:
    ax.set_title(
        wrap(
            f"checkpoint step {fmt(row['step'], 8)}: LLC {fmt(row.get('llc_mean'))} "
            f"± {fmt(row.get('llc_std'), 3)}, {_validity(row)}",
            70,
        ),
        fontsize=8,
    )
    ax.set_xlabel("SGLD step")
    ax.set_ylabel("minibatch loss")
    trace = _trace_array(row.get("loss_trace"))
    if trace is None:
        no_data(ax, "no loss trace stored")
        return
    n_chains, T = trace.shape
    trace = np.where(np.isfinite(trace), trace, np.nan)
    diverged = row.get("diverged")
    diverged = (
        np.asarray(diverged, dtype=bool)
        if diverged is not None and len(diverged) == n_chains
        else np.zeros(n_chains, dtype=bool)
    )
    per_chain = row.get("llc_per_chain")
    per_chain = (
        np.asarray(per_chain, dtype=float)
        if per_chain is not None and len(per_chain) == n_chains
        else np.full(n_chains, np.nan)
    )
    burn = _burn_in(row)
    if burn:
        ax.axvspan(0, burn, color="0.85", alpha=0.6, lw=0, label=f"burn-in ({burn} steps)")
    x = np.arange(T)
    for c, col in zip(range(n_chains), palette(n_chains, "tab10"), strict=True):
        if diverged[c]:
            ax.plot(
                x,
                trace[c],
                color="red",
                ls="--",
                lw=0.9,
                label=f"chain {c}: LLC {fmt(per_chain[c], 3)} (diverged)",
            )
        else:
            ax.plot(x, trace[c], color=col, lw=0.8, label=f"chain {c}: LLC {fmt(per_chain[c], 3)}")
    init_loss = float(row.get("init_loss", np.nan))
    if math.isfinite(init_loss):
        ax.axhline(init_loss, color="black", ls=":", lw=1.1, label="L(w*) at the checkpoint")
    good = trace[~diverged]
    if diverged.any() and good.size and np.any(np.isfinite(good)):
        lo, hi = float(np.nanmin(good)), float(np.nanmax(good))
        if math.isfinite(init_loss):
            lo, hi = min(lo, init_loss), max(hi, init_loss)
        pad = 0.1 * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1e-12)
        ax.set_ylim(lo - pad, hi + pad)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _diagnostics(row: pd.Series) -> str:
    parts = []
    for col in ("r_hat", "ess", "mala_acceptance", "stationary", "localisation_dominated"):
        val: Any = row.get(col)
        if val is not None and np.ndim(val) == 0 and pd.notna(val):
            parts.append(f"{col} {fmt(val, 3)}")
    n_div = int(np.sum(row.get("diverged"))) if row.get("diverged") is not None else 0
    if n_div:
        parts.append(f"{n_div} diverged chain(s), y range set by the others")
    if _burn_in(row) is None:
        parts.append("burn-in length unknown: not shaded")
    return f"step {fmt(row['step'], 8)}: " + (", ".join(parts) or "no diagnostics stored")


@register("traces", stem="fig_llc_traces", reads="traces", per_sampler=True)
def draw_traces(llc: pd.DataFrame | None, params: dict):
    """SGLD diagnostics: minibatch loss traces of every chain at a few checkpoints (burn-in
    shaded), the loss at the checkpoint, per-chain LLC, and whether each estimate passed the
    validity checks."""
    steps = (params.get("options") or {}).get("steps")
    if llc is None or len(llc) == 0 or "step" not in llc:
        return no_data_figure(params, "no LLC estimates")
    table = llc.sort_values("step").drop_duplicates("step", keep="last")
    chosen, missing = _chosen_steps(table, steps)
    if not chosen:
        return no_data_figure(
            params, f"none of the requested steps {list(steps or [])} has an estimate"
        )
    rows = [table[table["step"] == s].iloc[0] for s in chosen]
    sampler = params.get("sampler")
    notes = [
        f"sampler {sampler}" if sampler else None,
        *[_diagnostics(r) for r in rows],
        f"no estimate at step(s) {missing}" if missing else None,
    ]
    fig, panels = panel_grid(len(rows), 2, notes, params, size=(7.0, 3.1))
    for ax, row in zip(panels, rows, strict=True):
        _panel(ax, row)
    return fig
