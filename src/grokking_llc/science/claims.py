"""The paper's claims as data: the reproduction scorecard (issues 11 and 20; SPEC sections 5-7).

:func:`compute_claims` turns the pipeline's tables into ``claims.parquet``'s rows, one per claim
and named sampler (claims that use no LLC have the sampler ``"n/a"``), with the columns of
:data:`COLUMNS`. It is a pure function of tables: the same tables and ``seed`` give the same
rows. Each row carries two verdicts:

* ``verdict`` (validated): ``holds``, ``fails`` or ``inconclusive``, decided on the estimates
  that pass the validity checks (SPEC section 10) only, from 95% intervals;
* ``verdict_as_published``: ``reproduced`` or ``not_reproduced`` -- the paper's statistic on
  every estimate of the sampler that runs the paper's protocol (``protocol: paper``, SPEC
  section 4), valid or not, as the paper computed it, compared with what the paper reports --
  or ``n/a`` where the paper reports nothing to compare (the theory count) and on the rows of
  other samplers. Its measured value, interval and reason sit in the ``*_as_published``
  columns.

One row per claim and sampler (as before issue 20) rather than one row per claim: a claim's
validated verdict differs between samplers (the paper's and a calibrated one), and the two
verdicts of the paper sampler's row sit side by side on that row.

Each claim is one function below; its docstring states the statistic, the validated rule (the
paragraph starting "Verdict") and the as-published rule (the paragraph starting "As
published"); :func:`verdict_rules` and :func:`published_rules` collect them for the README. The
rules are small functions (``_band_verdict``, ``_sign_verdict``, ``_track_verdict``, ...)
tested at their thresholds. Shared principles:

* Trends use every seed of the study. Confidence intervals (95%) come from
  :func:`grokking_llc.science.stats.bootstrap` (runs resampled within each setting, ``seed``;
  bias-corrected, and always containing the point estimate) or, for one run's LLC curve, from
  :func:`grokking_llc.science.stats.spearman_ci`.
* Validated: a claim holds when its whole interval lies on the claim's side of the threshold,
  fails when the whole interval lies on the other side, and is inconclusive otherwise -- which
  is what 3 seeds often give. An interval that touches a threshold has not crossed it. A
  setting with a single usable run has no seed spread: the claim is then inconclusive rather
  than decided on a bootstrap that cannot vary. Only estimates that passed the validity
  checks enter; with none valid the verdict is inconclusive and the reason says so.
* As published: the paper decides on its point estimates, without intervals; so does this
  verdict (the interval is reported beside it). Every estimate enters, and the reason counts
  how many of them fail the validity checks.
* GSM: runs that never generalise have no GSM (SPEC section 6's indicator is 0); they are
  counted in the reason, never entered as GSM 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from grokking_llc.core import columns
from grokking_llc.science import (
    fits,
    generalisation,
    paper,
    scaling,
    stats,
    tables,
    text,
    theory,
    trajectory,
)
from grokking_llc.science.gsm import GSM_THRESHOLD
from grokking_llc.science.paper import PAPER_BASELINE, PAPER_FIG3_RUN, PAPER_GSM_LLC
from grokking_llc.science.tables import USE_ALL, USE_VALID
from grokking_llc.science.text import fmt, fmt_step

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
REPRODUCED, NOT_REPRODUCED, NOT_APPLICABLE = "reproduced", "not_reproduced", "n/a"
PUBLISHED_VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_APPLICABLE)
NO_SAMPLER = "n/a"
PUBLISHED_COLUMNS = columns.CLAIM_AS_PUBLISHED
COLUMNS = columns.CLAIM

# Thresholds of the verdict rules (each used in exactly one claim, named in its docstring).
LINEAR_SLOPE_RATIO_BAND = (2.0 / 3.0, 1.5)
PROPORTIONAL_EXPONENT_BAND = (0.8, 1.25)
TRACKING_RHO = 0.5
GSM_LLC_R2_HOLDS = 0.8
GSM_LLC_R2_FAILS = 0.5
REGIME_BAND_FACTOR = 1.5
THEORY_REL_TOL = 0.01
MIN_TRACK_ESTIMATES = 5
# As published, Figure 3: each of start, peak and end within this fraction of the paper's run
# data (a three-chain estimate moves by about 1% between seeds; the paper's peak is read off
# as ~4,885).
FIG3_RUN_DATA_TOL = 0.05


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
        "value_as_published": math.nan,
        "ci_low_as_published": math.nan,
        "ci_high_as_published": math.nan,
        "verdict_as_published": NOT_APPLICABLE,
        "reason_as_published": "",
    }
    row.update(kw)
    return row


def _published(
    verdict: str,
    reason: str,
    value: float = math.nan,
    ci_low: float = math.nan,
    ci_high: float = math.nan,
) -> dict:
    """The as-published columns of a row."""
    return {
        "value_as_published": value,
        "ci_low_as_published": ci_low,
        "ci_high_as_published": ci_high,
        "verdict_as_published": verdict,
        "reason_as_published": reason,
    }


def _scored(
    base: Mapping[str, Any],
    numbers: Callable[[str], dict[str, Any]],
    key: str,
    verdict: Callable[[dict[str, Any]], str],
    published: Callable[[dict[str, Any]], str],
    what: str,
    as_published: bool,
    **common: Any,
) -> dict:
    """The skeleton of a claim on one bootstrapped statistic, shared by its two verdicts.

    ``numbers(use)`` computes the statistic on the valid estimates (:data:`USE_VALID`) or on
    every estimate (:data:`USE_ALL`, the paper's protocol) and returns ``why`` (a reason there
    is no statistic, or None), ``text``, ``pts`` and ``used`` (the table and its used rows, with
    ``llc_status``) and, under ``key``, the statistic's ``value``, ``ci_low`` and ``ci_high``.
    ``verdict(got)`` and ``published(got)`` decide; ``what`` names the estimates in the
    as-published reason's count of those failing the validity checks. ``text`` may differ
    between the two uses, and an optional ``tail`` ends every reason of the row."""
    got = numbers(USE_VALID)
    common = dict(common, n_runs=len(got["pts"]), n_valid=len(got["used"]))
    if got["why"]:
        row = _row(**base, **common, reason=_said(got, got["why"]))
    else:
        v, reason = got[key], _said(got, got["text"])
        row = _row(**base, **common, value=v["value"], ci_low=v["ci_low"],
                   ci_high=v["ci_high"], verdict=verdict(got), reason=reason)  # fmt: skip
    if not as_published:
        return row
    pub = numbers(USE_ALL)
    if pub["why"]:
        row.update(_published(NOT_REPRODUCED, _said(pub, pub["why"])))
        return row
    v = pub[key]
    failing = _failing_text(pub["used"]["llc_status"], what)
    row.update(_published(published(pub), _said(pub, pub["text"], failing), v["value"],
                          v["ci_low"], v["ci_high"]))  # fmt: skip
    return row


def _said(got: Mapping[str, Any], *parts: str) -> str:
    """A reason of :func:`_scored`: ``parts`` and the numbers' ``tail``, if any."""
    return "; ".join(filter(None, [*parts, got.get("tail")]))


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


