"""Throughput of valid-estimate work (issue 14), measured side by side in one run.

    .venv/bin/python benchmarks/bench_throughput.py            # table to stdout
    .venv/bin/python benchmarks/bench_throughput.py --append   # also appended to RESULTS.md

Sections (one thread, ``torch.set_num_threads(1)``, the pipeline's setting per job):

1. Checkpoints batched: per-estimate seconds of the paper sampler (SPEC section 4, validity
   diagnostics on, as the pipeline runs it) with S = 1, 2, 4, 8 checkpoints stacked along the
   chain axis (:func:`grokking_llc.sampling.llc.estimate_llc_many`), per width; the numbers are
   identical
   whatever S (checked here too). Also the cost of the diagnostics: the same run with none.
2. The calibrated protocol (the default calibration's fallback setting, 4 chains x 1,500
   steps): devinterp's sampler against the fast backend, per estimate, and their ratio.
3. Fixed against adaptive length (SPEC section 10): the calibrated setting with a cap of
   ``--cap`` steps, run to the cap, and run adaptively (stop when stationary with ESS >=
   ``target_ess``): steps used and seconds.
4. Per-step cost of the fast backend against this machine's ceilings measured in the same run:
   float32 matmul GFLOP/s, elementwise add GB/s and Gaussian draws per second.
5. With ``--training``: one against batched training (``benchmarks/bench_train.py``'s table,
   run in this same process), so every ratio of issue 14 comes from one run.

Medians of interleaved repeats; the load average before and after is printed, since other
processes on a shared machine move every number (the ratios, measured in one run, less so).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_llc import conditions, machine_ceilings, quiet, sgld_step_cost, train_checkpoints  # noqa: E402

from grokking_llc.core.data import split_tensors  # noqa: E402
from grokking_llc.core.model import build_model, centred_mse  # noqa: E402
from grokking_llc.sampling.llc import default_diag_every, estimate_llc_many  # noqa: E402
from grokking_llc.training.checkpoints import checkpoint_state  # noqa: E402

PAPER = dict(lr=5e-4, localization=5.0, num_chains=3, num_burnin_steps=100, num_draws=500,
             batch_size=128)  # fmt: skip
# The default calibration's chosen (fallback) setting at the baseline (README, "Measured").
CALIBRATED = dict(lr=7.4e-4, nbeta=10240.0, localization=100.0, num_chains=4,
                  num_burnin_steps=300, num_draws=1200, batch_size=128)  # fmt: skip


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cap", type=int, default=6000, help="adaptive-length cap (section 3)")
    ap.add_argument("--target-ess", type=float, default=100.0)
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--append", action="store_true")
    ap.add_argument("--training", action="store_true", help="also bench_train.py's table")
    return ap.parse_args(argv)


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def many(model, states, x, y, cfg, **kwargs):
    """(seconds, results) of one estimate_llc_many call, seeds 0, 1, ..."""
    return timed(estimate_llc_many, model, states, x, y, centred_mse, cfg,
                 seeds=list(range(len(states))), **kwargs)  # fmt: skip


def gaussian_rate(n: int = 1 << 24) -> float:
    buf = torch.empty(n)
    gen = torch.Generator().manual_seed(0)
    buf.normal_(generator=gen)
    best = min(timed(buf.normal_, generator=gen)[0] for _ in range(3))
    return n / best


def setup(width: int, p: int = 53):
    cfg, ckpts, split, _ = train_checkpoints(p, width, 800)
    model = build_model("quadratic", p, width=width)
    x, y = split_tensors(split, "train", "cpu")
    states = [checkpoint_state(ckpts, i) for i in range(len(ckpts["steps"]))][-8:]
    return model, x, y, states


def batched_section(args, log) -> list[str]:
    rows = ["| K | params | S = checkpoints per batch | s per estimate | vs S=1 | same numbers |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    diag_rows = []
    for width in args.widths:
        model, x, y, states = setup(width)
        n_params = sum(p.numel() for p in model.parameters())
        times = {s: [] for s in args.batches}
        ref = None
        off = []
        for _ in range(args.repeats):
            for s in args.batches:
                dt, res = many(model, states[:s], x, y, PAPER, backend="fast")
                times[s].append(dt / s)
                if s == 1:
                    ref = res[0].llc_mean
                elif ref is not None and not np.isclose(res[0].llc_mean, ref, rtol=0, atol=0):
                    log(f"K={width} S={s}: numbers differ ({res[0].llc_mean} vs {ref})")
                    times[s].append(float("nan"))
            dt, _ = many(model, states[:1], x, y, PAPER, backend="fast", diag_every=0)
            off.append(dt)
        base = statistics.median(times[1])
        for s in args.batches:
            med = statistics.median(times[s])
            same = "yes" if not any(np.isnan(times[s])) else "NO"
            rows.append(
                f"| {width} | {n_params:,} | {s} | {med:.3f} | {base / med:.2f}x | {same} |"
            )
            log(rows[-1])
        diag_rows.append(
            f"| {width} | {statistics.median(off):.3f} | {base:.3f} | "
            f"{base / statistics.median(off):.2f}x | {default_diag_every(600)} |"
        )
    out = ["### 1. Checkpoints batched (paper sampler, 3 chains x 600 steps, diagnostics on)", "",
           *rows, "", "Cost of the validity diagnostics (S = 1):", "",
           "| K | s/estimate, no diagnostics | s/estimate, diagnostics | ratio | diag_every |",
           "|---|---|---|---|---|", *diag_rows, ""]  # fmt: skip
    return out


def calibrated_section(args, log) -> list[str]:
    rows = ["| K | devinterp s/estimate | fast s/estimate | speed-up | LLC devinterp | LLC fast |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for width in (256, 1024):
        model, x, y, states = setup(width)
        with quiet():
            dt_dev, [r_dev] = many(model, states[-1:], x, y, CALIBRATED, backend="devinterp")
        dt_fast, [r_fast] = many(model, states[-1:], x, y, CALIBRATED, backend="fast")
        rows.append(f"| {width} | {dt_dev:.2f} | {dt_fast:.2f} | **{dt_dev / dt_fast:.1f}x** | "
                    f"{r_dev.llc_mean:.1f} ± {r_dev.llc_std:.1f} | "
                    f"{r_fast.llc_mean:.1f} ± {r_fast.llc_std:.1f} |")  # fmt: skip
        log(rows[-1])
    return ["### 2. The calibrated protocol: devinterp against the fast backend", "",
            "4 chains x (300 + 1,200) steps, eps 7.4e-4, nbeta 10,240, gamma 100, batch 128, "
            "p = 53, checkpoint at training step 800; the fast backend with its diagnostics.",
            "", *rows, ""]  # fmt: skip


def adaptive_section(args, log) -> list[str]:
    rows = [
        "| K | run | steps per chain | seconds | LLC | stationary | ESS |",
        "|---|---|---|---|---|---|---|",
    ]
    for width in (64, 256):
        model, x, y, states = setup(width)
        for label, extra in (("fixed at the cap", {"num_draws": args.cap - 300}),
                             ("adaptive", {"max_steps": args.cap,
                                           "target_ess": args.target_ess})):  # fmt: skip
            cfg = {**CALIBRATED, **extra}
            dt, [res] = many(model, states[-1:], x, y, cfg, backend="fast")
            s = res.summary()
            rows.append(f"| {width} | {label} | {s['num_steps']} | {dt:.2f} | "
                        f"{s['llc_mean']:.1f} ± {s['llc_se']:.1f} | {s['stationary']} | "
                        f"{s['ess']:.0f} |")  # fmt: skip
            log(rows[-1])
    return [f"### 3. Fixed against adaptive length (cap {args.cap} steps, target ESS "
            f"{args.target_ess:g})", "", *rows, ""]  # fmt: skip


def ceiling_section(ceil, gauss, log) -> list[str]:
    rows = ["| K | ms per step (3 chains) | GFLOP/s (of matmul peak) | GB/s (of add) | "
            "draws/s (of Gaussian ceiling) |", "|---|---|---|---|---|"]  # fmt: skip
    for width in (256, 1024):
        model, x, y, states = setup(width)
        cfg = {**PAPER, "num_burnin_steps": 100, "num_draws": 900}
        dt, _ = many(model, states[-1:], x, y, cfg, backend="fast", diag_every=0)
        step = dt / 1000
        flops, nbytes = sgld_step_cost(3, 128, width, 53)
        n_params = 3 * 3 * 53 * width
        rows.append(
            f"| {width} | {step * 1e3:.2f} | {flops / step / 1e9:.1f} "
            f"({flops / step / 1e9 / ceil['matmul_gflops']:.0%}) | {nbytes / step / 1e9:.1f} "
            f"({nbytes / step / 1e9 / ceil['add_gbps']:.0%}) | {n_params / step:.3g} "
            f"({n_params / step / gauss:.0%}) |"
        )
        log(rows[-1])
    return ["### 4. Per-step cost against the machine's ceilings", "",
            f"Ceilings in this run: float32 matmul (2048^3) {ceil['matmul_gflops']:.0f} GFLOP/s, "
            f"add of 2^26 floats {ceil['add_gbps']:.1f} GB/s, Gaussian draws "
            f"{gauss:.3g}/s (one `normal_` of 2^24 floats).", "", *rows, ""]  # fmt: skip


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    before, t0 = conditions(), time.perf_counter()
    ceil, gauss = machine_ceilings(), gaussian_rate()
    parts = batched_section(args, log)
    parts += calibrated_section(args, log)
    parts += adaptive_section(args, log)
    parts += ceiling_section(ceil, gauss, log)
    if args.training:
        import bench_train

        table = bench_train.main(["--repeats", "2"])
        parts += ["### 5. " + table.split("\n", 1)[0].lstrip("# "), table.split("\n", 1)[1]]
    after = conditions()
    head = [
        "## Throughput: batched checkpoints, calibrated protocol, adaptive length, ceilings",
        "",
        f"Written by `benchmarks/bench_throughput.py` (one torch thread). Conditions: "
        f"{before['cpus']} CPUs ({before['cpu']}), torch {before['torch']}, devinterp "
        f"{before['devinterp']}; load average {before['load'][0]:.2f} before, "
        f"{after['load'][0]:.2f} after; {(time.perf_counter() - t0) / 60:.1f} min.",
        "",
    ]
    text = "\n".join(head + parts) + "\n"
    print(text)
    if args.append:
        with open(args.out, "a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
