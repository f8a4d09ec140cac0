"""The paper's claims as data: the reproduction scorecard (issue 11; SPEC sections 5-7).

:func:`compute_claims` turns the pipeline's tables into ``claims.parquet``'s rows, one per claim
and named sampler (claims that use no LLC have the sampler ``"n/a"``), with the columns of
:data:`COLUMNS`. It is a pure function of tables: the same tables and ``seed`` give the same
rows.

Each claim is one function below; its docstring states the statistic and the rule that turns
the statistic into a verdict (``holds``, ``fails`` or ``inconclusive``), and
:func:`verdict_rules` collects those rules for the README. Shared principles:

* Trends use every seed of the study. Confidence intervals (95%) come from
  :func:`grokking_llc.analysis.bootstrap` (runs resampled within each setting, ``seed``) or, for
  one run's LLC curve, from :func:`grokking_llc.analysis.spearman_ci`.
* A claim holds when its whole interval lies on the claim's side of the threshold, fails when
  the whole interval lies on the other side, and is inconclusive otherwise -- which is what 3
  seeds often give. A setting with a single usable run has no seed spread: the claim is then
  inconclusive rather than decided on a bootstrap that cannot vary.
* Claims that use LLC values use only estimates that passed the validity checks; with none
  valid the verdict is inconclusive and the reason says so.
* GSM: runs that never generalise have no GSM (SPEC section 6's indicator is 0); they are
  counted in the reason, never entered as GSM 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from grokking_llc import analysis, theory
from grokking_llc.analysis import fmt
from grokking_llc.gsm import GSM_THRESHOLD

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
NO_SAMPLER = "n/a"
COLUMNS = (
    "claim",
    "figure",
    "sampler",
    "statistic",
    "paper_value",
    "value",
    "ci_low",
    "ci_high",
    "n_runs",
    "n_valid",
    "verdict",
    "reason",
)

# SPEC section 6: the paper's GSM-on-LLC line, for its own sampler settings.
PAPER_GSM_LLC = {"slope": 0.1288, "intercept": -2.098, "r2": 0.955}

# Thresholds of the verdict rules (each used in exactly one claim, named in its docstring).
LINEAR_SLOPE_RATIO_BAND = (2.0 / 3.0, 1.5)
PROPORTIONAL_EXPONENT_BAND = (0.8, 1.25)
TRACKING_RHO = 0.5
GSM_LLC_R2_HOLDS = 0.8
GSM_LLC_R2_FAILS = 0.5
REGIME_BAND_FACTOR = 1.5
THEORY_REL_TOL = 0.01
MIN_TRACK_ESTIMATES = 5


def _row(claim: str, figure: str, sampler: str, statistic: str, paper_value: str, **kw) -> dict:
    row = {
        "claim": claim,
        "figure": figure,
        "sampler": sampler,
        "statistic": statistic,
        "paper_value": paper_value,
        "value": math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "n_runs": 0,
        "n_valid": None,
        "verdict": INCONCLUSIVE,
        "reason": "",
    }
    row.update(kw)
    return row


def _band_verdict(lo: float, hi: float, band: tuple[float, float]) -> str:
    """holds: [lo, hi] inside ``band``; fails: [lo, hi] outside it; inconclusive otherwise."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE
    if band[0] <= lo and hi <= band[1]:
        return HOLDS
    if hi < band[0] or lo > band[1]:
        return FAILS
    return INCONCLUSIVE


def _sign_verdict(lo: float, hi: float, *, negative: bool) -> str:
    """holds: the interval excludes 0 on the claimed side; fails: it excludes 0 on the other."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE
    below, above = hi < 0.0, lo > 0.0
    if (below and negative) or (above and not negative):
        return HOLDS
    if below or above:
        return FAILS
    return INCONCLUSIVE


def _single_run_settings(df: pd.DataFrame, by: str | list[str]) -> list:
    counts = df.groupby(by).size()
    return [k for k, n in counts.items() if n < 2]


def _ci_text(b: Mapping[str, float], digits: int = 3) -> str:
    lo, hi = fmt(b["ci_low"], digits), fmt(b["ci_high"], digits)
    return f"{fmt(b['value'], digits)} (95% CI {lo}..{hi})"


# --------------------------------------------------------------------------- Figure 1


def _slope_ratio(df: pd.DataFrame) -> dict[str, float]:
    """Quadratic least squares through the per-p means; its slope at the largest p over its
    slope at the smallest p (1 for a straight line), and the straight line's slope."""
    means = df.groupby("p")["llc"].mean()
    p, y = means.index.to_numpy(float), means.to_numpy(float)
    if p.size < 3:
        return {"ratio": math.nan, "slope": math.nan}
    c2, c1, _ = np.polyfit(p, y, 2)
    lo, hi = c1 + 2 * c2 * p.min(), c1 + 2 * c2 * p.max()
    ratio = hi / lo if lo > 0 and hi > 0 else math.nan
    return {"ratio": ratio, "slope": analysis.fit_linear(p, y)["slope"]}


