"""Benchmark: devinterp vs the fast SGLD backend on the same checkpoints (SPEC sections 4, 9).

Runs both LLC backends side by side in one process, with the paper's sampler (SPEC section 4:
eps 5e-4, nbeta = m / ln m, gamma 5, 3 chains, 100 burn-in, 500 draws, batch 128), on
quadratic nets with p in {53, 97} and K in {256, 1024}. The checkpoints are real: each model is
trained 1000 steps with :func:`grokking_llc.training.train.train` (the baseline optimiser of SPEC
section
3: Adam lr 1e-4, wd 1e-4, batch 128), checkpointing every 100 steps; the table uses step 1000.

Also measured in the same run: this machine's ceilings (float32 matmul GFLOP/s, elementwise
add GB/s), the fast backend's achieved FLOP/s and bytes/s per SGLD step against them, and, for
10 consecutive checkpoints, the per-job fixed cost (interpreter + imports, model and data
rebuild) against the per-estimate cost (one at a time and batched along the chain axis).

    python benchmarks/bench_llc.py                # full run, writes benchmarks/RESULTS.md
    python benchmarks/bench_llc.py --quick        # p=53, K=256 only, fewer repeats
    python benchmarks/bench_llc.py --threads 2 1  # one section per torch thread count
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from grokking_llc.core.data import make_split, split_tensors
from grokking_llc.core.model import build_model, centred_mse
from grokking_llc.core.settings import SamplerConfig, TrainConfig
from grokking_llc.sampling import sgld
from grokking_llc.sampling.llc import LLCResult, estimate_llc, llc_from_traces
from grokking_llc.training.checkpoints import checkpoint_state
from grokking_llc.training.train import train

HERE = Path(__file__).resolve().parent
SAMPLER = SamplerConfig()  # the paper's sampler (SPEC section 4)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[2], help="torch thread counts")
    ap.add_argument("--quick", action="store_true", help="p=53, K=256 only; fewer repeats")
    ap.add_argument("--ps", type=int, nargs="+", default=None)
    ap.add_argument("--widths", type=int, nargs="+", default=None)
    ap.add_argument("--repeats-devinterp", type=int, default=None)
    ap.add_argument("--repeats-fast", type=int, default=None)
    ap.add_argument("--consecutive", type=int, default=None, help="checkpoints for fixed cost")
    ap.add_argument("--train-steps", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--append", action="store_true", help="add sections to --out, no header")
    args = ap.parse_args(argv)
    quick = args.quick
    args.ps = args.ps or ([53] if quick else [53, 97])
    args.widths = args.widths or ([256] if quick else [256, 1024])
    args.repeats_devinterp = args.repeats_devinterp or (1 if quick else 2)
    args.repeats_fast = args.repeats_fast or (2 if quick else 5)
    args.consecutive = args.consecutive or (3 if quick else 10)
    return args


# ------------------------------------------------------------------------------------------
# Machine ceilings and the cost model of one SGLD step
# ------------------------------------------------------------------------------------------


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def machine_ceilings() -> dict[str, float]:
    """Large float32 matmul GFLOP/s and elementwise ``c = a + b`` GB/s (best of several)."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    t = best_of(lambda: torch.mm(a, b, out=c), 5)
    gflops = 2 * n**3 / t / 1e9
    m = 1 << 26  # 64M floats = 256 MB per operand, far beyond the caches
    x, y, z = torch.rand(m), torch.rand(m), torch.empty(m)
    t = best_of(lambda: torch.add(x, y, out=z), 5)
    gbps = 3 * 4 * m / t / 1e9
    return {"matmul_gflops": gflops, "add_gbps": gbps}


