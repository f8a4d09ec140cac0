"""Small hand-made tables shaped like the pipeline's (runs, training summary, logs, LLC tracks,
sampler grids, calibration), shared by the figure, analysis and claims tests."""

from __future__ import annotations

import json
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
    """A calibration table as grokking_llc.sampling.calibrate writes it: two targets (step 1000;
    step
    9000, the search target), lambda = 2, so gamma = 2 nbeta / kappa.

    * gn_diag, nbeta 1e4: ladder kappa 32 (localisation-dominated), 64, 128, 256 (valid); the
      candidate at 256 passed every check (steps 0.2 and 0.1 of the edge, the latter its own;
      nbeta / 2; rescaled x2 and x0.5; a MALA reference) and is valid at step 1000: chosen.
    * gn_diag, nbeta 1e3: ladder 32 (invalid), 64 (valid), 128 (not stationary: the end).
    * sgld, nbeta 1e4: ladder 64, 128, 256 valid; its candidate's nbeta run is invalid and
      step 1000 is not a minimum there.
    """
    rows = []

    def add(target, role, kind, nbeta, kappa, frac, llc, status="valid", rescale=1.0, **kw):
        gamma = 2.0 * nbeta / kappa
        lr = frac / (nbeta * 2.0 * rescale**2 + gamma)
        settings = {"lr": lr, "nbeta": nbeta, "localization": gamma, "kind": kind}
        rows.append(
            {"step": (1000, 9000)[target], "target": target, "role": role, "kind": kind,
             "nbeta": nbeta, "localization": gamma, "lr": lr, "rescale": rescale,
             "lr_scaled": frac, "resolution": kappa * (rescale**2 if rescale != 1.0 else 1.0),
             "llc_mean": llc, "llc_se": 0.01 * abs(llc), "valid": status == "valid",
             "status": status,
             "invalid_reason": {"valid": "", "invalid": "ess 50 < 400",
                                "not_a_minimum": "not_a_minimum: estimate <= 0"}[status],
             "settings": json.dumps(settings, sort_keys=True), **kw}
        )  # fmt: skip

    for kappa, llc, st in [(32, 40.0, "invalid"), (64, 70.0, "valid"), (128, 85.0, "valid"),
                           (256, 92.0, "valid")]:  # fmt: skip
        add(1, "ladder", "gn_diag", 1e4, kappa, 0.2, llc, st)
    add(1, "step", "gn_diag", 1e4, 256, 0.2, 92.0)
    add(1, "step", "gn_diag", 1e4, 256, 0.1, 90.0)
    add(1, "candidate", "gn_diag", 1e4, 256, 0.1, 90.0, eps_change=-0.022, gamma_bias=0.03,
        nbeta_change=0.04, rescale_change=0.02, reference_llc=91.0, reference_change=-0.011,
        checks_passed=True, check_failures="")  # fmt: skip
    add(1, "nbeta", "gn_diag", 5e3, 256, 0.1, 93.6)
    add(1, "rescale x2", "gn_diag", 1e4, 256, 0.1, 91.8, rescale=2.0)
    add(1, "rescale x0.5", "gn_diag", 1e4, 256, 0.1, 89.0, rescale=0.5)
    rows.append({**rows[-1], "role": "reference", "kind": "mala", "rescale": 1.0, "lr": math.nan,
                 "resolution": math.nan, "llc_mean": 91.0, "settings": ""})  # fmt: skip
    add(0, "target", "gn_diag", 1e4, 300, 0.1, 60.0)
    rows[-1]["settings"] = rows[6]["settings"]  # the candidate's absolute step
    for kappa, llc, st in [(32, 4.0, "invalid"), (64, 7.0, "valid"), (128, 7.5, "invalid")]:
        add(1, "ladder", "gn_diag", 1e3, kappa, 0.2, llc, st)
    for kappa, llc in [(64, 60.0), (128, 80.0), (256, 88.0)]:
        add(1, "ladder", "sgld", 1e4, kappa, 0.2, llc)
    add(1, "step", "sgld", 1e4, 256, 0.2, 88.0)
    add(1, "step", "sgld", 1e4, 256, 0.1, 87.0)
    add(1, "candidate", "sgld", 1e4, 256, 0.1, 87.0, checks_passed=False,
        check_failures="nbeta at step 9000: the estimate is not valid")  # fmt: skip
    add(1, "nbeta", "sgld", 5e3, 256, 0.1, 70.0, "invalid")
    add(0, "target", "sgld", 1e4, 300, 0.1, -3.0, "not_a_minimum")
    chosen = rows[6]["settings"]
    reason = "gn_diag lr=4.5e-06 nbeta=1e+04 gamma=78.12 passed every check."
    for r in rows:
        r["chosen"] = r["settings"] == chosen and r["rescale"] == 1.0
        r["chosen_valid"] = r["chosen"]
        r["reason"] = reason
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