def claim_fig1_linear_in_p(runs: pd.DataFrame, sampler: str, *, seed: int, n_boot: int) -> dict:
    """Figure 1: the final LLC grows linearly in p at fixed width.

    Statistic: a quadratic least-squares fit through the per-p means of the valid final LLC
    (at the study's most common width); the ratio of its slope at the largest p to its slope at
    the smallest p -- 1 for a straight line, (p_max/p_min) for LLC ~ p^2, about 0.66 for
    LLC ~ sqrt(p) over p = 23..53 -- with a 95% bootstrap interval (runs resampled within each
    p). Needs at least 3 values of p, each with at least 2 valid runs.

    Verdict: holds when the interval lies within [2/3, 1.5] and the straight line's slope is
    positive over the whole interval; fails when the interval lies outside [2/3, 1.5] or the
    slope is negative over all of it; inconclusive otherwise (a ratio that is undefined in some
    resamples -- a slope <= 0 at one end -- counts against neither).
    """
    stat = (
        "slope ratio of the per-p means: fitted slope at the largest p over slope at the "
        "smallest (quadratic least squares); 1 for a straight line"
    )
    base = {"claim": "fig1_linear_in_p", "figure": "Fig. 1", "sampler": sampler}
    fit = analysis.fit_llc_vs_p(runs)
    pts = fit["points"]
    used = pts[pts["llc_valid"]]
    common = dict(
        statistic=stat, paper_value="linear in p (ratio 1)", n_runs=len(pts), n_valid=len(used)
    )
    if used.empty:
        return _row(**base, **common, reason="no valid final LLC estimate in the study")
    n_p = used["p"].nunique()
    single = _single_run_settings(used, "p")
    if n_p < 3 or single:
        why = (
            f"only {n_p} value(s) of p with a valid estimate (need 3)"
            if n_p < 3
            else f"p = {', '.join(fmt(s) for s in single)} with a single valid run"
        )
        return _row(**base, **common, reason=why)
    b = analysis.bootstrap(used[["p", "llc"]], _slope_ratio, by="p", n_boot=n_boot, seed=seed)
    r, s = b["ratio"], b["slope"]
    lo, hi = r["ci_low"], r["ci_high"]
    verdict = _band_verdict(lo, hi, LINEAR_SLOPE_RATIO_BAND)
    if verdict == HOLDS and not s["ci_low"] > 0:
        verdict = INCONCLUSIVE
    if s["ci_high"] < 0:
        verdict = FAILS
    reason = (
        f"slope ratio {_ci_text(r)}, band [0.67, 1.5]; straight-line slope {_ci_text(s, 4)} per "
        f"unit p, R² {fmt(fit['r2'], 3)}; width {fmt(fit['width'])}, {n_p} values of p"
    )
    if r["n_failed"]:
        reason += f"; ratio undefined in {r['n_failed']} of {n_boot} resamples"
    return _row(
        **base, **common, value=r["value"], ci_low=lo, ci_high=hi, verdict=verdict, reason=reason
    )


# --------------------------------------------------------------------------- Figure 2


def _exponent(df: pd.DataFrame) -> float:
    means = df.groupby("width")["llc"].mean()
    if (means <= 0).any() or means.size < 2:
        return math.nan
    return analysis.fit_linear(np.log(means.index.to_numpy(float)), np.log(means.to_numpy()))[
        "slope"
    ]