# --------------------------------------------------------------------------- verdict rules


def _band_verdict(lo: float, hi: float, band: tuple[float, float]) -> str:
    """holds: [lo, hi] inside ``band`` (ends included); fails: [lo, hi] entirely outside it
    (an interval touching the band is not outside); inconclusive otherwise."""
    if not _finite(lo, hi):
        return INCONCLUSIVE
    if band[0] <= lo and hi <= band[1]:
        return HOLDS
    if hi < band[0] or lo > band[1]:
        return FAILS
    return INCONCLUSIVE


def _sign_verdict(lo: float, hi: float, *, negative: bool) -> str:
    """holds: the interval excludes 0 on the claimed side; fails: it excludes 0 on the other.
    An interval that touches 0 does not exclude it."""
    if not _finite(lo, hi):
        return INCONCLUSIVE
    below, above = hi < 0.0, lo > 0.0
    if (below and negative) or (above and not negative):
        return HOLDS
    if below or above:
        return FAILS
    return INCONCLUSIVE


def _track_verdict(rho: float, lo: float, hi: float) -> str:
    """Figures 3 and 13, one run: holds when ``rho >= 0.5`` and the interval excludes 0
    (``lo > 0``); fails when the whole interval lies below 0.5 (``hi < 0.5``)."""
    if _finite(rho, lo) and lo > 0.0 and rho >= TRACKING_RHO:
        return HOLDS
    if _finite(hi) and hi < TRACKING_RHO:
        return FAILS
    return INCONCLUSIVE


def _fig1_verdict(r_lo: float, r_hi: float, s_lo: float, s_hi: float) -> str:
    """Figure 1: the slope ratio's interval against :data:`LINEAR_SLOPE_RATIO_BAND`, and the
    straight line's slope interval: positive over all of it for ``holds``; negative over all
    of it is ``fails`` whatever the ratio."""
    verdict = _band_verdict(r_lo, r_hi, LINEAR_SLOPE_RATIO_BAND)
    if verdict == HOLDS and not (_finite(s_lo) and s_lo > 0.0):
        verdict = INCONCLUSIVE
    if _finite(s_hi) and s_hi < 0.0:
        verdict = FAILS
    return verdict


def _gsm_verdict(s_lo: float, s_hi: float, r2_lo: float, r2_hi: float) -> str:
    """GSM on LLC: fails when the slope's interval lies below 0 or R^2's below 0.5; holds when
    the slope's lies above 0 and R^2's above 0.8; inconclusive otherwise."""
    if (_finite(s_hi) and s_hi < 0.0) or (_finite(r2_hi) and r2_hi < GSM_LLC_R2_FAILS):
        return FAILS
    if _finite(s_lo, r2_lo) and s_lo > 0.0 and r2_lo > GSM_LLC_R2_HOLDS:
        return HOLDS
    return INCONCLUSIVE


def _theory_verdict(rel: float) -> str:
    """Theory count: holds when the relative difference is within :data:`THEORY_REL_TOL`."""
    return HOLDS if _finite(rel) and abs(rel) <= THEORY_REL_TOL else FAILS


def _reproduced(ok: bool) -> str:
    return REPRODUCED if ok else NOT_REPRODUCED


def _published_band(value: float, band: tuple[float, float]) -> str:
    """As published: the point estimate within ``band`` (ends included)."""
    return _reproduced(_finite(value) and band[0] <= value <= band[1])


def _published_sign(value: float, *, negative: bool) -> str:
    """As published: the point estimate strictly on the claimed side of 0."""
    return _reproduced(_finite(value) and (value < 0.0 if negative else value > 0.0))


def _published_track(rho: float) -> str:
    """As published, Figure 13 (and Figure 3's trend): ``rho >= 0.5``."""
    return _reproduced(_finite(rho) and rho >= TRACKING_RHO)


def _published_fig1(ratio: float, slope: float) -> str:
    """As published, Figure 1: the ratio within the band and the straight line rising."""
    ok = _finite(ratio, slope) and slope > 0.0
    return _reproduced(ok and _published_band(ratio, LINEAR_SLOPE_RATIO_BAND) == REPRODUCED)


def _published_gsm(slope: float, r2: float) -> str:
    """As published, GSM on LLC: a rising line (slope > 0) with R^2 >= 0.8."""
    return _reproduced(_finite(slope, r2) and slope > 0.0 and r2 >= GSM_LLC_R2_HOLDS)


def _published_fig3(start: float, peak: float, end: float) -> str:
    """As published, Figure 3: start, peak and end each within :data:`FIG3_RUN_DATA_TOL` of
    :data:`PAPER_FIG3_RUN`."""
    got = {"start": start, "peak": peak, "end": end}
    ok = all(
        _finite(got[k]) and abs(got[k] / PAPER_FIG3_RUN[k] - 1.0) <= FIG3_RUN_DATA_TOL
        for k in PAPER_FIG3_RUN
    )
    return _reproduced(ok)


def _published_fig4(rho: float, fit: Mapping[str, Any]) -> str:
    """As published, Figure 4: a usable exponential-decay fit with ``a > 0`` (a decay) and a
    negative rank correlation."""
    decays = bool(fit.get("usable")) and _finite(fit.get("a", math.nan)) and fit["a"] > 0.0
    return _reproduced(decays and _published_sign(rho, negative=True) == REPRODUCED)


def _single_run_settings(df: pd.DataFrame, by: str | list[str]) -> list:
    counts = df.groupby(by).size()
    return [k for k, n in counts.items() if n < 2]


def _ci_text(b: Mapping[str, float], digits: int = 3) -> str:
    """``value (95% CI lo..hi)``; an undefined value or interval is said so, never "nan"."""
    value = fmt(b["value"], digits) if _finite(b["value"]) else "undefined"
    if not _finite(b["ci_low"], b["ci_high"]):
        return f"{value} (no interval)"
    return f"{value} (95% CI {fmt(b['ci_low'], digits)}..{fmt(b['ci_high'], digits)})"


