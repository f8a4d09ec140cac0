"""Tests of grokking_llc.report: the scorecard as a README section and an HTML table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from grokking_llc import report
from grokking_llc.science.claims import COLUMNS, PUBLISHED_COLUMNS


def _claims() -> pd.DataFrame:
    nan = math.nan
    rows = [
        ("fig1_linear_in_p", "Fig. 1", "paper", "slope ratio", "linear in p (ratio 1)",
         1.02, 0.91, 1.18, 12, 11, "holds", "ratio 1.02; 4 values of p",
         1.1, 0.95, 1.3, "reproduced", "ratio 1.1, all 12 used"),
        ("fig1_linear_in_p", "Fig. 1", "calibrated", "slope ratio", "linear in p (ratio 1)",
         nan, nan, nan, 12, 0, "inconclusive", "no valid final LLC | none",
         nan, nan, nan, "n/a", "as published: the paper's protocol runs under paper"),
        ("theory_count", "Sec. 5", "n/a", "count", "80896 (closed form)",
         29759.5, 29759.5, 29759.5, 0, None, "fails", "closed form 80896 <b>",
         nan, nan, nan, "n/a", "nothing to compare"),
    ]  # fmt: skip
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["n_valid"] = pd.array([11, 0, pd.NA], dtype="Int64")
    return df


README = """# Title

Intro text.

## Results
<!-- claims:start -->
old table
<!-- claims:end -->

## Tail
kept as is
"""


def test_markdown_table_rows_and_cells():
    md = report.claims_markdown(_claims())
    lines = md.splitlines()
    # one sentence on each verdict above the table
    assert lines[0].startswith("- **verdict** (validated): decided only on LLC estimates")
    assert lines[1].startswith("- **as published**: the paper's own statistic on every")
    head = next(i for i, ln in enumerate(lines) if ln.startswith("| claim"))
    assert lines[head] == (
        "| claim | figure | sampler | paper | valid estimates: measured [95% CI] | runs | "
        "verdict | as published: measured [95% CI] | as published | why (verdict) | "
        "why (as published) |"
    )
    rows = [ln for ln in lines[head + 2 :] if ln.startswith("| `")]
    assert len(rows) == 3
    # the two verdicts side by side, each after its own measured value
    assert "| 1.02 [0.91, 1.18] | 12 (11 valid) | holds | 1.1 [0.95, 1.3] | reproduced |" in rows[0]
    # a missing value is a dash; a "|" inside a cell is escaped
    assert "| - | 12 (0 valid) | inconclusive | - | n/a |" in rows[1]
    assert "no valid final LLC \\| none" in rows[1]
    assert "| 29759.5 | 0 | **fails** | - | n/a | closed form 80896 <b> | nothing to" in rows[2]
    assert (
        "Verdicts: 1 holds, 1 fails, 1 inconclusive. As published: 1 reproduced, "
        "0 not reproduced, 2 n/a."
    ) in md
    assert "- `fig1_linear_in_p`: slope ratio. Verdict: holds when" in md
    assert "the slope is negative over all of it; inconclusive otherwise (a ratio that is" in md
    assert "As published: every final estimate of the paper's sampler" in md
    assert "- `theory_count`: count. Verdict: holds when the two agree within 1%" in md
    assert "As published: n/a -- the paper compares its closed forms" in md
    failed = _claims().assign(verdict_as_published="not_reproduced")
    assert "| **not reproduced** |" in report.claims_markdown(failed)


def test_a_table_from_before_the_as_published_verdicts_is_rendered_not_scored():
    old = _claims().drop(columns=list(PUBLISHED_COLUMNS))
    md = report.claims_markdown(old)
    assert md.count("| - | not scored |") == 3
    assert "As published: 0 reproduced, 0 not reproduced, 0 n/a, 3 not scored (" in md
    with pytest.raises(ValueError, match="lacks columns"):
        report.claims_markdown(_claims().drop(columns=["reason_as_published"]))


def test_update_readme_rewrites_only_the_region():
    claims = _claims()
    new = report.update_readme(README, claims)
    assert new.startswith("# Title\n\nIntro text.\n\n## Results\n<!-- claims:start -->\n")
    assert new.endswith("<!-- claims:end -->\n\n## Tail\nkept as is\n")
    assert "old table" not in new
    assert report.readme_region(new) == "\n" + report.claims_markdown(claims)
    assert report.update_readme(new, claims) == new  # idempotent
    assert report.readme_is_current(new, claims)
    assert not report.readme_is_current(README, claims)


def test_readme_check_fails_when_a_number_differs():
    claims = _claims()
    text = report.update_readme(README, claims)
    edited = text.replace("1.02 [0.91", "1.03 [0.91")
    assert edited != text and not report.readme_is_current(edited, claims)
    changed = claims.copy()
    changed.loc[0, "verdict"] = "fails"
    assert not report.readme_is_current(text, changed)


def test_markers_are_required_in_order():
    with pytest.raises(ValueError, match="markers"):
        report.update_readme("no markers here", _claims())
    with pytest.raises(ValueError, match="markers"):
        report.readme_region(f"{report.END}\n{report.START}")
    with pytest.raises(ValueError, match="lacks columns"):
        report.claims_markdown(_claims().drop(columns=["reason"]))


def test_html_table_escapes_and_colours():
    html = report.claims_html(_claims())
    assert html.count("<tr>") == 4  # header + 3 rows
    assert "closed form 80896 &lt;b&gt;" in html and "80896 <b>" not in html
    assert html.startswith("<p><b>verdict</b> (validated): decided only on LLC estimates")
    assert "<p><b>as published</b>: the paper&#x27;s own statistic" in html
    assert '<td style="background:#f6d5d5">fails</td>' in html
    assert (
        '<td style="background:#d8f0d8">holds</td><td>1.1 [0.95, 1.3]</td>'
        '<td style="background:#d8f0d8">reproduced</td>'
    ) in html
    assert "<td>12 (11 valid)</td>" in html
    assert "<th>as published</th>" in html and "<th>why (as published)</th>" in html


def test_rewrite_readme_file(tmp_path):
    readme, table = tmp_path / "README.md", tmp_path / "claims.parquet"
    readme.write_text(README)
    _claims().to_parquet(table)
    assert report.rewrite_readme(readme, table) is True
    assert report.readme_is_current(readme.read_text(), pd.read_parquet(table))
    assert report.rewrite_readme(readme, table) is False