def claim_fig2_proportional_to_width(
    runs: pd.DataFrame, sampler: str, *, seed: int, n_boot: int
) -> dict:
    """Figure 2: the final LLC is proportional to the width K at fixed p.

    Statistic: the exponent alpha of LLC ~ K^alpha, the least-squares slope of log(mean valid
    final LLC) on log K over the widths (at the study's most common p), with a 95% bootstrap
    interval (runs resampled within each width). Needs at least 2 widths with at least 2 valid
    runs each and positive means.

    Verdict: holds when the interval lies within [0.8, 1.25]; fails when it lies outside it;
    inconclusive otherwise.
    """
    stat = "exponent alpha of final LLC ~ K^alpha (log-log least squares over per-width means)"
    base = {"claim": "fig2_proportional_to_width", "figure": "Fig. 2", "sampler": sampler}
    fit = analysis.fit_llc_vs_width(runs)
    pts = fit["points"]
    used = pts[pts["llc_valid"]]
    common = dict(
        statistic=stat,
        paper_value="proportional to K (alpha = 1)",
        n_runs=len(pts),
        n_valid=len(used),
    )
    if used.empty:
        return _row(**base, **common, reason="no valid final LLC estimate in the study")
    n_w = used["width"].nunique()
    single = _single_run_settings(used, "width")
    if n_w < 2 or single:
        why = (
            f"only {n_w} width(s) with a valid estimate (need 2)"
            if n_w < 2
            else f"width {', '.join(fmt(s) for s in single)} with a single valid run"
        )
        return _row(**base, **common, reason=why)
    b = analysis.bootstrap(used[["width", "llc"]], _exponent, by="width", n_boot=n_boot, seed=seed)
    e = b["value"]
    if not math.isfinite(e["value"]):
        return _row(**base, **common, reason="a width's mean valid LLC is <= 0: no power law")
    verdict = _band_verdict(e["ci_low"], e["ci_high"], PROPORTIONAL_EXPONENT_BAND)
    reason = (
        f"alpha {_ci_text(e)}, band [0.8, 1.25]; through the origin c = {fmt(fit['prop_c'])} "
        f"per unit (R² {fmt(fit['prop_r2'], 3)}); free line intercept {fmt(fit['intercept'])}; "
        f"p {fmt(fit['p'])}, {n_w} widths"
    )
    return _row(
        **base,
        **common,
        value=e["value"],
        ci_low=e["ci_low"],
        ci_high=e["ci_high"],
        verdict=verdict,
        reason=reason,
    )


# --------------------------------------------------------------------------- Figures 3 and 13


def _track_runs(tracks: Mapping[str, Any], key: str) -> list[dict]:
    value = tracks.get(key)
    if value is None:
        return []
    return [value] if isinstance(value, Mapping) else list(value)


def _track_claim(
    runs_: list[dict], sampler: str, *, window: str, base: dict, stat: str, paper: str
) -> dict:
    common = dict(statistic=stat, paper_value=paper, n_runs=len(runs_))
    if not runs_:
        return _row(**base, **common, n_valid=0, reason="no run given for this figure")
    per_run, verdicts, reasons, n_valid = [], [], [], 0
    for r in runs_:
        llc = r["llc"].get(sampler)
        if llc is None:
            return _row(**base, **common, n_valid=0, reason=f"no LLC track for sampler {sampler}")
        st = analysis.track_statistics(r["train_log"], llc, window=window)
        per_run.append(st)
        n_valid += st["n_window"]
        if st["n_window"] < MIN_TRACK_ESTIMATES:
            where = "in the grokking window" if window == "grokking" else "over the run"
            extra = f"; {'; '.join(st['notes'])}" if st["notes"] else ""
            reasons.append(
                f"{st['n_window']} valid estimate(s) {where} "
                f"({st['n_valid']} of {st['n_estimates']} valid over the run; need "
                f"{MIN_TRACK_ESTIMATES}){extra}"
            )
            verdicts.append(INCONCLUSIVE)
            continue
        if st["ci_low"] > 0 and st["spearman"] >= TRACKING_RHO:
            verdicts.append(HOLDS)
        elif st["ci_high"] < TRACKING_RHO:
            verdicts.append(FAILS)
        else:
            verdicts.append(INCONCLUSIVE)
        text = (
            f"Spearman(LLC, val loss) {fmt(st['spearman'], 3)} (95% CI {fmt(st['ci_low'], 2)}.."
            f"{fmt(st['ci_high'], 2)}, {st['n_window']} valid estimates)"
        )
        if window == "grokking":
            text += (
                f"; LLC {fmt(st['llc_start'])} -> {fmt(st['llc_end'])} from memorisation (step "
                f"{fmt(st['t_mem'], 8)}) to generalisation (step {fmt(st['t_gen'], 8)})"
            )
        text += f"; highest valid LLC at step {fmt(st['peak_step'], 8)} ({st['peak_position']})"
        reasons.append(text)
    verdict = verdicts[0] if len(set(verdicts)) == 1 else INCONCLUSIVE
    rhos = [s["spearman"] for s in per_run if s["n_window"] >= MIN_TRACK_ESTIMATES]
    lows = [s["ci_low"] for s in per_run if s["n_window"] >= MIN_TRACK_ESTIMATES]
    highs = [s["ci_high"] for s in per_run if s["n_window"] >= MIN_TRACK_ESTIMATES]
    reason = (
        "; ".join(reasons)
        if len(runs_) == 1
        else " | ".join(f"run {i + 1}: {r}" for i, r in enumerate(reasons))
    )
    return _row(
        **base,
        **common,
        n_valid=n_valid,
        value=float(np.mean(rhos)) if rhos else math.nan,
        ci_low=min(lows) if lows else math.nan,
        ci_high=max(highs) if highs else math.nan,
        verdict=verdict,
        reason=reason,
    )


