"""Benchmark: training runs one at a time (train.train) vs stacked (train_many), SPEC section 3.

The paper's training setting (SPEC section 3: p=53, train_frac 0.4, batch 128, Adam lr 1e-4,
wd 1e-5, a checkpoint every 100 steps with the full-split evaluation and the two files it
writes), widths K in {64, 256, 1024}, ``torch.set_num_threads(1)``. For each K: one run
trained alone by :func:`grokking_llc.training.train.train`, and R = 1, 3, 6 runs (seeds 0..R-1)
trained together by :func:`grokking_llc.training.train_many.train_many`, each ``--steps`` steps from
scratch in a fresh work dir, the four measurements interleaved and repeated ``--repeats``
times. Reported: run-steps per second (R * steps / wall seconds; one run at a time is
``steps / wall seconds`` whatever R is), median over repeats, and the speed-up of the stack
over training its R runs one after the other. Also checked in the same run: run 0 of every
stack ends with the bits of train.train's run 0 (``identical``).

    python benchmarks/bench_train.py                # table to stdout
    python benchmarks/bench_train.py --append       # and append it to benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from grokking_llc.core.data import make_split
from grokking_llc.core.settings import TrainConfig
from grokking_llc.training.train import train
from grokking_llc.training.train_many import train_many

HERE = Path(__file__).resolve().parent
HEADING = "## Training: one run vs batched runs"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--stacks", type=int, nargs="+", default=[1, 3, 6])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--append", action="store_true", help="append to benchmarks/RESULTS.md")
    return ap.parse_args(argv)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None) -> str:
    args = parse_args(argv)
    torch.set_num_threads(1)
    split = make_split(53, 0.4, 0)
    with tempfile.TemporaryDirectory() as d:  # warm-up: first-call costs are not per step
        train(TrainConfig(p=53, width=64, max_steps=100), split, Path(d) / "a")
        train_many([TrainConfig(p=53, width=64, max_steps=100)], [split], [Path(d) / "b"])
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    rows = []
    for width in args.widths:
        cfgs = [
            TrainConfig(p=53, width=width, seed=s, max_steps=args.steps, checkpoint_every=100)
            for s in range(max(args.stacks))
        ]
        one: list[float] = []
        many: dict[int, list[float]] = {r: [] for r in args.stacks}
        identical = True
        for _ in range(args.repeats):
            d = Path(tempfile.mkdtemp(prefix="bench_train_"))
            try:
                sec, ref = timed(lambda d=d, c=cfgs[0]: train(c, split, d / "one"))
                one.append(sec)
                for r in args.stacks:
                    dirs = [d / f"R{r}_{i}" for i in range(r)]
                    sec, res = timed(
                        lambda r=r, dirs=dirs, cfgs=cfgs: train_many(cfgs[:r], [split] * r, dirs)
                    )
                    many[r].append(sec)
                    identical &= all(
                        torch.equal(res[0].checkpoints["params"][k], ref.checkpoints["params"][k])
                        for k in ("W", "V")
                    ) and res[0].log.equals(ref.log)
            finally:
                shutil.rmtree(d, ignore_errors=True)
        one_rate = args.steps / statistics.median(one)
        for r in args.stacks:
            rate = r * args.steps / statistics.median(many[r])
            rows.append((width, r, one_rate, rate, rate / one_rate, identical))
        print(f"K={width} done", flush=True)
    load_after = os.getloadavg()
    minutes = (time.perf_counter() - t_start) / 60

    lines = [
        HEADING,
        "",
        f"Written by `benchmarks/bench_train.py` (`python benchmarks/bench_train.py --append`). "
        f"p=53, train_frac 0.4, batch 128, Adam lr 1e-4, wd 1e-5 (SPEC section 3), "
        f"{args.steps} steps from scratch per run, a checkpoint every 100 steps (evaluation "
        f"on the full splits, weights and state files written) included, "
        f"`torch.set_num_threads(1)`, {args.repeats} interleaved repeats, median.",
        "",
        f"Conditions: {os.cpu_count()} CPUs ({cpu_name()}), torch {torch.__version__}, "
        f"Python {platform.python_version()}; load average (1/5/15 min) "
        f"{'/'.join(f'{x:.2f}' for x in load_before)} before, "
        f"{'/'.join(f'{x:.2f}' for x in load_after)} after; wall time {minutes:.1f} min.",
        "",
        "Columns: run-steps/s = runs x steps / wall seconds. One at a time: train.train, one "
        "run after another (the rate does not depend on R). Stacked: train_many with R runs "
        "(seeds 0..R-1) in one stack. Speed-up = stacked / one at a time, i.e. the wall time of "
        "training the R runs one after another over the wall time of training them together. "
        "Identical: run 0 of every stack had the bits of train.train's run (log and weights).",
        "",
        "| K | R | one at a time, run-steps/s | stacked, run-steps/s | speed-up | identical |",
        "|---|---|---|---|---|---|",
    ]
    for width, r, one_rate, rate, ratio, identical in rows:
        lines.append(
            f"| {width} | {r} | {one_rate:.0f} | {rate:.0f} | **{ratio:.2f}x** | {identical} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        path = HERE / "RESULTS.md"
        with open(path, "a") as fh:
            fh.write("\n" + text)
    return text


if __name__ == "__main__":
    main()
