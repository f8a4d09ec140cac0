"""Calibration against known answers and against a Metropolis-adjusted reference (issue 19).

    .venv/bin/python benchmarks/bench_calibration.py known            # known answers, seconds
    .venv/bin/python benchmarks/bench_calibration.py reference --run <run id> \\
        --table results/calibration/<shape>-<hash>.parquet [--config config/config.yaml]
    add --append to write the table into benchmarks/RESULTS.md

``known``: the automatic calibration with its default search (grokking_llc.sampling.calibrate) on
the
known-answer problems of tests/known_answers.py (regular models, reduced-rank regressions,
deep linear networks), the sampler's own settings as the tests give them (full batch, 64
chains); per problem the closed-form lambda, d, the chosen estimate and its error, validity,
the estimates run and the wall seconds. ``reference``: at a run's final checkpoint, the SGLD
estimate of a calibration's chosen setting (its table's candidate row, with the step the
calibration compared it to) beside a full-batch MALA chain (grokking_llc.sampling.mala) on the same
localised tempered posterior, gn_diag-preconditioned, ``--warmup`` + ``--draws`` transitions
(4 chains); the MALA estimate is also given over the last half of its draws, to show it has
settled. The run (its settings, checkpoints and split) comes from the config's plan.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def _conditions() -> str:
    import os

    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return (
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch "
        f"{torch.__version__}, 1 thread, load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}"
    )


def known(args) -> list[str]:
    from known_answers import deep_linear_problem, reduced_rank_problem, regular_problem, rescale

    from grokking_llc.sampling import calibrate as cal

    problems = {
        "regular q=6": regular_problem(3, 2),
        "regular q=6, reparametrised x3": None,
        "RRR M3 N2 H2 r1": reduced_rank_problem(3, 2, 2, 1),
        "RRR M5 N5 H3 r1": reduced_rank_problem(5, 5, 3, 1),
        "RRR M6 N4 H3 r2": reduced_rank_problem(6, 4, 3, 2),
        "DLN 4-3-3-4 r2": deep_linear_problem([4, 3, 3, 4], 2),
    }
    reg = problems["regular q=6"]
    problems["regular q=6, reparametrised x3"] = reg._replace(model=rescale(reg.model, 3.0))
    rows = [
        f"Conditions: {_conditions()}.",
        "",
        "| problem | d | lambda | chosen estimate | error | valid | setting (kind, nbeta, "
        "gamma, lr) | rescaled x2 / x0.5 | estimates run | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, pr in problems.items():
        base = {"batch_size": len(pr.x), "num_init_loss_batches": 1, "num_chains": 64,
                "num_burnin_steps": 100}  # fmt: skip
        t0 = time.perf_counter()
        res = cal.calibrate_sampler(pr.model, pr.x, pr.y, pr.loss_fn, base=base, seed=0)
        sec = time.perf_counter() - t0
        t = res.table
        cand = t[t["chosen"] & (t["role"] == "candidate")]
        est = float(cand["llc_mean"].iloc[0]) if len(cand) else math.nan
        resc = [t[t["role"] == f"rescale x{c}"]["llc_mean"] for c in ("2", "0.5")]
        resc_txt = " / ".join(f"{float(r.iloc[0]):.3g}" if len(r) else "-" for r in resc)
        s = res.chosen or {}
        setting = ", ".join([
            s.get("kind", "sgld"), f"{s.get('nbeta', math.nan):.4g}",
            f"{s.get('localization', math.nan):.4g}", f"{s.get('lr', math.nan):.3g}",
        ])  # fmt: skip
        n_runs = int((t["seconds"] > 0).sum())
        rows.append(
            f"| {name} | {pr.d} | {pr.llc:g} | {est:.4g} | {est / pr.llc - 1:+.1%} | "
            f"{res.chosen_valid} | {setting} | {resc_txt} | {n_runs} | {sec:.1f} |"
        )
        print(rows[-1], flush=True)
    return rows


def reference(args) -> list[str]:
    from grokking_llc.core.data import split_tensors
    from grokking_llc.core.model import build_model, get_loss
    from grokking_llc.pipeline.config import load_config
    from grokking_llc.pipeline.plan import Plan
    from grokking_llc.sampling import mala
    from grokking_llc.sampling.llc import estimate_llc
    from grokking_llc.training.checkpoints import checkpoint_state, load_checkpoints

    job = Plan(load_config(args.config)).runs[args.run]
    run = job.train
    ckpts = load_checkpoints(job.checkpoints, expect=run)
    model = build_model(run.model, run.p, width=run.width, options=run.model_options)
    last = len(ckpts["steps"]) - 1
    model.load_state_dict(checkpoint_state(ckpts, last))
    step = int(ckpts["steps"][last])
    x, y = split_tensors(pd.read_parquet(job.split_path), "train", torch.device("cpu"))
    loss_fn = get_loss(run.loss)
    table = pd.read_parquet(args.table)
    cand = table[table["chosen"].astype(bool) & (table["role"] == "candidate")].iloc[0]
    settings = json.loads(cand["settings"])
    seed = int(settings.get("seed", 0)) + step
    t0 = time.perf_counter()
    sgld = estimate_llc(model, x, y, loss_fn, settings, seed=seed, backend="fast")
    t_sgld = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = mala.estimate_llc_mala(
        model, x, y, loss_fn, nbeta=settings["nbeta"], localization=settings["localization"],
        num_chains=4, num_warmup=args.warmup, num_draws=args.draws, seed=seed,
    )  # fmt: skip
    t_mala = time.perf_counter() - t0
    trace = ref.loss_trace[:, args.warmup :]
    half = settings["nbeta"] * (trace[:, trace.shape[1] // 2 :].mean() - ref.init_loss)
    rows = [
        f"Conditions: {_conditions()}. Run {run.run_id} (p {run.p}, K {run.width}), final "
        f"checkpoint (step {step}); setting {settings.get('kind', 'sgld')} nbeta "
        f"{settings['nbeta']:.4g}, gamma {settings['localization']:.4g}, lr {settings['lr']:.3g} "
        f"(from {Path(args.table).name}).",
        "",
        "| sampler | LLC | SE | steps | valid | seconds |",
        "|---|---|---|---|---|---|",
        f"| SGLD, chosen step | {sgld.llc_mean:.5g} | {sgld.llc_se:.3g} | {sgld.num_steps} | "
        f"{sgld.valid} | {t_sgld:.1f} |",
        f"| MALA, full batch ({args.warmup} warm-up + {args.draws} draws) | {ref.llc_mean:.5g} | "
        f"{ref.llc_se:.3g} | {ref.num_steps} | {ref.valid} | {t_mala:.1f} |",
        f"| MALA, last half of the draws | {half:.5g} | - | {args.draws // 2} | - | - |",
        "",
        f"SGLD - MALA: {sgld.llc_mean / ref.llc_mean - 1:+.1%} (last half: "
        f"{sgld.llc_mean / half - 1:+.1%}); MALA acceptance "
        f"{ref.diagnostics['acceptance_rate']:.2f}, step {ref.diagnostics['step_size']:.3g}.",
    ]
    print("\n".join(rows), flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["known", "reference"])
    ap.add_argument("--config", default="config/config.yaml", help="the config the run is in")
    ap.add_argument("--run", help="run id (reference): its final checkpoint")
    ap.add_argument("--table", help="calibration table whose chosen setting is checked")
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=20000)
    ap.add_argument("--append", action="store_true", help="write the table into RESULTS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = known(args) if args.what == "known" else reference(args)
    if args.append:
        title = {"known": "## Calibration against known answers (bench_calibration.py known)",
                 "reference": "## SGLD against a Metropolis-adjusted reference "
                              "(bench_calibration.py reference)"}[args.what]  # fmt: skip
        out = HERE / "RESULTS.md"
        text = out.read_text() if out.exists() else ""
        block = "\n".join([title, "", *rows, ""])
        if title in text:  # replace this section, keep the others
            start = text.index(title)
            nxt = text.find("\n## ", start + len(title))
            text = text[:start] + block + (text[nxt + 1 :] if nxt != -1 else "")
        else:
            text = text.rstrip() + "\n\n" + block
        out.write_text(text)


if __name__ == "__main__":
    main()