def claim_fig3_llc_falls_with_generalisation(tracks: Mapping[str, Any], sampler: str) -> dict:
    """Figure 3: the LLC falls while the validation loss falls (the grokking window), after
    peaking around memorisation.

    Statistic: Spearman's rank correlation between the valid LLC estimates and the validation
    loss at the same checkpoints, over the grokking window [first step with train accuracy >=
    0.99, first step with validation accuracy >= 0.99]; positive means the LLC falls as the
    validation loss falls. 95% interval by Fisher's z (it treats checkpoints as independent,
    which a trajectory is not, so it is too narrow rather than too wide). The reason gives the
    LLC at both ends of the window and where the highest valid estimate sits relative to
    memorisation and generalisation. Needs 5 valid estimates in the window.

    Verdict (per run; several runs must agree, otherwise inconclusive): holds when rho >= 0.5
    and the interval excludes 0; fails when the whole interval lies below 0.5 (no strong
    tracking); inconclusive otherwise.
    """
    base = {"claim": "fig3_llc_falls_with_generalisation", "figure": "Fig. 3", "sampler": sampler}
    stat = (
        "Spearman correlation of valid LLC with validation loss over the grokking window "
        "(positive: LLC falls as validation loss falls)"
    )
    return _track_claim(
        _track_runs(tracks, "fig3"),
        sampler,
        window="grokking",
        base=base,
        stat=stat,
        paper="LLC peaks, then falls as the model generalises",
    )


def claim_fig13_transformer_llc_tracks_test_loss(tracks: Mapping[str, Any], sampler: str) -> dict:
    """Figure 13: in the transformer the LLC curve tracks the test (validation) loss.

    Statistic: Spearman's rank correlation between the valid LLC estimates and the validation
    loss at the same checkpoints over the whole run, with a Fisher-z 95% interval (too narrow
    for a trajectory, as for Figure 3). Needs 5 valid estimates.

    Verdict: holds when rho >= 0.5 and the interval excludes 0; fails when the whole interval
    lies below 0.5; inconclusive otherwise.
    """
    base = {
        "claim": "fig13_transformer_llc_tracks_test_loss",
        "figure": "Fig. 13",
        "sampler": sampler,
    }
    stat = "Spearman correlation of valid LLC with validation loss over the run"
    return _track_claim(
        _track_runs(tracks, "fig13"),
        sampler,
        window="all",
        base=base,
        stat=stat,
        paper="LLC tracks the test loss",
    )


# --------------------------------------------------------------------------- Figure 4 and H.3


def _spearman_stat(x: str, y: str) -> Callable[[pd.DataFrame], float]:
    def stat(df: pd.DataFrame) -> float:
        return analysis.spearman(df[x], df[y])

    return stat


