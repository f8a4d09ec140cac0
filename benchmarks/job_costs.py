"""Per-rule job costs of a finished workflow run, from Snakemake's benchmark files, and what
the same jobs would take on a cluster node.

    .venv/bin/python benchmarks/job_costs.py results [--node-cores 32] [--wall-seconds 2400]

Reads ``<results>/benchmarks/<rule>/**/*.tsv`` (one per job: wall seconds, peak memory; the
``train_group_<id>`` rules are counted as one ``train_group`` row). Prints a markdown table:
jobs, summed job seconds, the longest job and the peak memory per rule, the total in core-hours
(every job here runs on one thread), and an estimate for a SLURM node of ``--node-cores`` cores:
the larger of (total job time / cores) and the longest chain of dependent jobs, which is bounded
below by the longest single job (a lower bound; queueing and start-up come on top).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def job_costs(results: Path) -> dict[str, dict[str, float]]:
    rules: dict[str, dict[str, float]] = defaultdict(lambda: {"jobs": 0, "s": 0.0, "max_s": 0.0,
                                                              "max_mb": 0.0})  # fmt: skip
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(results / "benchmarks").parts[0]
        with open(tsv) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if not rows:
            continue
        row = rows[-1]
        seconds = float(row["s"])
        mb = float(row.get("max_rss") or 0.0) if row.get("max_rss") not in ("-", "NA") else 0.0
        r = rules[rule]
        r["jobs"] += 1
        r["s"] += seconds
        r["max_s"] = max(r["max_s"], seconds)
        r["max_mb"] = max(r["max_mb"], mb)
    return dict(rules)


def table(rules: dict[str, dict[str, float]], node_cores: int, wall: float | None) -> str:
    total = sum(r["s"] for r in rules.values())
    longest = max((r["max_s"] for r in rules.values()), default=0.0)
    lines = ["| rule | jobs | job time (s) | longest job (s) | peak memory (MB) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, r in sorted(rules.items(), key=lambda kv: -kv[1]["s"]):
        lines.append(f"| {name} | {int(r['jobs'])} | {r['s']:,.0f} | {r['max_s']:,.0f} | "
                     f"{r['max_mb']:,.0f} |")  # fmt: skip
    lines.append(
        f"| **total** | {int(sum(r['jobs'] for r in rules.values()))} | "
        f"**{total:,.0f}** ({total / 3600:.2f} core-hours) | {longest:,.0f} | |"
    )
    node = max(total / node_cores, longest)
    lines += ["", f"On a {node_cores}-core SLURM node (one core per job): at least "
              f"{node / 60:.0f} min (max of job time / cores = {total / node_cores / 60:.1f} min "
              f"and the longest job = {longest / 60:.1f} min), plus queueing."]  # fmt: skip
    if wall:
        lines.append(f"Measured wall time here: {wall / 60:.1f} min for {total / 60:.1f} min of "
                     f"job time ({total / wall:.2f} jobs running on average).")  # fmt: skip
    return "\n".join(lines) + "\n"


def coverage(results: Path, full: str, partial: str) -> str:
    """Estimates per sampler (from the gathered tracks: rows, seconds per estimate by width,
    valid ones), and the cost of giving sampler ``partial`` the coverage of sampler ``full``:
    every checkpoint ``full`` estimated, at ``partial``'s measured seconds per estimate for
    that width (a track's ``seconds`` column is the job's wall time per estimate)."""
    import re

    import pandas as pd

    frames = []
    for path in (results / "llc").glob("*/*/*.parquet"):
        if "-chunk" in path.name:
            continue
        df = pd.read_parquet(path, columns=["run_id", "sampler_id", "step", "seconds", "valid"])
        frames.append(df.assign(track=path.stem))
    df = pd.concat(frames, ignore_index=True)
    runs = pd.read_parquet(results / "tables" / "runs.parquet", columns=["sampler_id", "sampler"])
    names = dict(zip(runs["sampler_id"], runs["sampler"], strict=False))
    df["sampler"] = df["sampler_id"].map(names)
    df["K"] = df["run_id"].map(lambda r: int(re.search(r"-K(\d+)-", r)[1]))
    df["model"] = df["run_id"].str.split("-").str[0]
    lines = ["| sampler | model | K | tracks | estimates | valid | s per estimate | job time (s) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (name, model, k), g in df.groupby(["sampler", "model", "K"]):
        n_tracks = g.groupby(["run_id", "track"]).ngroups
        lines.append(f"| {name} | {model} | {k} | {n_tracks} | {len(g)} | {int(g['valid'].sum())} "
                     f"| {g['seconds'].mean():.2f} | {g['seconds'].sum():,.0f} |")  # fmt: skip
    per = df[df["sampler"] == partial].groupby(["model", "K"])["seconds"].mean()
    want = df[df["sampler"] == full].groupby(["model", "K"]).size()
    cost = sum(n * per.get(key, per.mean()) for key, n in want.items())
    have = df.loc[df["sampler"] == partial, "seconds"].sum()
    lines += ["", f"Full coverage for `{partial}` (every checkpoint `{full}` estimates, "
              f"{int(want.sum())} estimates at `{partial}`'s measured seconds per estimate and "
              f"width): {cost:,.0f} s of job time, against {have:,.0f} s for its "
              f"{int((df['sampler'] == partial).sum())} estimates in this run."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--node-cores", type=int, default=32)
    ap.add_argument("--wall-seconds", type=float, default=None)
    ap.add_argument(
        "--coverage",
        nargs=2,
        metavar=("FULL", "PARTIAL"),
        help="also the estimates per sampler and PARTIAL's cost at FULL's coverage",
    )
    args = ap.parse_args(argv)
    print(table(job_costs(args.results), args.node_cores, args.wall_seconds))
    if args.coverage:
        print(coverage(args.results, *args.coverage))


if __name__ == "__main__":
    main()
