# Helpers only: config validation, the run and figure registries, and the get_* functions.
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from grokking_llc.config import (  # noqa: E402
    ConfigError,
    SamplerConfig,
    expand_study,
    sampler_id,
    validate_config,
)
from grokking_llc.stages import gather_tables  # noqa: E402
from grokking_llc.versions import code_version  # noqa: E402

# Jobs inherit the environment: silence devinterp's per-chain progress bars in job logs.
os.environ.setdefault("TQDM_DISABLE", "1")

try:
    _validated = validate_config(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
except ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_validated)

RESULTS = "results"
DEVICE = config["device"]
FIGCFG = config["figures"]

# Run registry: every run of every study, trained once even if several studies share it.
RUNS = {}
STUDY_RUNS = {}
RUN_STUDIES = {}
for _study, _overrides in config["studies"].items():
    _runs = expand_study(config["train"], _overrides)
    STUDY_RUNS[_study] = [r.run_id for r in _runs]
    for _r in _runs:
        RUNS[_r.run_id] = _r
        RUN_STUDIES.setdefault(_r.run_id, []).append(_study)
# Order-independent: reordering studies in the config changes no param and reruns nothing.
RUNS = dict(sorted(RUNS.items()))
RUN_STUDIES = {r: sorted(studies) for r, studies in sorted(RUN_STUDIES.items())}
SPLITS = {r.split_id: r for r in RUNS.values()}

SAMPLER = SamplerConfig.from_mapping(config["llc"]["sampler"])
CHUNKS = config["llc"]["chunks"]


def llc_every(run_id):
    """Checkpoint stride of a run's LLC track: the finest its studies ask for."""
    by_study = config["llc"]["every_by_study"]
    return min(by_study.get(s, config["llc"]["every"]) for s in RUN_STUDIES[run_id])


def run_sampler_id(run_id):
    return sampler_id(config["llc"]["backend"], llc_every(run_id), SAMPLER)


# The grids (B.1, B.2) sample the final checkpoint only: their id uses the global stride.
SAMPLER_ID = sampler_id(config["llc"]["backend"], config["llc"]["every"], SAMPLER)

# Figure registry: output file stem -> (figures.<key>, what it reads).
#   "runs": results/tables/runs.parquet (needs LLC tracks of its study's runs)
#   "training": results/tables/training_summary.parquet (training only)
#   "track": one run's training log and LLC track
SUMMARY_FIGURES = {
    "fig1_llc_vs_p": ("fig1", "runs", "plot_fig1_llc_vs_p"),
    "fig2_llc_vs_width": ("fig2", "runs", "plot_fig2_llc_vs_width"),
    "fig_lr_vs_max_llc": ("lr_vs_max_llc", "runs", "plot_lr_vs_max_llc"),
    "fig_gsm_vs_llc": ("gsm_vs_llc", "runs", "plot_gsm_vs_llc"),
    "fig4_lr_vs_gsm": ("fig4", "training", "plot_fig4_lr_vs_gsm"),
    "fig14_scaling_regimes": ("fig14", "training", "plot_fig14_scaling_regimes"),
}
TRACK_FIGURES = {
    "fig3_llc_tracks_generalisation": ("fig3", "plot_fig3"),
    "fig13_transformer": ("fig13", "plot_fig13_transformer"),
}
GRID_FIGURES = {"b2": "fig_b2_sampler_sensitivity", "bias_reduced": "fig_bias_reduced_llc"}


def _study(key):
    return FIGCFG[key].get("study")


def first_run(key):
    return STUDY_RUNS[_study(key)][0]


def _llc_studies():
    keys = [k for k, kind, _ in SUMMARY_FIGURES.values() if kind == "runs"]
    keys += [k for k, _ in TRACK_FIGURES.values()] + ["traces"]
    studies = {_study(k) for k in keys if _study(k)}
    return studies | set(FIGCFG["h2"]["studies"])


LLC_RUNS = sorted({r for s in _llc_studies() for r in STUDY_RUNS[s]})
SAMPLER_IDS = {run_sampler_id(r): llc_every(r) for r in LLC_RUNS} | {SAMPLER_ID: config["llc"]["every"]}


def _first_seed_runs(study):
    runs = STUDY_RUNS[study]
    seed = min(RUNS[r].seed for r in runs)
    return [r for r in runs if RUNS[r].seed == seed]


H2_RUNS = list(dict.fromkeys(r for s in FIGCFG["h2"]["studies"] for r in _first_seed_runs(s)))


wildcard_constraints:
    run="|".join(RUNS) or "NO_RUNS",
    split="|".join(SPLITS) or "NO_SPLITS",
    sampler="|".join(SAMPLER_IDS),
    chunk=r"\d+",
    summary_figure="|".join(SUMMARY_FIGURES),
    track_figure="|".join(TRACK_FIGURES),
    grid="|".join(GRID_FIGURES),
    grid_figure="|".join(GRID_FIGURES.values()),