def claim_fig4_gsm_decays_with_lr(training: pd.DataFrame, *, seed: int, n_boot: int) -> list:
    """Figure 4: the grokking severity decays with the learning rate (one row per weight decay).

    Statistic: Spearman's rank correlation of GSM with the learning rate over the runs that
    generalised (runs that never did have no GSM and are counted in the reason, not entered as
    0), with a 95% bootstrap interval (runs resampled within each learning rate). The reason
    also gives the exponential-decay fit, or why it is not usable. Needs 3 learning rates with
    at least 2 generalised runs each.

    Verdict: holds when the whole interval lies below 0; fails when it lies above 0;
    inconclusive otherwise.
    """
    stat = "Spearman correlation of GSM with lr over runs that generalised (negative: decays)"
    fits = analysis.fit_lr_vs_gsm(training, GSM_THRESHOLD)
    rows = []
    if not fits:
        return [
            _row(
                "fig4_gsm_decays_with_lr",
                "Fig. 4",
                NO_SAMPLER,
                stat,
                "exponential decay",
                reason="no runs with finite lr, GSM and weight decay",
            )
        ]
    for wd, fit in fits.items():
        gen = fit["points"][fit["points"]["generalised"]]
        never = fit["never"]
        never_txt = ", ".join(
            f"{int(k)}/{int(n)} at lr {fmt(lr)}"
            for lr, k, n in never[["lr", "n_never", "n_runs"]].itertuples(index=False)
            if k
        )
        base = dict(
            claim="fig4_gsm_decays_with_lr",
            figure=f"Fig. 4 (wd {fmt(wd)})",
            sampler=NO_SAMPLER,
            statistic=stat,
            paper_value="exponential decay",
            n_runs=fit["n_runs"],
            n_valid=None,
        )
        tail = f"never generalised: {never_txt}" if never_txt else "every run generalised"
        single = _single_run_settings(gen, "lr") if len(gen) else []
        if fit["n_lr"] < 3 or single:
            why = (
                f"{fit['n_lr']} learning rate(s) with a generalised run (need 3)"
                if fit["n_lr"] < 3
                else f"lr {', '.join(fmt(s) for s in single)} with a single generalised run"
            )
            rows.append(_row(**base, reason=f"{why}; {tail}"))
            continue
        b = analysis.bootstrap(
            gen[["lr", "gsm"]], _spearman_stat("lr", "gsm"), by="lr", n_boot=n_boot, seed=seed
        )["value"]
        verdict = _sign_verdict(b["ci_low"], b["ci_high"], negative=True)
        reason = f"rho {_ci_text(b)}; {analysis.describe_exponential(fit)}; {tail}"
        rows.append(
            _row(
                **base,
                value=b["value"],
                ci_low=b["ci_low"],
                ci_high=b["ci_high"],
                verdict=verdict,
                reason=reason,
            )
        )
    return rows


def claim_h3_max_llc_decreases_with_lr(
    runs: pd.DataFrame, sampler: str, *, seed: int, n_boot: int
) -> list:
    """Appendix H.3: the maximum of the LLC curve decreases with the learning rate (one row per
    weight decay).

    Statistic: Spearman's rank correlation of each run's maximum LLC with its learning rate,
    over runs whose maximum is a valid estimate, with a 95% bootstrap interval (runs resampled
    within each learning rate). Needs 3 learning rates with at least 2 valid runs each.

    Verdict: holds when the whole interval lies below 0; fails when it lies above 0;
    inconclusive otherwise.
    """
    stat = "Spearman correlation of valid maximum LLC with lr (negative: decreases)"
    res = analysis.lr_vs_max_llc(runs)
    pts = res["points"]
    if pts.empty:
        return [
            _row(
                "h3_max_llc_decreases_with_lr",
                "H.3",
                sampler,
                stat,
                "decreases with lr",
                n_valid=0,
                reason="no runs with finite lr, maximum LLC and weight decay",
            )
        ]
    rows = []
    for wd in res["per_wd"]:
        sub = pts[pts["weight_decay"] == wd]
        used = sub[sub["llc_valid"]]
        base = dict(
            claim="h3_max_llc_decreases_with_lr",
            figure=f"H.3 (wd {fmt(wd)})",
            sampler=sampler,
            statistic=stat,
            paper_value="decreases with lr",
            n_runs=len(sub),
            n_valid=len(used),
        )
        n_lr = used["lr"].nunique()
        single = _single_run_settings(used, "lr") if len(used) else []
        if used.empty:
            rows.append(_row(**base, reason="no valid maximum-LLC estimate"))
            continue
        if n_lr < 3 or single:
            why = (
                f"{n_lr} learning rate(s) with a valid estimate (need 3)"
                if n_lr < 3
                else f"lr {', '.join(fmt(s) for s in single)} with a single valid run"
            )
            rows.append(_row(**base, reason=why))
            continue
        b = analysis.bootstrap(
            used[["lr", "llc"]], _spearman_stat("lr", "llc"), by="lr", n_boot=n_boot, seed=seed
        )["value"]
        verdict = _sign_verdict(b["ci_low"], b["ci_high"], negative=True)
        rows.append(
            _row(
                **base,
                value=b["value"],
                ci_low=b["ci_low"],
                ci_high=b["ci_high"],
                verdict=verdict,
                reason=f"rho {_ci_text(b)}; {n_lr} learning rates",
            )
        )
    return rows


# --------------------------------------------------------------------------- GSM against LLC


def _gsm_line(df: pd.DataFrame) -> dict[str, float]:
    if df["llc"].nunique() < 2:
        return {"r2": math.nan, "slope": math.nan}
    f = analysis.fit_linear(df["llc"], df["gsm"])
    return {"r2": f["r2"], "slope": f["slope"]}


