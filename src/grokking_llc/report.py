"""The scorecard rendered for people: a markdown table for the README's results section and an
HTML table for the Snakemake report (issue 11).

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

from grokking_llc.analysis import fmt
from grokking_llc.claims import COLUMNS, verdict_rules

START = "<!-- claims:start -->"
END = "<!-- claims:end -->"
VERDICT_MARK = {"holds": "holds", "fails": "**fails**", "inconclusive": "inconclusive"}
VERDICT_COLOUR = {"holds": "#d8f0d8", "fails": "#f6d5d5", "inconclusive": "#eeeeee"}


def _num(v: float) -> str:
    """3 significant digits; whole numbers of 1,000 and more in full (a count, not a ratio)."""
    return fmt(v, 3 if abs(float(v)) < 1000 else 7)


def _measured(row: pd.Series) -> str:
    v, lo, hi = row["value"], row["ci_low"], row["ci_high"]
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


def _check(claims: pd.DataFrame) -> None:
    missing = [c for c in COLUMNS if c not in claims]
    if missing:
        raise ValueError(f"claims table lacks columns {missing}")


def claims_markdown(claims: pd.DataFrame) -> str:
    """The README's results section: the scorecard table (one row per claim and sampler) and,
    under it, each claim's statistic and verdict rule (from :mod:`grokking_llc.claims`)."""
    _check(claims)
    head = (
        "| claim | figure | sampler | paper | measured [95% CI] | runs | verdict | why |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for _, r in claims.iterrows():
        cells = [
            f"`{r['claim']}`",
            r["figure"],
            r["sampler"],
            r["paper_value"],
            _measured(r),
            _count(r),
            VERDICT_MARK.get(r["verdict"], r["verdict"]),
            r["reason"],
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    counts = claims["verdict"].value_counts()
    summary = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in ("holds", "fails", "inconclusive"))
    rules = verdict_rules()
    stats = claims.drop_duplicates("claim").set_index("claim")["statistic"]
    lines += ["", f"Verdicts: {summary}. How each is decided:", ""]
    for name in dict.fromkeys(claims["claim"]):
        stat = _cell(stats.get(name, ""))
        lines.append(f"- `{name}`: {stat}. {_cell(rules.get(name, ''))}")
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


def claims_html(claims: pd.DataFrame) -> str:
    """The scorecard as an HTML table for the Snakemake report (cells escaped; the verdict
    cell coloured)."""
    _check(claims)
    head = ["claim", "figure", "sampler", "statistic", "paper", "measured [95% CI]", "runs",
            "verdict", "why"]  # fmt: skip
    out = [
        '<table class="scorecard" style="border-collapse:collapse;font-size:90%">',
        "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>",
        "<tbody>",
    ]
    for _, r in claims.iterrows():
        verdict = str(r["verdict"])
        cells = [
            f"<td><code>{html.escape(str(r['claim']))}</code></td>",
            *[
                f"<td>{html.escape(str(v))}</td>"
                for v in (
                    r["figure"],
                    r["sampler"],
                    r["statistic"],
                    r["paper_value"],
                    _measured(r),
                    _count(r),
                )  # fmt: skip
            ],
            f'<td style="background:{VERDICT_COLOUR.get(verdict, "#ffffff")}">'
            f"{html.escape(verdict)}</td>",
            f"<td>{html.escape(str(r['reason']))}</td>",
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table>"]
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