def _failing_text(statuses: Sequence[str] | np.ndarray, what: str) -> str:
    """How many of the estimates an as-published statistic used fail the validity checks."""
    c = tables.status_counts(statuses)
    n = sum(c.values())
    bad = n - c[tables.STATUS_VALID]
    return (
        f"all {n} {what} used, {bad} of them fail the validity checks "
        f"({c[tables.STATUS_INVALID]} failed a check, "
        f"{c[tables.STATUS_NOT_A_MINIMUM]} not a minimum)"
    )


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
    return {"ratio": ratio, "slope": fits.fit_linear(p, y)["slope"]}


def _final_points(
    fit: Mapping[str, Any], use: str, by: str, need: int, unit: str, stat: Callable, boot: dict
) -> dict:
    """The points of a scaling fit over ``by`` (Figures 1 and 2) and which are used, with
    ``why`` there is no statistic: no usable estimate, fewer than ``need`` values of ``by``,
    or (validated) a value with a single valid run. ``unit`` names the values in that reason.
    Otherwise ``b``: ``stat`` bootstrapped over the used points (``boot``: seed and n_boot)."""
    pts = fit["points"]
    used = pts[pts["llc_used"]] if len(pts) else pts
    out: dict[str, Any] = {"fit": fit, "pts": pts, "used": used, "why": None}
    if used.empty:
        kind = "valid" if use == USE_VALID else "finite"
        out["why"] = f"no {kind} final LLC estimate in the study"
        return out
    n = used[by].nunique()
    single = _single_run_settings(used, by) if use == USE_VALID else []
    if n < need:
        valid = "valid " if use == USE_VALID else ""
        out["why"] = f"only {n} {unit} with a {valid}estimate (need {need})"
    elif single:
        name = "p =" if by == "p" else by
        out["why"] = f"{name} {', '.join(fmt(s) for s in single)} with a single valid run"
    else:
        out["b"] = stats.bootstrap(used[[by, "llc"]], stat, by=by, **boot)
    out["n"] = n
    return out


def _fig1_numbers(runs: pd.DataFrame, use: str, seed: int, n_boot: int) -> dict[str, Any]:
    fit = scaling.fit_llc_vs_p(runs, use=use)
    boot = {"seed": seed, "n_boot": n_boot}
    out = _final_points(fit, use, "p", 3, "value(s) of p", _slope_ratio, boot)
    if out["why"]:
        return out
    b, n_p = out["b"], out["n"]
    out.update(r=b["ratio"], s=b["slope"], n_p=n_p)
    text = (
        f"slope ratio {_ci_text(b['ratio'])}, band [0.67, 1.5]; straight-line slope "
        f"{_ci_text(b['slope'], 4)} per unit p, R² {fmt(fit['r2'], 3)}; width "
        f"{fmt(fit['width'])}, {n_p} values of p"
    )
    if b["ratio"]["n_failed"]:
        text += f"; ratio undefined in {b['ratio']['n_failed']} of {n_boot} resamples"
    out["text"] = text
    return out


def claim_fig1_linear_in_p(
    runs: pd.DataFrame, sampler: str, *, seed: int, n_boot: int, as_published: bool = False
) -> dict:
    """Figure 1: the final LLC grows linearly in p at fixed width.

    Statistic: a quadratic least-squares fit through the per-p means of the final LLC (at the
    study's most common width); the ratio of its slope at the largest p to its slope at the
    smallest p -- 1 for a straight line, (p_max/p_min) for LLC ~ p^2, about 0.66 for
    LLC ~ sqrt(p) over p = 23..53 -- with a 95% bootstrap interval (runs resampled within each
    p). Needs at least 3 values of p (validated: each with at least 2 valid runs).

    Verdict: holds when the interval lies within [2/3, 1.5] and the straight line's slope is
    positive over the whole interval; fails when the interval lies outside [2/3, 1.5] or the
    slope is negative over all of it; inconclusive otherwise (a ratio that is undefined in some
    resamples -- a slope <= 0 at one end -- counts against neither).

    As published: every final estimate of the paper's sampler, as the paper draws its line
    through all of them; reproduced when the ratio lies within [2/3, 1.5] and the straight
    line's slope is positive; not reproduced otherwise (an undefined ratio included).
    """
    stat = (
        "slope ratio of the per-p means: fitted slope at the largest p over slope at the "
        "smallest (quadratic least squares); 1 for a straight line"
    )
    return _scored(
        {"claim": "fig1_linear_in_p", "figure": "Fig. 1", "sampler": sampler},
        lambda use: _fig1_numbers(runs, use, seed, n_boot),
        "r",
        lambda g: _fig1_verdict(
            g["r"]["ci_low"], g["r"]["ci_high"], g["s"]["ci_low"], g["s"]["ci_high"]
        ),  # fmt: skip
        lambda g: _published_fig1(g["r"]["value"], g["s"]["value"]),
        "final LLC estimates",
        as_published,
        statistic=stat,
        paper_value="linear in p (ratio 1)",
    )


# --------------------------------------------------------------------------- Figure 2


def _exponent(df: pd.DataFrame) -> float:
    means = df.groupby("width")["llc"].mean()
    if (means <= 0).any() or means.size < 2:
        return math.nan
    return fits.fit_linear(np.log(means.index.to_numpy(float)), np.log(means.to_numpy()))["slope"]


def _fig2_numbers(runs: pd.DataFrame, use: str, seed: int, n_boot: int) -> dict[str, Any]:
    fit = scaling.fit_llc_vs_width(runs, use=use)
    out = _final_points(
        fit, use, "width", 2, "width(s)", _exponent, {"seed": seed, "n_boot": n_boot}
    )
    if out["why"]:
        return out
    e, n_w = out["b"]["value"], out["n"]
    if not math.isfinite(e["value"]):
        out["why"] = "a width's mean LLC is <= 0: no power law"
        return out
    out["e"] = e
    out["text"] = (
        f"alpha {_ci_text(e)}, band [0.8, 1.25]; through the origin c = {fmt(fit['prop_c'])} "
        f"per unit (R² {fmt(fit['prop_r2'], 3)}); free line intercept {fmt(fit['intercept'])}; "
        f"p {fmt(fit['p'])}, {n_w} widths"
    )
    return out