def claim_gsm_linear_in_llc(runs: pd.DataFrame, sampler: str, *, seed: int, n_boot: int) -> list:
    """Section 6: GSM is a linear function of the final LLC (paper: GSM = 0.1288 LLC - 2.098,
    R^2 = 0.955, for its sampler), fitted per weight decay and pooled over weight decays.

    Statistic: R^2 of the least-squares line of GSM on the valid final LLC over runs that
    generalised, with 95% bootstrap intervals for R^2 and the slope (runs resampled within each
    (lr, weight decay) setting). The pooled row can show a line through clusters that are the
    weight decays; the per-weight-decay rows say whether the relation holds within one. Needs
    4 such runs.

    Verdict: holds when the slope's interval lies above 0 and R^2's interval above 0.8; fails
    when the slope's interval lies below 0 or R^2's interval below 0.5; inconclusive otherwise.
    """
    stat = "R² of GSM on valid final LLC over runs that generalised (slope in the reason)"
    paper = (
        f"GSM = {PAPER_GSM_LLC['slope']} LLC {PAPER_GSM_LLC['intercept']:+}, "
        f"R² {PAPER_GSM_LLC['r2']}"
    )
    res = analysis.fit_gsm_vs_llc(runs, GSM_THRESHOLD)
    pts = res["points"]
    used = pts[pts["generalised"] & pts["llc_valid"]]
    groups: list[tuple[str, pd.DataFrame, pd.DataFrame]] = []
    if "weight_decay" in pts:
        for wd in sorted(pts["weight_decay"].dropna().unique()):
            groups.append(
                (
                    f"Sec. 6 (wd {fmt(wd)})",
                    pts[pts["weight_decay"] == wd],
                    used[used["weight_decay"] == wd],
                )
            )
    groups.append(("Sec. 6 (pooled)", pts, used))
    rows = []
    for figure, all_, sub in groups:
        n_never = int((~all_["generalised"]).sum()) if len(all_) else 0
        base = dict(
            claim="gsm_linear_in_llc",
            figure=figure,
            sampler=sampler,
            statistic=stat,
            paper_value=paper,
            n_runs=len(all_),
            n_valid=len(sub),
        )
        tail = f"{n_never} run(s) never generalised (no GSM), left out" if n_never else None
        if sub.empty:
            rows.append(
                _row(
                    **base,
                    reason="; ".join(
                        filter(None, ["no generalised run with a valid final LLC", tail])
                    ),
                )
            )
            continue
        by = [c for c in ("lr", "weight_decay") if c in sub]
        if len(sub) < 4 or sub["llc"].nunique() < 2:
            rows.append(
                _row(
                    **base,
                    reason="; ".join(filter(None, [f"{len(sub)} usable run(s) (need 4)", tail])),
                )
            )
            continue
        b = analysis.bootstrap(
            sub[[*by, "llc", "gsm"]], _gsm_line, by=by or "llc", n_boot=n_boot, seed=seed
        )
        r2, sl = b["r2"], b["slope"]
        if sl["ci_high"] < 0 or r2["ci_high"] < GSM_LLC_R2_FAILS:
            verdict = FAILS
        elif sl["ci_low"] > 0 and r2["ci_low"] > GSM_LLC_R2_HOLDS:
            verdict = HOLDS
        else:
            verdict = INCONCLUSIVE
        fit = analysis.fit_linear(sub["llc"], sub["gsm"])
        reason = (
            f"GSM = {fmt(fit['slope'])} LLC {fit['intercept']:+.4g}; R² {_ci_text(r2)}; slope "
            f"{_ci_text(sl, 4)}; {len(sub)} runs"
        )
        rows.append(
            _row(
                **base,
                value=r2["value"],
                ci_low=r2["ci_low"],
                ci_high=r2["ci_high"],
                verdict=verdict,
                reason="; ".join(filter(None, [reason, tail])),
            )
        )
    return rows


# --------------------------------------------------------------------------- Figure 14


