"""Small hand-made tables shaped like the pipeline's (runs, training summary, logs, LLC tracks,
sampler grids, calibration), shared by the figure, analysis and claims tests."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

PRIMES = [5, 7, 11, 13]


def run_row(**kw) -> dict:
    """One row of runs.parquet (long format: one per run and named sampler)."""
    base = {
        "run_id": "r",
        "studies": ["s"],
        "sampler": "paper",
        "p": 11,
        "train_frac": 0.4,
        "data_seed": 0,
        "seed": 0,
        "model": "quadratic",
        "width": 16,
        "loss": "centred_mse",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "batch_size": 32,
        "max_steps": 1000,
        "n_train": 48,
        "final_step": 1000,
        "final_train_acc": 1.0,
        "final_val_acc": 1.0,
        "gsm": 0.2,
        "delay": 300.0,
        "regime": "grokking",
        "final_llc": 10.0,
        "final_llc_std": 1.0,
        "final_llc_valid": True,
        "max_llc": 20.0,
        "max_llc_step": 400.0,
        "max_llc_valid": True,
        "n_llc": 10,
        "n_llc_valid": 10,
    }
    base.update(kw)
    base["run_id"] = "-".join(f"{k}{v}" for k, v in kw.items() if k != "sampler") or "r"
    return base


def runs_vs_p(fn=lambda p, s: 3.0 * p + 2.0, seeds=(0, 1, 2), width=16, invalid=(), **kw):
    """Runs over PRIMES x seeds; ``invalid`` lists (p, seed) pairs whose final LLC is invalid."""
    return pd.DataFrame(
        [
            run_row(p=p, seed=s, width=width, final_llc=fn(p, s), n_train=round(0.4 * p * p),
                    final_llc_valid=(p, s) not in invalid, **kw)
            for p in PRIMES
            for s in seeds
        ]
    )  # fmt: skip


def runs_vs_width(fn, seeds=(0, 1, 2), p=11, widths=(4, 8, 16, 32), invalid=()):
    return pd.DataFrame(
        [
            run_row(p=p, width=k, seed=s, final_llc=fn(k, s), final_llc_valid=(k, s) not in invalid)
            for k in widths
            for s in seeds
        ]
    )


def gsm_runs(fn, lrs=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2), wds=(1e-4, 1e-3), seeds=(0, 1, 2), never=()):
    """Training-summary rows; ``never`` lists (lr, wd, seed) runs that never generalise (final
    validation accuracy 0.1, GSM 0 as the GSM's indicator gives)."""
    rows = []
    for wd in wds:
        for lr in lrs:
            for s in seeds:
                bad = (lr, wd, s) in never
                rows.append(
                    run_row(lr=lr, weight_decay=wd, seed=s, gsm=0.0 if bad else fn(lr, wd, s),
                            final_val_acc=0.1 if bad else 1.0,
                            regime="no_generalisation" if bad else "grokking")
                )  # fmt: skip
    return pd.DataFrame(rows)


def train_log(n=60, t_mem=6, t_gen=40, every=100) -> pd.DataFrame:
    """A grokking run: train accuracy reaches 1 at checkpoint ``t_mem``, validation accuracy at
    ``t_gen``; validation loss flat until ``t_mem`` and falling until ``t_gen``."""
    i = np.arange(n)
    val_loss = np.where(i < t_mem, 1.0, np.where(i > t_gen, 0.05, 1.0 - 0.95 * (i - t_mem) /
                                                  (t_gen - t_mem)))  # fmt: skip
    return pd.DataFrame(
        {
            "step": (i + 1) * every,
            "train_loss": np.geomspace(1.0, 1e-3, n),
            "val_loss": val_loss,
            "train_acc": np.minimum(1.0, (i + 1) / t_mem),
            "val_acc": np.where(i >= t_gen - 1, 1.0, 0.05 + 0.5 * i / n),
        }
    )


def llc_track(steps, values, valid=None, std=None, sampler="paper") -> pd.DataFrame:
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=float)
    valid = np.ones(steps.size, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    std = 0.1 * np.abs(values) if std is None else np.asarray(std, dtype=float)
    return pd.DataFrame(
        {
            "step": steps,
            "sampler": sampler,
            "llc_mean": values,
            "llc_std": std,
            "valid": valid,
            "stationary": valid,
            "localisation_dominated": False,
            "r_hat": np.where(valid, 1.02, 1.9),
            "ess": np.where(valid, 400.0, 9.0),
            "invalid_reason": np.where(valid, "", "not stationary"),
        }
    )


def grokking_track(log: pd.DataFrame, every: int = 2, invalid_every: int = 0, sampler="paper"):
    """An LLC track that rises to memorisation and falls with the validation loss."""
    steps = log["step"].to_numpy()[::every]
    vl = log.set_index("step").loc[steps, "val_loss"].to_numpy()
    values = 50.0 + 400.0 * vl + 3.0 * np.sin(steps / 300.0)
    valid = np.ones(steps.size, dtype=bool)
    if invalid_every:
        valid[::invalid_every] = False
    return llc_track(steps, values, valid, sampler=sampler)


def trace_rows(steps=(200, 600, 1000, 1400), chains=4, T=40, burn=10, diverge_last=True):
    rng = np.random.default_rng(0)
    rows = []
    nbeta, init = 5.0, 0.1
    for k, st in enumerate(steps):
        trace = init + 0.05 + 0.01 * rng.standard_normal((chains, T))
        diverged = np.zeros(chains, dtype=bool)
        if diverge_last and k == len(steps) - 1:
            trace[-1] = np.linspace(0.1, 1e3, T)
            diverged[-1] = True
        per_chain = nbeta * (trace[:, burn:].mean(axis=1) - init)
        good = per_chain[~diverged]
        rows.append(
            {
                "step": st,
                "llc_mean": float(good.mean()),
                "llc_std": float(good.std()),
                "llc_per_chain": per_chain.tolist(),
                "diverged": diverged.tolist(),
                "init_loss": init,
                "nbeta": nbeta,
                "burn_in": burn,
                "valid": k % 2 == 0,
                "invalid_reason": "" if k % 2 == 0 else "r_hat 1.6",
                "r_hat": 1.01 if k % 2 == 0 else 1.6,
                "ess": 300.0,
                "loss_trace": [row.tolist() for row in trace],
            }
        )
    return pd.DataFrame(rows)


def calibration_table():
    """Two checkpoints x nbeta {26, 160} x gamma {100, 1000} x eps {1e-5 .. 1e-3}."""
    rows = []
    for step in (1000, 9000):
        for nb in (26.4, 160.0):
            for g in (100.0, 1000.0):
                for eps in (1e-5, 3e-5, 1e-4, 3e-4, 1e-3):
                    est = nb * 0.06 * (1.0 + 300 * eps) * (100.0 / g) ** 0.2 * (step / 9000) ** 0.1
                    rows.append(
                        {"step": step, "lr": eps, "localization": g, "nbeta": nb,
                         "llc_mean": est, "valid": eps <= 1e-4 and g == 100.0,
                         "stationary": eps <= 1e-4, "localisation_dominated": g == 1000.0,
                         "chosen": step == 9000 and nb == 160.0 and g == 100.0 and eps == 1e-4}
                    )  # fmt: skip
    return pd.DataFrame(rows)


def b2_table():
    rows = []
    for lr in (1e-4, 5e-4, 1e-3):
        for g in (1.0, 5.0, 20.0, 100.0):
            rows.append(
                {"localization": g, "sampler_lr": lr, "llc_mean": 1e3 * lr * 1e3 / math.sqrt(g),
                 "llc_std": 0.05 * 1e3 * lr * 1e3, "valid": g >= 20.0}
            )  # fmt: skip
    return pd.DataFrame(rows)


def bias_table(intercept=4.0, slope=26.0, invalid_nbeta=()):
    nbeta = np.array([13.0, 20.0, 26.0, 39.0, 52.0])
    return pd.DataFrame(
        {
            "nbeta": nbeta,
            "llc_mean": intercept + slope / nbeta,
            "llc_std": 0.1,
            "valid": [nb not in invalid_nbeta for nb in nbeta],
        }
    )
