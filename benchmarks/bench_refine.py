"""Adaptive checkpoint selection (grokking_llc.sampling.refine) replayed on finished LLC tracks.

    .venv/bin/python benchmarks/bench_refine.py results/llc/<run>/<sampler>/every2.parquet \
        results/runs/<run>/train_log.parquet [--append]

Every estimate depends only on its checkpoint (seed = sampler seed + training step), so the
selection a refine setting would make on a track can be replayed exactly from a full track: the
``estimate`` callback looks the value up instead of sampling. For each setting the table gives the
estimates used against the track's N, and how far the curve drawn through the selected
checkpoints (linear interpolation) strays from the full track: the largest and the mean absolute
error over the skipped checkpoints, as a fraction of the track's LLC range.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from grokking_llc.sampling.refine import RefineSettings, select_adaptively

HERE = Path(__file__).resolve().parent
GRID = ((4, 0.1, 0.5), (4, 0.05, 0.5), (8, 0.1, 0.5), (4, 0.1, 1.0))
SETTINGS = [RefineSettings(coarse=c, tolerance=t, max_fraction=f) for c, t, f in GRID]


def replay(track: pd.DataFrame, log: pd.DataFrame, settings: RefineSettings):
    track = track.sort_values("step", ignore_index=True)
    llc = track["llc_mean"].to_numpy(dtype=float)
    steps = track["step"].to_numpy()
    by_step = log.set_index("step")
    accs = [(float(by_step.at[s, "train_acc"]), float(by_step.at[s, "val_acc"])) for s in steps]
    kinds = select_adaptively(accs, lambda pos: [llc[k] for k in pos], settings)
    chosen = np.array(sorted(kinds))
    curve = np.interp(steps, steps[chosen], llc[chosen])
    skipped = np.setdiff1d(np.arange(len(steps)), chosen)
    spread = np.nanmax(llc) - np.nanmin(llc)
    err = np.abs(curve[skipped] - llc[skipped]) / spread if len(skipped) else np.zeros(1)
    refined = sum(v == "refined" for v in kinds.values())
    return len(steps), len(chosen), refined, float(np.max(err)), float(np.mean(err))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="+", help="track.parquet train_log.parquet [...]")
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args(argv)
    if len(args.pairs) % 2:
        sys.exit("give track and training log in pairs")
    rows = [
        "| track | coarse | tolerance | max_fraction | N | estimated | refined | "
        "max error / range | mean error / range |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for track_path, log_path in zip(args.pairs[::2], args.pairs[1::2], strict=True):
        track, log = pd.read_parquet(track_path), pd.read_parquet(log_path)
        name = "/".join(Path(track_path).parts[-3:])
        for s in SETTINGS:
            n, used, refined, emax, emean = replay(track, log, s)
            rows.append(
                f"| `{name}` | {s.coarse} | {s.tolerance:g} | {s.max_fraction:g} | {n} "
                f"| {used} ({used / n:.0%}) | {refined} | {emax:.3f} | {emean:.3f} |"
            )
    text = "\n".join(["## Adaptive checkpoint selection, replayed on finished tracks", "",
                      "Written by `benchmarks/bench_refine.py` (exact replay: an estimate "
                      "depends only on its checkpoint).", "", *rows, ""]) + "\n"  # fmt: skip
    print(text)
    if args.append:
        with open(HERE / "RESULTS.md", "a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