def claim_fig14_regime_boundary(training: pd.DataFrame, *, seed: int, n_boot: int) -> dict:
    """Figure 14: runs start to generalise near n = 2.75 p ln p (Tian 2025).

    Statistic: for each p, the bracket (x_fail, x_gen] of the scaled data size
    x = n_train / (p ln p) in which runs start to generalise (a setting generalises when at
    least half its runs end generalised; :func:`grokking_llc.analysis.regime_boundary`);
    value: the midpoint of the brackets averaged over p. Interval: the 2.5% quantile of the
    mean lower end and the 97.5% quantile of the mean upper end over bootstrap resamples (runs
    resampled within each (p, train_frac) setting), so it includes the grid's own resolution.

    Verdict: holds when the interval lies within [2.75/1.5, 2.75*1.5] = [1.83, 4.13]; fails
    when it lies outside that band; inconclusive otherwise, or when some p never generalises or
    generalises already at its smallest size (an open bracket).
    """
    stat = "scaled data size n/(p ln p) where runs start to generalise (bracket mid, mean over p)"
    tian = analysis.TIAN_CRITICAL_RATIO
    base = dict(
        claim="fig14_regime_boundary",
        figure="Fig. 14",
        sampler=NO_SAMPLER,
        statistic=stat,
        paper_value=f"{tian} (Tian 2025)",
        n_valid=None,
    )
    res = analysis.regime_boundary(training, GSM_THRESHOLD)
    pts = res["points"]
    if pts.empty:
        return _row(**base, reason="no runs with finite p and n_train")
    brackets = "; ".join(
        f"p {fmt(r.p)}: ({fmt(r.x_fail, 3)}, {fmt(r.x_gen, 3)}]" for r in res["per_p"].itertuples()
    )
    if res["open_p"]:
        return _row(
            **base,
            n_runs=len(pts),
            reason=f"open bracket for p = {', '.join(fmt(p) for p in res['open_p'])}; {brackets}",
        )
    by = [c for c in ("p", "train_frac") if c in pts] or ["p", "n_train"]

    def stat_fn(df: pd.DataFrame) -> dict[str, float]:
        r = analysis.regime_boundary(df, GSM_THRESHOLD)
        return {"lower": r["lower"], "upper": r["upper"]}

    cols = list(dict.fromkeys([*by, "p", "n_train", "final_train_acc", "final_val_acc"]))
    b = analysis.bootstrap(pts[cols], stat_fn, by=by, n_boot=n_boot, seed=seed)
    lo, hi = b["lower"]["ci_low"], b["upper"]["ci_high"]
    band = (tian / REGIME_BAND_FACTOR, tian * REGIME_BAND_FACTOR)
    verdict = _band_verdict(lo, hi, band)
    n_open = b["lower"]["n_failed"]
    reason = (
        f"brackets {brackets}; interval {fmt(lo, 3)}..{fmt(hi, 3)} against the band "
        f"[{fmt(band[0], 3)}, {fmt(band[1], 3)}]"
    )
    if n_open:
        reason += f"; bracket open in {n_open} of {n_boot} resamples"
    return _row(
        **base,
        n_runs=len(pts),
        value=res["mid"],
        ci_low=lo,
        ci_high=hi,
        verdict=verdict,
        reason=reason,
    )


# --------------------------------------------------------------------------- theory


def claim_theory_count(baseline: Mapping[str, Any]) -> dict:
    """Section 5: the paper's closed form (Thm 4.1/4.2, ``theory.llc_quadratic``) counts what
    the training loss can see at the baseline.

    Statistic: the data-restricted count at the baseline run's split
    (``theory.data_restricted_bound(p, K, train_frac, data_seed)``: half the rank of the
    Jacobian of the centred training-set predictions, equal to the numerical rank in every case
    checked), against the closed form ``(1/2) min(K (3p - 1), p D)``. Exact numbers, no
    interval. ``baseline`` holds the baseline run's ``p``, ``width``, ``train_frac`` and
    ``data_seed``.

    Verdict: holds when the two agree within 1%; fails otherwise.
    """
    p, K = int(baseline["p"]), int(baseline["width"])
    frac, dseed = float(baseline["train_frac"]), int(baseline["data_seed"])
    closed = theory.llc_quadratic(p, K)
    restricted = theory.data_restricted_bound(p, K, train_frac=frac, seed=dseed)
    n = len(theory.training_pairs(p, train_frac=frac, seed=dseed))
    rel = restricted / closed - 1.0
    verdict = HOLDS if abs(rel) <= THEORY_REL_TOL else FAILS
    reason = (
        f"p={p}, K={K}, n={n}: closed form {fmt(closed, 8)}, data-restricted count "
        f"{fmt(restricted, 8)} ({rel:+.1%}); p(n-1)/2 = {fmt(p * (n - 1) / 2, 8)}"
    )
    return _row(
        "theory_count",
        "Sec. 5",
        NO_SAMPLER,
        "data-restricted count (half the Jacobian rank of the centred training-set "
        "predictions) at the baseline",
        f"{fmt(closed, 8)} (closed form)",
        value=float(restricted),
        ci_low=float(restricted),
        ci_high=float(restricted),
        n_runs=0,
        n_valid=None,
        verdict=verdict,
        reason=reason,
    )