def sgld_step_cost(chains: int, batch: int, width: int, p: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one quadratic-path SGLD step over all chains, op by op as issued.

    Bytes count every operand read and every result written once (4 bytes a float); data that
    stays in cache is counted too, so the byte rate can exceed the DRAM-bound add's.
    """
    M, B, K = chains, batch, width
    P = M * (2 * p * K + K * p)  # parameters of all chains
    mbk, mbp, mkp = M * B * K, M * B * p, M * K * p
    flops = 0.0
    floats = 0.0
    flops += 3 * 2 * M * B * K * p  # three bmm: h^2 V, G V^T, (h^2)^T G
    floats += (mbk + mkp + mbp) * 3 + mkp  # their operands (+ V read-modify-write)
    flops += mbk + mbk + mbk  # gather-sum, square, dh * h
    floats += 3 * mbk + 2 * mbk + 3 * mbk
    flops += 2 * 2 * mbk  # two index_add_ with alpha
    floats += 2 * 3 * mbk
    flops += 10 * mbp  # residual, centring, loss
    floats += 8 * mbp
    flops += 4 * P  # w <- decay w + pull; w += sqrt(eps) xi
    floats += 6 * P
    floats += P  # noise written
    return flops, 4 * floats


# ------------------------------------------------------------------------------------------
# Checkpoints and estimates
# ------------------------------------------------------------------------------------------


def train_checkpoints(p: int, width: int, steps: int):
    """Train ``steps`` steps of the baseline optimiser; return (cfg, checkpoints, split)."""
    cfg = TrainConfig(p=p, width=width, max_steps=steps, checkpoint_every=100)
    split = make_split(p, cfg.train_frac, cfg.data_seed)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg, split, tmp)
    last = result.log.iloc[-1]
    return cfg, result.checkpoints, split, last


@contextlib.contextmanager
def quiet():
    """Silence devinterp's progress bars and warnings."""
    with (
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


def run_estimate(backend, model, x, y, seed=0) -> tuple[float, float, LLCResult]:
    """(wall seconds, this process's CPU seconds, result) of one estimate."""
    t0, c0 = time.perf_counter(), time.process_time()
    with quiet():
        res = estimate_llc(model, x, y, centred_mse, SAMPLER, seed=seed, backend=backend)
    return time.perf_counter() - t0, time.process_time() - c0, res


@dataclass
class Row:
    p: int
    K: int
    n: int
    train_acc: float
    t_dev: float
    t_dev_min: float
    t_fast: float
    t_fast_min: float
    cpu_dev: float
    cpu_fast: float
    llc_dev: float
    std_dev: float
    llc_fast: float
    std_fast: float
    llc_cycle: float
    std_cycle: float
    z: float
    drift_dev: float
    drift_fast: float
    fast_gflops: float
    fast_gbps: float


def half_drift(res: LLCResult) -> float:
    """LLC from the second half of the draws minus LLC from the first half (chain mean)."""
    draws = res.loss_trace[:, res.num_burnin_steps :]
    half = draws.shape[1] // 2
    early, late = draws[:, :half].mean(), draws[:, half:].mean()
    return float(res.nbeta * (late - early))


def loss_traces(model, states, x, y, seeds, epoch_mode="reshuffle"):
    """The fast sampler's (trace, init_loss) at each of ``states`` (no diagnostics), with
    devinterp's minibatch order when ``epoch_mode="cycle"``: a benchmark-only view of
    :func:`grokking_llc.sampling.sgld.sample_chains_many`."""
    out = sgld.sample_chains_many(model, states, x, y, centred_mse, SAMPLER, seeds=seeds,
                                  device="cpu", _epoch_mode=epoch_mode)  # fmt: skip
    return [(o.trace, o.init_loss) for o in out]


def compare(p: int, width: int, args, log) -> tuple[Row, dict]:
    cfg, ckpts, split, last = train_checkpoints(p, width, args.train_steps)
    log(
        f"  trained p={p} K={width}: step {int(last['step'])}, train acc {last['train_acc']:.3f}, "
        f"val acc {last['val_acc']:.3f}"
    )
    x, y = split_tensors(split, "train")
    model = build_model("quadratic", p, width=width)
    model.load_state_dict(checkpoint_state(ckpts, len(ckpts["steps"]) - 1))
    t_dev, t_fast, cpu_dev, cpu_fast = [], [], [], []
    res_dev = res_fast = None
    # Interleaved, so that both backends see the same (possibly shared) machine.
    for i in range(max(args.repeats_devinterp, args.repeats_fast)):
        if i < args.repeats_devinterp:
            t, c, res_dev = run_estimate("devinterp", model, x, y)
            t_dev.append(t)
            cpu_dev.append(c / t)
            log(f"    devinterp {t:.2f}s (cpu/wall {c / t:.2f})  llc {res_dev.llc_mean:.2f}")
        if i < args.repeats_fast:
            t, c, res_fast = run_estimate("fast", model, x, y)
            t_fast.append(t)
            cpu_fast.append(c / t)
            log(f"    fast {t:.2f}s (cpu/wall {c / t:.2f})  llc {res_fast.llc_mean:.2f}")
    with quiet():  # devinterp's minibatch order (first epoch replayed), to isolate its effect
        state = {k: v.detach() for k, v in model.named_parameters()}
        ((trace, init),) = loss_traces(model, [state], x, y, [0], epoch_mode="cycle")
    res_cycle = llc_from_traces(trace, init, SAMPLER.resolved_nbeta, SAMPLER.num_burnin_steps)
    se = math.hypot(res_dev.llc_std, res_fast.llc_std) / math.sqrt(SAMPLER.num_chains)
    step_time = statistics.median(t_fast) / SAMPLER.num_steps
    flops, nbytes = sgld_step_cost(SAMPLER.num_chains, SAMPLER.batch_size, width, p)
    row = Row(
        p=p, K=width, n=len(x), train_acc=float(last["train_acc"]),
        t_dev=statistics.median(t_dev), t_dev_min=min(t_dev),
        t_fast=statistics.median(t_fast), t_fast_min=min(t_fast),
        cpu_dev=statistics.median(cpu_dev), cpu_fast=statistics.median(cpu_fast),
        llc_dev=res_dev.llc_mean, std_dev=res_dev.llc_std,
        llc_fast=res_fast.llc_mean, std_fast=res_fast.llc_std,
        llc_cycle=res_cycle.llc_mean, std_cycle=res_cycle.llc_std,
        z=(res_fast.llc_mean - res_dev.llc_mean) / se if se > 0 else float("nan"),
        drift_dev=half_drift(res_dev), drift_fast=half_drift(res_fast),
        fast_gflops=flops / step_time / 1e9, fast_gbps=nbytes / step_time / 1e9,
    )  # fmt: skip
    return row, {"ckpts": ckpts, "split": split, "model": model, "x": x, "y": y}


def subprocess_seconds(code: str) -> float:
    """Wall time of a fresh interpreter running ``code`` (best of 2)."""
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def fixed_vs_per_estimate(p, width, ctx, args, log, with_devinterp: bool) -> dict:
    """Per-job fixed cost vs per-estimate cost over consecutive checkpoints."""
    ckpts, x, y = ctx["ckpts"], ctx["x"], ctx["y"]
    idx = list(range(len(ckpts["steps"])))[-args.consecutive :]
    out = {"p": p, "K": width, "checkpoints": len(idx)}
    out["t_interp_imports"] = subprocess_seconds(
        "import torch, grokking_llc.sampling.llc, grokking_llc.sampling.sgld, "
        "grokking_llc.pipeline.stages"
    )
    out["t_devinterp_import"] = (
        subprocess_seconds("import grokking_llc.sampling.devinterp_backend, devinterp.slt.sampling")
        - out["t_interp_imports"]
    )
    t0 = time.perf_counter()
    model = build_model("quadratic", p, width=width)
    split = make_split(p, 0.4, 0)
    split_tensors(split, "train")
    model.load_state_dict(checkpoint_state(ckpts, idx[0]))
    out["t_rebuild"] = time.perf_counter() - t0
    seeds = [SAMPLER.seed + int(ckpts["steps"][i]) for i in idx]  # as the pipeline seeds them
    states = [checkpoint_state(ckpts, i) for i in idx]

    t0 = time.perf_counter()
    single = []
    for state, seed in zip(states, seeds, strict=True):
        model.load_state_dict(state)
        single += loss_traces(model, [state], x, y, [seed])
    out["t_fast_each"] = (time.perf_counter() - t0) / len(idx)
    t0 = time.perf_counter()
    many = loss_traces(model, states, x, y, seeds)
    out["t_fast_batched"] = (time.perf_counter() - t0) / len(idx)
    out["batched_identical"] = all(
        np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(single, many, strict=True)
    )
    out["llc_fast"] = [
        llc_from_traces(t, i, SAMPLER.resolved_nbeta, SAMPLER.num_burnin_steps).llc_mean
        for t, i in single
    ]
    if with_devinterp:
        t0 = time.perf_counter()
        llc_dev = []
        for state, seed in zip(states, seeds, strict=True):
            model.load_state_dict(state)
            with quiet():
                res = estimate_llc(model, x, y, centred_mse, SAMPLER, seed=seed,
                                   backend="devinterp")  # fmt: skip
            llc_dev.append(res.llc_mean)
        out["t_dev_each"] = (time.perf_counter() - t0) / len(idx)
        out["llc_dev"] = llc_dev
    out["steps"] = [int(ckpts["steps"][i]) for i in idx]
    log(f"  consecutive p={p} K={width}: {out}")
    return out


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def conditions() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cpus": sgld._usable_cpus(),
        "torch": torch.__version__,
        "devinterp": importlib.metadata.version("devinterp"),
        "python": platform.python_version(),
        "load": os.getloadavg(),
    }


def section(threads, rows, ceil, consec, cond_before, cond_after, wall, overlap) -> str:
    out = [f"## torch.set_num_threads({threads})", ""]
    out.append(
        f"Conditions: {cond_before['cpus']} CPUs ({cond_before['cpu']}), torch "
        f"{cond_before['torch']}, devinterp {cond_before['devinterp']}; load average (1/5/15 min) "
        f"{'/'.join(f'{v:.2f}' for v in cond_before['load'])} before, "
        f"{'/'.join(f'{v:.2f}' for v in cond_after['load'])} after; section wall time "
        f"{wall / 60:.1f} min. Fast backend's noise thread: {'on' if overlap else 'off'} "
        "(`overlap_noise='auto'`: on when torch's threads leave a core idle)."
    )
    out.append("")
    out.append(
        f"Machine ceilings measured in this run: float32 matmul (2048^3) "
        f"**{ceil['matmul_gflops']:.0f} GFLOP/s**; elementwise add of 2^26 floats "
        f"**{ceil['add_gbps']:.1f} GB/s** (12 bytes per element)."
    )
    out.append("")
    out.append(
        "| p | K | n | devinterp s/estimate | fast s/estimate | speed-up | CPU/wall dev, fast | "
        "LLC devinterp | "
        "LLC fast | z | LLC fast, cycle | drift dev / fast | fast GFLOP/s (of peak) | "
        "fast GB/s (of add) |"
    )
    out.append("|" + "---|" * 14)
    for r in rows:
        out.append(
            f"| {r.p} | {r.K} | {r.n} | {r.t_dev:.2f} (min {r.t_dev_min:.2f}) | "
            f"{r.t_fast:.3f} (min {r.t_fast_min:.3f}) | **{r.t_dev / r.t_fast:.1f}x** "
            f"({r.t_dev_min / r.t_fast_min:.1f}x) | "
            f"{r.cpu_dev:.2f}, {r.cpu_fast:.2f} | "
            f"{r.llc_dev:.1f} ± {r.std_dev:.1f} | {r.llc_fast:.1f} ± {r.std_fast:.1f} | "
            f"{r.z:+.2f} | {r.llc_cycle:.1f} ± {r.std_cycle:.1f} | "
            f"{r.drift_dev:+.1f} / {r.drift_fast:+.1f} | "
            f"{r.fast_gflops:.1f} ({r.fast_gflops / ceil['matmul_gflops']:.0%}) | "
            f"{r.fast_gbps:.1f} ({r.fast_gbps / ceil['add_gbps']:.0%}) |"
        )
    out.append("")
    for c in consec:
        line = (
            f"Fixed vs per-estimate cost, p={c['p']} K={c['K']}, {c['checkpoints']} consecutive "
            f"checkpoints (steps {c['steps'][0]}-{c['steps'][-1]}): interpreter + imports "
            f"{c['t_interp_imports']:.2f} s, devinterp import +{c['t_devinterp_import']:.2f} s, "
            f"model + data rebuild {c['t_rebuild'] * 1e3:.0f} ms per job; per estimate: fast "
            f"{c['t_fast_each']:.2f} s one at a time, {c['t_fast_batched']:.2f} s batched "
            f"(all {c['checkpoints']} stacked along the chain axis; identical numbers: "
            f"{c['batched_identical']})"
        )
        if "t_dev_each" in c:
            line += f", devinterp {c['t_dev_each']:.2f} s"
            diffs = np.array(c["llc_fast"]) - np.array(c["llc_dev"])
            line += (
                f"; LLC fast - devinterp over these checkpoints: mean {diffs.mean():+.2f}, "
                f"sd {diffs.std(ddof=1) if len(diffs) > 1 else 0:.2f}"
            )
        out.append(line + ".")
        out.append("")
    return "\n".join(out)


HEADER = """# LLC backend benchmark

Written by `benchmarks/bench_llc.py` ({cmd}). Paper's sampler (SPEC section 4): eps 5e-4,
nbeta = 128 / ln 128 = 26.38, gamma 5, 3 chains, 100 burn-in + 500 draws, batch 128. Checkpoints:
each (p, K) trained {steps} steps with `grokking_llc.training.train.train` (Adam lr 1e-4, wd 1e-4,
batch
128, train_frac 0.4, seed 0); the table samples the last one (step {steps}).

Columns. Times are wall seconds per LLC estimate (3 chains x 600 steps + 32 init-loss batches),
median of the repeats (devinterp {rd}, fast {rf}, interleaved), minimum in brackets; speed-up =
median devinterp / median fast (ratio of the minima in brackets: the better guide when other
processes come and go). CPU/wall = this process's CPU seconds per wall second (median):
with t torch threads on an idle machine it approaches t (the fast backend's noise thread adds
up to ~0.3); well below that means other processes took the cores. LLC = mean ± std over the 3
chains (burn-in dropped, same seed 0 for both backends, different random streams). z = (fast -
devinterp) / sqrt(se_fast^2 + se_dev^2) with se = std / sqrt(3): |z| < 3 is agreement (with 3
chains the se is itself rough). "LLC fast, cycle": the fast backend with devinterp's minibatch
order (`epoch_mode="cycle"`, the first epoch's batches replayed) instead of its default
reshuffling, same seed. Drift = LLC from the last 250 draws minus LLC from the first 250: far
from 0 means the chains are not stationary after the 100 burn-in steps. GFLOP/s and GB/s: the
fast backend's FLOPs and bytes per SGLD step (cost model `sgld_step_cost`: three bmm of
2*3*128*K*p FLOPs each plus the elementwise work, bytes as issued, cached or not) divided by its
median time per step, as a fraction of the machine ceilings measured in the same run.
"""


def main(argv=None) -> None:
    args = parse_args(argv)
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)

    sections = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        overlap = torch.get_num_threads() < sgld._usable_cpus()
        log(f"== threads {threads} (noise thread {'on' if overlap else 'off'})")
        t_start = time.perf_counter()
        before = conditions()
        ceil = machine_ceilings()
        log(f"  ceilings {ceil}")
        rows, consec = [], []
        for p in args.ps:
            for width in args.widths:
                row, ctx = compare(p, width, args, log)
                rows.append(row)
                log(f"  {asdict(row)}")
                if p == args.ps[0]:
                    consec.append(
                        fixed_vs_per_estimate(
                            p, width, ctx, args, log, with_devinterp=width == args.widths[-1]
                        )
                    )
        after = conditions()
        sections.append(
            section(
                threads, rows, ceil, consec, before, after, time.perf_counter() - t_start, overlap
            )  # fmt: skip
        )
    cmd = "python benchmarks/bench_llc.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = HEADER.format(
        cmd=f"`{cmd.strip()}`", steps=args.train_steps, rd=args.repeats_devinterp,
        rf=args.repeats_fast,
    )  # fmt: skip
    if args.append and args.out.exists():
        lines.append(args.out.read_text().rstrip("\n") + "\n")
        lines.append(f"(Section below appended by `{cmd.strip()}`.)\n")
    else:
        lines.append(text)
    lines.extend(sections)
    args.out.write_text("\n".join(lines) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