def claim_fig2_proportional_to_width(
    runs: pd.DataFrame, sampler: str, *, seed: int, n_boot: int, as_published: bool = False
) -> dict:
    """Figure 2: the final LLC is proportional to the width K at fixed p.

    Statistic: the exponent alpha of LLC ~ K^alpha, the least-squares slope of log(mean final
    LLC) on log K over the widths (at the study's most common p), with a 95% bootstrap
    interval (runs resampled within each width). Needs at least 2 widths (validated: with at
    least 2 valid runs each) and positive means.

    Verdict: holds when the interval lies within [0.8, 1.25]; fails when it lies outside it;
    inconclusive otherwise.

    As published: every final estimate of the paper's sampler; reproduced when alpha lies
    within [0.8, 1.25]; not reproduced otherwise.
    """
    stat = "exponent alpha of final LLC ~ K^alpha (log-log least squares over per-width means)"
    return _scored(
        {"claim": "fig2_proportional_to_width", "figure": "Fig. 2", "sampler": sampler},
        lambda use: _fig2_numbers(runs, use, seed, n_boot),
        "e",
        lambda g: _band_verdict(g["e"]["ci_low"], g["e"]["ci_high"], PROPORTIONAL_EXPONENT_BAND),
        lambda g: _published_band(g["e"]["value"], PROPORTIONAL_EXPONENT_BAND),
        "final LLC estimates",
        as_published,
        statistic=stat,
        paper_value="proportional to K (alpha = 1)",
    )


# --------------------------------------------------------------------------- Figures 3 and 13


def _track_runs(tracks: Mapping[str, Any], key: str, sampler: str | None = None) -> list[dict]:
    """The runs of a track claim (``tracks[key]``: one run or a list); with ``sampler``, those
    that have that sampler's track (a sampler may be drawn on a run of its own,
    ``figures.<key>.by_sampler``), or all of them when none has it."""
    value = tracks.get(key)
    if value is None:
        return []
    runs_ = [value] if isinstance(value, Mapping) else list(value)
    if sampler is None:
        return runs_
    own = [r for r in runs_ if sampler in r.get("llc", {})]
    return own or runs_


def _accuracy_text(st: Mapping[str, Any]) -> str:
    return (
        f"train acc 0.99 at step {fmt_step(st['t_mem'])}, validation acc 0.99 at step "
        f"{fmt_step(st['t_gen'])}"
    )


def _track_claim(
    tracks: Mapping[str, Any],
    key: str,
    base: dict,
    published: Callable[[list[dict], str], dict] | None,
    window: str,
    stat: str,
    paper: str,
) -> dict:
    """The row of a track claim (Figures 3 and 13) on the runs of ``tracks[key]``
    (:func:`_track_runs`) for ``base["sampler"]``: the validated verdict over ``window``
    (:func:`_track_validated`) and, with ``published``, the as-published columns
    ``published(runs, sampler)``."""
    runs_ = _track_runs(tracks, key, base["sampler"])
    row = _track_validated(runs_, base["sampler"], window=window, base=base, stat=stat, paper=paper)
    if published is not None:
        row.update(published(runs_, base["sampler"]))
    return row


