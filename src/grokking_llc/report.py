"""The scorecard rendered for people: a markdown table for the README's results section and an
HTML table for the Snakemake report (issues 11 and 20). Both show a claim's two verdicts side by
side -- validated (valid estimates only) and as published (the paper's protocol, every
estimate) -- under one sentence each on what they mean (:data:`MEANINGS`).

The README's section lives between :data:`START` and :data:`END`; :func:`update_readme` rewrites
only that region from ``claims.parquet`` and :func:`readme_is_current` tells whether a README's
region is what the table gives (a test uses it, so hand edits to the numbers fail the suite).
Run ``python -m grokking_llc.report README.md results/tables/claims.parquet`` to rewrite it.
"""

from __future__ import annotations

import html
import math
import os
import sys
from pathlib import Path

import pandas as pd

from grokking_llc.science.claims import (
    COLUMNS,
    PUBLISHED_COLUMNS,
    PUBLISHED_VERDICTS,
    VERDICTS,
    published_rules,
    verdict_rules,
)
from grokking_llc.science.text import fmt

START = "<!-- claims:start -->"
END = "<!-- claims:end -->"
VERDICT_MARK = {
    "holds": "holds",
    "fails": "**fails**",
    "inconclusive": "inconclusive",
    "reproduced": "reproduced",
    "not_reproduced": "**not reproduced**",
    "n/a": "n/a",
}
VERDICT_COLOUR = {
    "holds": "#d8f0d8",
    "fails": "#f6d5d5",
    "inconclusive": "#eeeeee",
    "reproduced": "#d8f0d8",
    "not_reproduced": "#f6d5d5",
    "n/a": "#ffffff",
}
# One sentence each on what the two verdicts mean (README and HTML report).
MEANINGS = (
    "**verdict** (validated): decided only on LLC estimates that pass the validity checks "
    "(SPEC section 10), from 95% intervals: `holds` or `fails` when the whole interval lies on "
    "one side of the claim's threshold, `inconclusive` when it straddles it or too few "
    "estimates are valid.",
    "**as published**: the paper's own statistic on every estimate of the sampler that runs "
    "the paper's protocol (SPEC section 4), valid or not, compared on its point value with "
    "what the paper reports, as the paper did: `reproduced` or `not reproduced` (`n/a`: "
    "nothing to compare, or another sampler's row).",
)


def _num(v: float) -> str:
    """3 significant digits; whole numbers of 1,000 and more in full (a count, not a ratio)."""
    return fmt(v, 3 if abs(float(v)) < 1000 else 7)


def _measured(row: pd.Series, suffix: str = "") -> str:
    v, lo, hi = row[f"value{suffix}"], row[f"ci_low{suffix}"], row[f"ci_high{suffix}"]
    if not _finite(v):
        return "-"
    if _finite(lo) and _finite(hi) and (lo != v or hi != v):
        return f"{_num(v)} [{_num(lo)}, {_num(hi)}]"
    return _num(v)


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _count(row: pd.Series) -> str:
    n, k = row["n_runs"], row["n_valid"]
    n_txt = "-" if pd.isna(n) else str(int(n))
    return n_txt if pd.isna(k) else f"{n_txt} ({int(k)} valid)"


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


NOT_SCORED = "not scored"
PREDATES = (
    "this table was written before the as-published verdicts existed (issue 20); a run of "
    "`make results` rewrites it"
)


def _check(claims: pd.DataFrame) -> pd.DataFrame:
    """``claims`` with every column of :data:`COLUMNS`; a table written before issue 20 (none
    of the as-published columns) gets them as ``not scored``. Raises ValueError otherwise."""
    if not any(c in claims for c in PUBLISHED_COLUMNS):
        claims = claims.assign(
            value_as_published=math.nan,
            ci_low_as_published=math.nan,
            ci_high_as_published=math.nan,
            verdict_as_published=NOT_SCORED,
            reason_as_published="",
        )
    missing = [c for c in COLUMNS if c not in claims]
    if missing:
        raise ValueError(f"claims table lacks columns {missing}")
    return claims


PUBLISHED = "_as_published"
HEAD = (
    "claim", "figure", "sampler", "paper", "valid estimates: measured [95% CI]", "runs",
    "verdict", "as published: measured [95% CI]", "as published", "why (verdict)",
    "why (as published)",
)  # fmt: skip


def _cells(r: pd.Series) -> list:
    """A row's cells in :data:`HEAD`'s order, before escaping (the two verdicts adjacent)."""
    return [
        r["claim"],
        r["figure"],
        r["sampler"],
        r["paper_value"],
        _measured(r),
        _count(r),
        r["verdict"],
        _measured(r, PUBLISHED),
        r["verdict" + PUBLISHED],
        r["reason"],
        r["reason" + PUBLISHED],
    ]