def run_label(run_id):
    r = RUNS[run_id]
    return (
        f"{r.model} p={r.p}, K={r.width}, lr={r.lr:g}, wd={r.weight_decay:g}, "
        f"batch={r.batch_size}, train_frac={r.train_frac:g}, seed={r.seed}"
    )


def get_run(wildcards):
    return RUNS[wildcards.run].to_dict()


def get_work_dir(wildcards):
    """Resumable training state; not an output, so it survives a failed or killed job."""
    return f"{RESULTS}/runs/{wildcards.run}/partial"


def get_split_path(wildcards):
    return f"{RESULTS}/splits/{RUNS[wildcards.run].split_id}.parquet"


def get_split_params(wildcards):
    r = SPLITS[wildcards.split]
    return {"p": r.p, "train_frac": r.train_frac, "seed": r.data_seed}


def get_llc_chunks(wildcards):
    return [
        f"{RESULTS}/llc/{wildcards.run}/{wildcards.sampler}/chunk{i}of{CHUNKS}.parquet"
        for i in range(CHUNKS)
    ]


def llc_path(run_id):
    return f"{RESULTS}/llc/{run_id}/{run_sampler_id(run_id)}.parquet"


def get_llc_params(wildcards):
    """The llc config with the checkpoint stride that the sampler id in the path encodes."""
    return {**config["llc"], "every": SAMPLER_IDS[wildcards.sampler]}


def train_log_path(run_id):
    return f"{RESULTS}/runs/{run_id}/train_log.parquet"


def checkpoints_path(run_id):
    return f"{RESULTS}/runs/{run_id}/checkpoints.pt"


def get_run_meta(run_ids):
    """Settings and study membership of runs, for the summary tables."""
    return {r: {"run": RUNS[r].to_dict(), "studies": RUN_STUDIES[r]} for r in run_ids}


def get_llc_tracks(wildcards):
    return {r: llc_path(r) for r in LLC_RUNS}


def get_summary_figure_input(wildcards):
    _, kind, _ = SUMMARY_FIGURES[wildcards.summary_figure]
    name = "runs" if kind == "runs" else "training_summary"
    return f"{RESULTS}/tables/{name}.parquet"


def get_summary_figure_params(wildcards):
    key, _, function = SUMMARY_FIGURES[wildcards.summary_figure]
    return {"study": _study(key), "function": function}


def get_track_inputs(wildcards):
    key, _ = TRACK_FIGURES[wildcards.track_figure]
    run_id = first_run(key)
    return {"train_log": train_log_path(run_id), "llc": llc_path(run_id)}


def get_track_params(wildcards):
    key, function = TRACK_FIGURES[wildcards.track_figure]
    return {"function": function, "title": f"{run_label(first_run(key))}\nrun {first_run(key)}"}


def get_h2_inputs(wildcards):
    return {
        "logs": [train_log_path(r) for r in H2_RUNS],
        "llcs": [llc_path(r) for r in H2_RUNS],
    }


def get_grid_list(wildcards):
    """Sampler overrides of a grid study: (gamma, eps) pairs for B.2, nbeta values for B.1."""
    fig = FIGCFG[wildcards.grid]
    if wildcards.grid == "b2":
        return [{"localization": g, "lr": e} for e in fig["lr"] for g in fig["localization"]]
    return [{"nbeta": f * SAMPLER.resolved_nbeta} for f in fig["nbeta_factors"]]


def grid_table_path(grid):
    return f"{RESULTS}/llc_grid/{grid}/{first_run(grid)}-{SAMPLER_ID}.parquet"


def get_grid_figure_input(wildcards):
    grid = {stem: g for g, stem in GRID_FIGURES.items()}[wildcards.grid_figure]
    return grid_table_path(grid)


def get_traces_input(wildcards):
    return llc_path(first_run("traces"))


def get_figure_targets():
    figs = [
        f"{RESULTS}/figures/{stem}.png"
        for stem, (key, *_) in {**SUMMARY_FIGURES, **TRACK_FIGURES}.items()
        if _study(key)
    ]
    figs += [f"{RESULTS}/figures/{stem}.png" for g, stem in GRID_FIGURES.items() if _study(g)]
    if H2_RUNS:
        figs.append(f"{RESULTS}/figures/fig_h2_panels.png")
    if _study("traces"):
        figs.append(f"{RESULTS}/figures/fig_llc_traces.png")
    return figs


def get_table_targets():
    tables = [f"{RESULTS}/tables/training_summary.parquet"]
    if LLC_RUNS:
        tables.append(f"{RESULTS}/tables/runs.parquet")
    tables += [
        f"{RESULTS}/theory/{r}/{run_sampler_id(r)}.parquet"
        for r in LLC_RUNS
        if RUNS[r].model == "quadratic"
    ]
    return tables