# --------------------------------------------------------------------------- all claims


def compute_claims(
    runs: pd.DataFrame,
    training: pd.DataFrame,
    tracks: Mapping[str, Any],
    theory_baseline: Mapping[str, Any] | None,
    *,
    samplers: Sequence[str],
    studies: Mapping[str, str | None],
    seed: int = 0,
    n_boot: int = 2000,
) -> pd.DataFrame:
    """Every claim's row (columns :data:`COLUMNS`), in a fixed order.

    Args:
        runs: ``results/tables/runs.parquet`` (long: a row per run and named sampler, with
            ``sampler``, ``studies``, ``final_llc``, ``final_llc_valid``, ``max_llc``,
            ``max_llc_valid``, the training summary's columns).
        training: ``results/tables/training_summary.parquet`` (a row per run).
        tracks: ``{"fig3": run, "fig13": run}`` (or a list of runs per key), each run
            ``{"train_log": DataFrame, "llc": {sampler: DataFrame}}`` -- the training log and
            the LLC track per named sampler of the figure's run(s).
        theory_baseline: the baseline run's ``p``, ``width``, ``train_frac``, ``data_seed``
            (None: no theory row).
        samplers: the named samplers, in the order rows should appear.
        studies: figure key -> study name, for ``fig1``, ``fig2``, ``fig4``,
            ``lr_vs_max_llc``, ``gsm_vs_llc`` and ``fig14`` (the config's
            ``figures.<key>.study``); a missing key uses every run.
        seed, n_boot: the bootstrap's seed and number of resamples.
    """
    kw = {"seed": seed, "n_boot": n_boot}

    def of(key: str, table: pd.DataFrame, sampler: str | None = None) -> pd.DataFrame:
        return analysis.select(table, study=studies.get(key), sampler=sampler)

    rows: list[dict] = []
    for s in samplers:
        rows.append(claim_fig1_linear_in_p(of("fig1", runs, s), s, **kw))
        rows.append(claim_fig2_proportional_to_width(of("fig2", runs, s), s, **kw))
        rows.append(claim_fig3_llc_falls_with_generalisation(tracks, s))
    rows += claim_fig4_gsm_decays_with_lr(of("fig4", training), **kw)
    for s in samplers:
        rows += claim_h3_max_llc_decreases_with_lr(of("lr_vs_max_llc", runs, s), s, **kw)
    for s in samplers:
        rows += claim_gsm_linear_in_llc(of("gsm_vs_llc", runs, s), s, **kw)
    rows.append(claim_fig14_regime_boundary(of("fig14", training), **kw))
    for s in samplers:
        rows.append(claim_fig13_transformer_llc_tracks_test_loss(tracks, s))
    if theory_baseline is not None:
        rows.append(claim_theory_count(theory_baseline))
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["n_runs"] = df["n_runs"].astype("Int64")
    df["n_valid"] = pd.array(
        [
            pd.NA if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
            for v in df["n_valid"]
        ],
        dtype="Int64",
    )
    for c in ("value", "ci_low", "ci_high"):
        df[c] = df[c].astype(float)
    return df


CLAIM_FUNCTIONS = {
    "fig1_linear_in_p": claim_fig1_linear_in_p,
    "fig2_proportional_to_width": claim_fig2_proportional_to_width,
    "fig3_llc_falls_with_generalisation": claim_fig3_llc_falls_with_generalisation,
    "fig4_gsm_decays_with_lr": claim_fig4_gsm_decays_with_lr,
    "h3_max_llc_decreases_with_lr": claim_h3_max_llc_decreases_with_lr,
    "gsm_linear_in_llc": claim_gsm_linear_in_llc,
    "fig14_regime_boundary": claim_fig14_regime_boundary,
    "fig13_transformer_llc_tracks_test_loss": claim_fig13_transformer_llc_tracks_test_loss,
    "theory_count": claim_theory_count,
}


def verdict_rules() -> dict[str, str]:
    """Claim name -> the verdict rule of its docstring (the paragraph starting "Verdict")."""
    out = {}
    for name, fn in CLAIM_FUNCTIONS.items():
        doc = (fn.__doc__ or "").split("\n\n")
        rule = next((p for p in doc if p.strip().startswith("Verdict")), "")
        out[name] = " ".join(rule.split())
    return out