def _summary(claims: pd.DataFrame) -> str:
    ours = claims["verdict"].value_counts()
    pub = claims["verdict" + PUBLISHED].value_counts()
    a = ", ".join(f"{int(ours.get(v, 0))} {v}" for v in VERDICTS)
    kinds = [*PUBLISHED_VERDICTS, *(v for v in pub.index if v not in PUBLISHED_VERDICTS)]
    b = ", ".join(f"{int(pub.get(v, 0))} {v.replace('_', ' ')}" for v in kinds)
    tail = f" ({PREDATES})" if NOT_SCORED in pub.index else ""
    return f"Verdicts: {a}. As published: {b}{tail}."


def claims_markdown(claims: pd.DataFrame) -> str:
    """The README's results section: one sentence on each verdict (:data:`MEANINGS`), the
    scorecard table (one row per claim and sampler, the validated verdict beside the
    as-published one) and, under it, each claim's statistic and both rules (from
    :mod:`grokking_llc.science.claims`)."""
    claims = _check(claims)
    lines = [f"- {m}" for m in MEANINGS]
    lines += ["", "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for _, r in claims.iterrows():
        cells = _cells(r)
        cells[0] = f"`{cells[0]}`"
        cells[6] = VERDICT_MARK.get(cells[6], cells[6])
        cells[8] = VERDICT_MARK.get(cells[8], cells[8])
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    rules, pub_rules = verdict_rules(), published_rules()
    stats = claims.drop_duplicates("claim").set_index("claim")["statistic"]
    lines += ["", f"{_summary(claims)} How each is decided:", ""]
    for name in dict.fromkeys(claims["claim"]):
        stat = _cell(stats.get(name, ""))
        lines.append(
            f"- `{name}`: {stat}. {_cell(rules.get(name, ''))} {_cell(pub_rules.get(name, ''))}"
        )
    return "\n".join(lines) + "\n"


def readme_region(text: str) -> str:
    """The text between the markers (exclusive). Raises ValueError without both, in order."""
    i, j = text.find(START), text.find(END)
    if i < 0 or j < 0 or j < i:
        raise ValueError(f"README lacks the markers {START} ... {END} (in that order)")
    return text[i + len(START) : j]


def update_readme(text: str, claims: pd.DataFrame) -> str:
    """``text`` with the region between the markers replaced by :func:`claims_markdown`; the
    rest of the text is kept byte for byte."""
    readme_region(text)  # raises without markers
    i, j = text.find(START) + len(START), text.find(END)
    return text[:i] + "\n" + claims_markdown(claims) + text[j:]


def readme_is_current(text: str, claims: pd.DataFrame) -> bool:
    """Whether the README's region is exactly what :func:`update_readme` would write."""
    return update_readme(text, claims) == text


def _html_sentence(text: str) -> str:
    """A :data:`MEANINGS` sentence as escaped HTML (``**x**`` bold, backticks as code)."""
    parts = html.escape(text).split("**")
    out = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def claims_html(claims: pd.DataFrame) -> str:
    """The scorecard as an HTML table for the Snakemake report: one sentence on each verdict,
    then a row per claim and sampler with the statistic, both measured values and both verdicts
    side by side (cells escaped; verdict cells coloured)."""
    claims = _check(claims)
    head = [*HEAD[:4], "statistic", *HEAD[4:]]
    out = [f"<p>{_html_sentence(m)}</p>" for m in MEANINGS]
    out += [
        '<table class="scorecard" style="border-collapse:collapse;font-size:90%">',
        "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>",
        "<tbody>",
    ]
    for _, r in claims.iterrows():
        cells = _cells(r)
        cells.insert(4, r["statistic"])
        tds = []
        for i, v in enumerate(cells):
            text = html.escape(str(v))
            if i == 0:
                tds.append(f"<td><code>{text}</code></td>")
            elif i in (7, 9):  # the two verdicts
                tds.append(
                    f'<td style="background:{VERDICT_COLOUR.get(str(v), "#ffffff")}">{text}</td>'
                )
            else:
                tds.append(f"<td>{text}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    out += ["</tbody>", "</table>", f"<p>{html.escape(_summary(claims))}</p>"]
    return "\n".join(out) + "\n"


def rewrite_readme(readme_path: str | os.PathLike, claims_path: str | os.PathLike) -> bool:
    """Rewrite the README's region from ``claims.parquet``; True if the file changed."""
    path = Path(readme_path)
    text = path.read_text()
    new = update_readme(text, pd.read_parquet(claims_path))
    if new == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
    return True


if __name__ == "__main__":  # pragma: no cover - a thin command line around rewrite_readme
    if len(sys.argv) != 3:
        sys.exit("usage: python -m grokking_llc.report README.md results/tables/claims.parquet")
    changed = rewrite_readme(sys.argv[1], sys.argv[2])
    print(f"{sys.argv[1]}: {'rewritten' if changed else 'already current'}")