def _track_validated(
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
        st = trajectory.track_statistics(r["train_log"], llc, window=window)
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
        verdicts.append(_track_verdict(st["spearman"], st["ci_low"], st["ci_high"]))
        text = (
            f"Spearman(LLC, val loss) {fmt(st['spearman'], 3)} (95% CI {fmt(st['ci_low'], 2)}.."
            f"{fmt(st['ci_high'], 2)}, {st['n_window']} valid estimates)"
        )
        if window == "grokking":
            text += (
                f"; LLC {fmt(st['llc_start'])} -> {fmt(st['llc_end'])} from memorisation (step "
                f"{fmt_step(st['t_mem'])}) to generalisation (step {fmt_step(st['t_gen'])})"
            )
        else:
            text += f"; {_accuracy_text(st)}"
        text += f"; highest valid LLC at step {fmt_step(st['peak_step'])} ({st['peak_position']})"
        reasons.append(text)
    verdict = verdicts[0] if len(set(verdicts)) == 1 else INCONCLUSIVE
    rhos = [s["spearman"] for s in per_run if s["n_window"] >= MIN_TRACK_ESTIMATES]
    lows = [s["ci_low"] for s in per_run if s["n_window"] >= MIN_TRACK_ESTIMATES]
    highs = [s["ci_high"] for s in per_run if s["n_window"] >= MIN_TRACK_ESTIMATES]
    return _row(
        **base,
        **common,
        n_valid=n_valid,
        value=float(np.mean(rhos)) if rhos else math.nan,
        ci_low=min(lows) if lows else math.nan,
        ci_high=max(highs) if highs else math.nan,
        verdict=verdict,
        reason=_join_runs(reasons),
    )


def _join_runs(texts: list[str]) -> str:
    return (
        texts[0]
        if len(texts) == 1
        else " | ".join(f"run {i + 1}: {t}" for i, t in enumerate(texts))
    )


def _published_trend(runs_: list[dict], sampler: str) -> dict:
    """Figure 13 as published: Spearman of every estimate with the validation loss, per run;
    reproduced when every run reproduces."""
    if not runs_:
        return _published(NOT_REPRODUCED, "no run given for this figure")
    verdicts, texts, rhos = [], [], []
    for r in runs_:
        llc = r["llc"].get(sampler)
        if llc is None:
            return _published(NOT_REPRODUCED, f"no LLC track for sampler {sampler}")
        st = trajectory.track_statistics(r["train_log"], llc, window="all", use=USE_ALL)
        statuses = tables.estimate_status(llc)
        rho = st["spearman"]
        verdicts.append(_published_track(rho))
        rhos.append((rho, st["ci_low"], st["ci_high"]))
        if st["n_window"] < 3:
            texts.append(
                f"{st['n_window']} finite estimate(s) over the run: no rank correlation; "
                f"{_accuracy_text(st)}"
            )
            continue
        ci = (
            f"95% CI {fmt(st['ci_low'], 2)}..{fmt(st['ci_high'], 2)}, "
            if _finite(st["ci_low"], st["ci_high"])
            else ""
        )
        texts.append(
            f"Spearman(LLC, val loss) {fmt(rho, 3)} ({ci}{st['n_window']} estimates); LLC "
            f"{fmt(st['first_llc'])} (step {fmt_step(st['first_step'])}) -> "
            f"{fmt(st['last_llc'])} (step {fmt_step(st['last_step'])}); {_accuracy_text(st)}; "
            f"{_failing_text(statuses, 'estimates')}"
        )
    value, lo, hi = rhos[0] if len(rhos) == 1 else (math.nan, math.nan, math.nan)
    if len(rhos) > 1 and all(_finite(x[0]) for x in rhos):
        value = float(np.mean([x[0] for x in rhos]))
        lo, hi = min(x[1] for x in rhos), max(x[2] for x in rhos)
    verdict = REPRODUCED if all(v == REPRODUCED for v in verdicts) else NOT_REPRODUCED
    return _published(verdict, _join_runs(texts), value, lo, hi)


def _is_paper_baseline(run: Mapping[str, Any] | None) -> bool:
    if not run:
        return False
    for key, want in PAPER_BASELINE.items():
        got = run.get(key)
        if isinstance(want, float):
            if not (_finite(got) and math.isclose(float(got), want, rel_tol=1e-9)):
                return False
        elif got != want:
            return False
    return True


def _published_run_data(runs_: list[dict], sampler: str) -> dict:
    """Figure 3 as published: the track against the paper's own run data."""
    if not runs_:
        return _published(NOT_REPRODUCED, "no run given for this figure")
    r = runs_[0]
    baseline = ", ".join(f"{k} {fmt(v)}" for k, v in PAPER_BASELINE.items())
    if not _is_paper_baseline(r.get("run")):
        return _published(
            NOT_APPLICABLE,
            f"Figure 3's run is not the paper's baseline ({baseline}): no run data to compare",
        )
    llc = r["llc"].get(sampler)
    if llc is None:
        return _published(NOT_REPRODUCED, f"no LLC track for sampler {sampler}")
    st = trajectory.track_statistics(r["train_log"], llc, window="grokking", use=USE_ALL)
    got = {"start": st["first_llc"], "peak": st["peak_llc"], "end": st["last_llc"]}
    at = {"start": st["first_step"], "peak": st["peak_step"], "end": st["last_step"]}
    if not _finite(got["peak"]):
        return _published(NOT_REPRODUCED, "no finite LLC estimate on the track")
    parts = []
    for k in ("start", "peak", "end"):
        dev = got[k] / PAPER_FIG3_RUN[k] - 1.0
        parts.append(
            f"{k} {fmt(got[k])} at step {fmt_step(at[k])} (paper {fmt(PAPER_FIG3_RUN[k])}, "
            f"{dev:+.1%})"
        )
    verdict = _published_fig3(got["start"], got["peak"], got["end"])
    text = (
        f"{'; '.join(parts)}: within {FIG3_RUN_DATA_TOL:.0%} of the paper's run data "
        f"{'at all three' if verdict == REPRODUCED else 'not at all three'}; "
        f"Spearman(LLC, val loss) over the grokking window {fmt(st['spearman'], 3)} "
        f"({st['n_window']} estimates); {_accuracy_text(st)}; "
        f"{_failing_text(tables.estimate_status(llc), 'estimates')}"
    )
    return _published(verdict, text, got["peak"])


def claim_fig3_llc_falls_with_generalisation(
    tracks: Mapping[str, Any], sampler: str, *, as_published: bool = False
) -> dict:
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

    As published: the paper's own run data for this run (SPEC section 10: LLC 4,304 at step
    0, ~4,885 at its peak, 4,757 at the end); every estimate of the paper's sampler; reproduced
    when the track's first estimate, its highest and its last are each within 5% of those;
    not reproduced otherwise; n/a when Figure 3's run is not the paper's baseline (p 53, K
    1024, lr 1e-4, wd 1e-4, batch 128, train_frac 0.4). Measured value: the peak.
    """
    base = {"claim": "fig3_llc_falls_with_generalisation", "figure": "Fig. 3", "sampler": sampler}
    stat = (
        "Spearman correlation of valid LLC with validation loss over the grokking window "
        "(positive: LLC falls as validation loss falls)"
    )
    paper = "LLC peaks, then falls as the model generalises (run data: 4304 -> ~4885 -> 4757)"
    published = _published_run_data if as_published else None
    return _track_claim(tracks, "fig3", base, published, "grokking", stat, paper)


def claim_fig13_transformer_llc_tracks_test_loss(
    tracks: Mapping[str, Any], sampler: str, *, as_published: bool = False
) -> dict:
    """Figure 13: in the transformer the LLC curve tracks the test (validation) loss. The
    paper's transformer does not grok (H.3.1: "despite there being no grokking in this
    example"); the claim is the correlation of the two curves, whatever their direction of
    travel, and the reason says whether this run memorised or generalised.

    Statistic: Spearman's rank correlation between the valid LLC estimates and the validation
    loss at the same checkpoints over the whole run, with a Fisher-z 95% interval (too narrow
    for a trajectory, as for Figure 3). Needs 5 valid estimates.

    Verdict: holds when rho >= 0.5 and the interval excludes 0; fails when the whole interval
    lies below 0.5; inconclusive otherwise.

    As published: every estimate of the paper's sampler over the run; reproduced when rho >=
    0.5 (the paper reports a correlation and no number); not reproduced otherwise.
    """
    base = {
        "claim": "fig13_transformer_llc_tracks_test_loss",
        "figure": "Fig. 13",
        "sampler": sampler,
    }
    stat = "Spearman correlation of valid LLC with validation loss over the run"
    paper = "LLC curve correlates with the test-loss curve (no grokking, H.3.1)"
    published = _published_trend if as_published else None
    return _track_claim(tracks, "fig13", base, published, "all", stat, paper)


# --------------------------------------------------------------------------- Figure 4 and H.3


def _spearman_stat(x: str, y: str) -> Callable[[pd.DataFrame], float]:
    def stat(df: pd.DataFrame) -> float:
        return stats.spearman(df[x], df[y])

    return stat


def claim_fig4_gsm_decays_with_lr(training: pd.DataFrame, *, seed: int, n_boot: int) -> list:
    """Figure 4: the grokking severity decays with the learning rate (one row per weight decay).

    Statistic: Spearman's rank correlation of GSM with the learning rate over the runs that
    generalised (runs that never did have no GSM and are counted in the reason, not entered as
    0), with a 95% bootstrap interval (runs resampled within each learning rate). The reason
    also gives the exponential-decay fit, or why it is not usable. Needs 3 learning rates
    (validated: with at least 2 generalised runs each).

    Verdict: holds when the whole interval lies below 0; fails when it lies above 0;
    inconclusive otherwise.

    As published: the paper fits an exponential decay through the runs; reproduced when that
    fit is usable and decays (a > 0, b > 0) and rho < 0; not reproduced otherwise. (No LLC:
    the same runs as the validated verdict.)
    """
    stat = "Spearman correlation of GSM with lr over runs that generalised (negative: decays)"
    fits = generalisation.fit_lr_vs_gsm(training, GSM_THRESHOLD)
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
                **_published(NOT_REPRODUCED, "no runs with finite lr, GSM and weight decay"),
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
        b = None
        if fit["n_lr"] >= 3:
            b = stats.bootstrap(
                gen[["lr", "gsm"]], _spearman_stat("lr", "gsm"), by="lr", n_boot=n_boot, seed=seed
            )["value"]
        if b is None:
            why = f"{fit['n_lr']} learning rate(s) with a generalised run (need 3)"
            row = _row(**base, reason=f"{why}; {tail}", **_published(NOT_REPRODUCED, why))
            rows.append(row)
            continue
        exp_text = text.describe_exponential(fit)
        published = _published(
            _published_fig4(b["value"], fit),
            f"rho {_ci_text(b)}; {exp_text}; {tail}",
            b["value"],
            b["ci_low"],
            b["ci_high"],
        )
        if single:
            why = f"lr {', '.join(fmt(s) for s in single)} with a single generalised run"
            rows.append(_row(**base, reason=f"{why}; {tail}", **published))
            continue
        rows.append(
            _row(
                **base,
                value=b["value"],
                ci_low=b["ci_low"],
                ci_high=b["ci_high"],
                verdict=_sign_verdict(b["ci_low"], b["ci_high"], negative=True),
                reason=f"rho {_ci_text(b)}; {exp_text}; {tail}",
                **published,
            )
        )
    return rows


def _h3_rows(runs: pd.DataFrame, use: str, seed: int, n_boot: int) -> dict[float | None, dict]:
    """Weight decay -> the numbers of its H.3 row, for :func:`_scored` (``None`` -> why there is
    no row per weight decay: no run at all)."""
    res = scaling.lr_vs_max_llc(runs, use=use)
    pts = res["points"]
    if pts.empty:
        why = "no runs with finite lr, maximum LLC and weight decay"
        return {None: {"why": why, "pts": pts, "used": pts}}
    valid = "valid " if use == USE_VALID else ""
    out: dict[float | None, dict] = {}
    for wd in res["per_wd"]:
        sub = pts[pts["weight_decay"] == wd]
        used = sub[sub["llc_used"]]
        out[wd] = entry = {"pts": sub, "used": used, "why": None}
        n_lr = used["lr"].nunique()
        single = _single_run_settings(used, "lr") if len(used) and use == USE_VALID else []
        if used.empty:
            entry["why"] = f"no {valid}maximum-LLC estimate"
        elif n_lr < 3:
            entry["why"] = f"{n_lr} learning rate(s) with a {valid}estimate (need 3)"
        elif single:
            entry["why"] = f"lr {', '.join(fmt(s) for s in single)} with a single valid run"
        else:
            b = stats.bootstrap(
                used[["lr", "llc"]], _spearman_stat("lr", "llc"), by="lr", n_boot=n_boot, seed=seed
            )["value"]
            entry.update(b=b, text=f"rho {_ci_text(b)}; {n_lr} learning rates")
    return out


def claim_h3_max_llc_decreases_with_lr(
    runs: pd.DataFrame, sampler: str, *, seed: int, n_boot: int, as_published: bool = False
) -> list:
    """Appendix H.3: the maximum of the LLC curve decreases with the learning rate (one row per
    weight decay).

    Statistic: Spearman's rank correlation of each run's maximum LLC with its learning rate,
    over runs whose maximum is a valid estimate, with a 95% bootstrap interval (runs resampled
    within each learning rate). Needs 3 learning rates (validated: with at least 2 valid runs
    each).

    Verdict: holds when the whole interval lies below 0; fails when it lies above 0;
    inconclusive otherwise.

    As published: every run's maximum under the paper's sampler ("negatively correlated",
    appendix H.3); reproduced when rho < 0; not reproduced otherwise. (runs.parquet's maximum
    is over a run's valid estimates where it has any, else over all of them.)
    """
    stat = "Spearman correlation of valid maximum LLC with lr (negative: decreases)"
    valid = _h3_rows(runs, USE_VALID, seed, n_boot)
    pub = _h3_rows(runs, USE_ALL, seed, n_boot) if as_published and None not in valid else valid
    return [
        _scored(
            {
                "claim": "h3_max_llc_decreases_with_lr",
                "figure": "H.3" if wd is None else f"H.3 (wd {fmt(wd)})",
                "sampler": sampler,
            },
            lambda use, wd=wd: (valid if use == USE_VALID else pub)[wd],
            "b",
            lambda g: _sign_verdict(g["b"]["ci_low"], g["b"]["ci_high"], negative=True),
            lambda g: _published_sign(g["b"]["value"], negative=True),
            "maximum-LLC estimates",
            as_published,
            statistic=stat,
            paper_value="decreases with lr",
        )
        for wd in valid
    ]


# --------------------------------------------------------------------------- GSM against LLC


def _gsm_line(df: pd.DataFrame) -> dict[str, float]:
    if df["llc"].nunique() < 2:
        return {"r2": math.nan, "slope": math.nan}
    f = fits.fit_linear(df["llc"], df["gsm"])
    return {"r2": f["r2"], "slope": f["slope"]}


def _gsm_groups(runs: pd.DataFrame, use: str) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    res = generalisation.fit_gsm_vs_llc(runs, GSM_THRESHOLD, use=use)
    pts = res["points"]
    used = pts[pts["generalised"] & pts["llc_used"]]
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
    return groups


def _gsm_numbers(all_: pd.DataFrame, sub: pd.DataFrame, use: str, seed: int, n_boot: int) -> dict:
    """The numbers of one group of the GSM claim, for :func:`_scored`: the runs that never
    generalised are counted in ``tail``; as published, ``text`` quotes the paper's line."""
    n_never = int((~all_["generalised"]).sum()) if len(all_) else 0
    tail = f"{n_never} run(s) never generalised (no GSM), left out" if n_never else None
    out: dict[str, Any] = {"pts": all_, "used": sub, "why": None, "tail": tail}
    if sub.empty:
        kind = "a valid" if use == USE_VALID else "a finite"
        out["why"] = f"no generalised run with {kind} final LLC"
        return out
    if len(sub) < 4 or sub["llc"].nunique() < 2:
        out["why"] = f"{len(sub)} usable run(s) (need 4)"
        return out
    by = [c for c in ("lr", "weight_decay") if c in sub]
    b = stats.bootstrap(
        sub[[*by, "llc", "gsm"]], _gsm_line, by=by or "llc", n_boot=n_boot, seed=seed
    )
    fit = fits.fit_linear(sub["llc"], sub["gsm"])
    line = f"GSM = {fmt(fit['slope'])} LLC {fit['intercept']:+.4g}"
    r2_slope = f"R² {_ci_text(b['r2'])}; slope {_ci_text(b['slope'], 4)}"
    if use == USE_VALID:
        text = f"{line}; {r2_slope}; {len(sub)} runs"
    else:
        quoted = f"paper {PAPER_GSM_LLC['slope']} LLC {PAPER_GSM_LLC['intercept']:+}"
        text = f"{line} ({quoted}); {r2_slope}"
    out.update(b, text=text)
    return out


def claim_gsm_linear_in_llc(
    runs: pd.DataFrame, sampler: str, *, seed: int, n_boot: int, as_published: bool = False
) -> list:
    """Section 6: GSM is a linear function of the final LLC (paper: GSM = 0.1288 LLC - 2.098,
    R^2 = 0.955, for its sampler), fitted per weight decay and pooled over weight decays.

    Statistic: R^2 of the least-squares line of GSM on the final LLC over runs that
    generalised, with 95% bootstrap intervals for R^2 and the slope (runs resampled within each
    (lr, weight decay) setting). The pooled row can show a line through clusters that are the
    weight decays; the per-weight-decay rows say whether the relation holds within one. Needs
    4 such runs.

    Verdict: holds when the slope's interval lies above 0 and R^2's interval above 0.8; fails
    when the slope's interval lies below 0 or R^2's interval below 0.5; inconclusive otherwise.

    As published: every generalised run's final estimate under the paper's sampler; reproduced
    when the slope is positive and R^2 >= 0.8 (the paper's 0.955 is a strong line; the slope's
    value depends on the study's widths and step budget, so it is quoted, not compared); not
    reproduced otherwise.
    """
    stat = "R² of GSM on valid final LLC over runs that generalised (slope in the reason)"
    paper = (
        f"GSM = {PAPER_GSM_LLC['slope']} LLC {PAPER_GSM_LLC['intercept']:+}, "
        f"R² {PAPER_GSM_LLC['r2']}"
    )
    pub = {f: (a, s) for f, a, s in _gsm_groups(runs, USE_ALL)} if as_published else {}

    def numbers(figure: str, all_: pd.DataFrame, sub: pd.DataFrame) -> Callable[[str], dict]:
        none = (all_.iloc[:0], all_.iloc[:0])
        return lambda use: _gsm_numbers(
            *((all_, sub) if use == USE_VALID else pub.get(figure, none)), use, seed, n_boot
        )

    return [
        _scored(
            {"claim": "gsm_linear_in_llc", "figure": figure, "sampler": sampler},
            numbers(figure, all_, sub),
            "r2",
            lambda g: _gsm_verdict(
                g["slope"]["ci_low"], g["slope"]["ci_high"], g["r2"]["ci_low"], g["r2"]["ci_high"]
            ),
            lambda g: _published_gsm(g["slope"]["value"], g["r2"]["value"]),
            "final LLC estimates",
            as_published,
            statistic=stat,
            paper_value=paper,
        )
        for figure, all_, sub in _gsm_groups(runs, USE_VALID)
    ]


# --------------------------------------------------------------------------- Figure 14


def _tian_text(lo: float, hi: float, band: tuple[float, float]) -> str:
    """What Figure 14's interval can and cannot reject: Tian's 2.75 itself, and the band."""
    tian = paper.TIAN_CRITICAL_RATIO
    if not _finite(lo, hi):
        return ""
    if lo <= tian <= hi:
        on_tian = f"the interval contains {tian}: Tian's value is not rejected"
    else:
        on_tian = f"the interval excludes {tian}: Tian's value itself is rejected"
    if band[0] <= lo and hi <= band[1]:
        on_band = "the boundary lies within the ±50% band, which is what the verdict tests"
    elif hi < band[0] or lo > band[1]:
        on_band = "the boundary lies outside the ±50% band"
    else:
        on_band = "the interval straddles an end of the ±50% band"
    return f"{on_tian}; {on_band}"


def claim_fig14_regime_boundary(training: pd.DataFrame, *, seed: int, n_boot: int) -> dict:
    """Figure 14: runs start to generalise near n = 2.75 p ln p (Tian 2025).

    Statistic: for each p, the bracket (x_fail, x_gen] of the scaled data size
    x = n_train / (p ln p) in which runs start to generalise (a setting generalises when at
    least half its runs end generalised;
    :func:`grokking_llc.science.generalisation.regime_boundary`);
    value: the midpoint of the brackets averaged over p. Interval: the 2.5% quantile of the
    mean lower end and the 97.5% quantile of the mean upper end over bootstrap resamples (runs
    resampled within each (p, train_frac) setting), so it includes the grid's own resolution.

    Verdict: holds when the interval lies within [2.75/1.5, 2.75*1.5] = [1.83, 4.13]; fails
    when it lies outside that band; inconclusive otherwise, or when some p never generalises or
    generalises already at its smallest size (an open bracket). The reason says both what the
    band verdict decides and whether the interval excludes 2.75 itself (a boundary inside the
    band can still reject Tian's exact value).

    As published: the paper reads a critical ratio of about 2.75 off its figure; reproduced
    when the boundary's value lies within [1.83, 4.13]; not reproduced otherwise, or with an
    open bracket. (No LLC.)
    """
    stat = "scaled data size n/(p ln p) where runs start to generalise (bracket mid, mean over p)"
    tian = paper.TIAN_CRITICAL_RATIO
    band = (tian / REGIME_BAND_FACTOR, tian * REGIME_BAND_FACTOR)
    base = dict(
        claim="fig14_regime_boundary",
        figure="Fig. 14",
        sampler=NO_SAMPLER,
        statistic=stat,
        paper_value=f"{tian} (Tian 2025)",
        n_valid=None,
    )
    res = generalisation.regime_boundary(training, GSM_THRESHOLD)
    pts = res["points"]
    if pts.empty:
        why = "no runs with finite p and n_train"
        return _row(**base, reason=why, **_published(NOT_REPRODUCED, why))
    brackets = "; ".join(
        f"p {fmt(r.p)}: ({fmt(r.x_fail, 3) if _finite(r.x_fail) else 'none'}, "
        f"{fmt(r.x_gen, 3) if _finite(r.x_gen) else 'never'}]"
        for r in res["per_p"].itertuples()
    )
    if res["open_p"]:
        why = f"open bracket for p = {', '.join(fmt(p) for p in res['open_p'])}; {brackets}"
        return _row(**base, n_runs=len(pts), reason=why, **_published(NOT_REPRODUCED, why))
    by = [c for c in ("p", "train_frac") if c in pts] or ["p", "n_train"]

    def stat_fn(df: pd.DataFrame) -> dict[str, float]:
        r = generalisation.regime_boundary(df, GSM_THRESHOLD)
        return {"lower": r["lower"], "upper": r["upper"]}

    cols = list(dict.fromkeys([*by, "p", "n_train", "final_train_acc", "final_val_acc"]))
    b = stats.bootstrap(pts[cols], stat_fn, by=by, n_boot=n_boot, seed=seed)
    lo, hi = b["lower"]["ci_low"], b["upper"]["ci_high"]
    verdict = _band_verdict(lo, hi, band)
    n_open = b["lower"]["n_failed"]
    reason = (
        f"brackets {brackets}; interval {fmt(lo, 3)}..{fmt(hi, 3)} against the band "
        f"[{fmt(band[0], 3)}, {fmt(band[1], 3)}]; {_tian_text(lo, hi, band)}"
    )
    if n_open:
        reason += f"; bracket open in {n_open} of {n_boot} resamples"
    published = _published(
        _published_band(res["mid"], band),
        f"boundary {fmt(res['mid'], 3)} (brackets {brackets}) against the band "
        f"[{fmt(band[0], 3)}, {fmt(band[1], 3)}] around the paper's {tian}",
        res["mid"],
        lo,
        hi,
    )
    return _row(
        **base,
        n_runs=len(pts),
        value=res["mid"],
        ci_low=lo,
        ci_high=hi,
        verdict=verdict,
        reason=reason,
        **published,
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

    As published: n/a -- the paper compares its closed forms with estimates only in scaling
    (SPEC section 5), and reports no count or absolute value to compare with.
    """
    p, K = int(baseline["p"]), int(baseline["width"])
    frac, dseed = float(baseline["train_frac"]), int(baseline["data_seed"])
    closed = theory.llc_quadratic(p, K)
    restricted = theory.data_restricted_bound(p, K, train_frac=frac, seed=dseed)
    n = len(theory.training_pairs(p, train_frac=frac, seed=dseed))
    rel = restricted / closed - 1.0
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
        verdict=_theory_verdict(rel),
        reason=reason,
        **_published(
            NOT_APPLICABLE,
            "the paper compares closed forms with estimates in scaling only (Figures 1-2); "
            "it reports no count to compare with",
        ),
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
    published: Sequence[str] = (),
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
            ``{"train_log": DataFrame, "llc": {sampler: DataFrame}}`` and optionally ``"run"``
            (its training settings: Figure 3's as-published verdict compares with the paper's
            run data only for the paper's baseline) -- the training log and the LLC track per
            named sampler of the figure's run(s).
        theory_baseline: the baseline run's ``p``, ``width``, ``train_frac``, ``data_seed``
            (None: no theory row).
        samplers: the named samplers, in the order rows should appear.
        studies: figure key -> study name, for ``fig1``, ``fig2``, ``fig4``,
            ``lr_vs_max_llc``, ``gsm_vs_llc`` and ``fig14`` (the config's
            ``figures.<key>.study``); a missing key uses every run.
        published: the named samplers that run the paper's protocol (``protocol: paper``,
            from the plan): their rows get the as-published verdicts; other samplers' rows
            get ``n/a`` there.
        seed, n_boot: the bootstrap's seed and number of resamples.
    """
    kw = {"seed": seed, "n_boot": n_boot}
    pub = set(published)

    def of(key: str, table: pd.DataFrame, sampler: str | None = None) -> pd.DataFrame:
        return tables.select(table, study=studies.get(key), sampler=sampler)

    rows: list[dict] = []
    for s in samplers:
        p = s in pub
        rows.append(claim_fig1_linear_in_p(of("fig1", runs, s), s, as_published=p, **kw))
        rows.append(claim_fig2_proportional_to_width(of("fig2", runs, s), s, as_published=p, **kw))
        rows.append(claim_fig3_llc_falls_with_generalisation(tracks, s, as_published=p))
    rows += claim_fig4_gsm_decays_with_lr(of("fig4", training), **kw)
    for s in samplers:
        rows += claim_h3_max_llc_decreases_with_lr(
            of("lr_vs_max_llc", runs, s), s, as_published=s in pub, **kw
        )
    for s in samplers:
        rows += claim_gsm_linear_in_llc(of("gsm_vs_llc", runs, s), s, as_published=s in pub, **kw)
    rows.append(claim_fig14_regime_boundary(of("fig14", training), **kw))
    for s in samplers:
        rows.append(claim_fig13_transformer_llc_tracks_test_loss(tracks, s, as_published=s in pub))
    if theory_baseline is not None:
        rows.append(claim_theory_count(theory_baseline))
    names = [s for s in samplers if s in pub]
    elsewhere = (
        f"as published: the paper's protocol runs under {', '.join(names)}"
        if names
        else "as published: no named sampler runs the paper's protocol (protocol: paper)"
    )
    for r in rows:
        if r["sampler"] != NO_SAMPLER and r["sampler"] not in pub:
            r.update(_published(NOT_APPLICABLE, elsewhere))
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["n_runs"] = df["n_runs"].astype("Int64")
    df["n_valid"] = pd.array(
        [
            pd.NA if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
            for v in df["n_valid"]
        ],
        dtype="Int64",
    )
    for c in ("value", "ci_low", "ci_high", *PUBLISHED_COLUMNS[:3]):
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


def _doc_paragraph(fn: Callable, start: str) -> str:
    doc = (fn.__doc__ or "").split("\n\n")
    rule = next((p for p in doc if p.strip().startswith(start)), "")
    return " ".join(rule.split())


def verdict_rules() -> dict[str, str]:
    """Claim name -> the validated verdict rule of its docstring (the paragraph starting
    "Verdict")."""
    return {name: _doc_paragraph(fn, "Verdict") for name, fn in CLAIM_FUNCTIONS.items()}


def published_rules() -> dict[str, str]:
    """Claim name -> the as-published rule of its docstring (the paragraph starting "As
    published")."""
    return {name: _doc_paragraph(fn, "As published") for name, fn in CLAIM_FUNCTIONS.items()}
