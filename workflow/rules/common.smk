# Helpers only: config validation, the run registry and the get_* functions rules use.
import os
import sys
from pathlib import Path

# Jobs inherit the environment: silence devinterp's per-chain progress bars in job logs.
os.environ.setdefault("TQDM_DISABLE", "1")

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from grokking_llc.config import (  # noqa: E402
    ConfigError,
    SamplerConfig,
    expand_study,
    sampler_id,
    validate_config,
)
from grokking_llc.versions import code_version  # noqa: E402

try:
    _validated = validate_config(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
except ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_validated)

RESULTS = "results"
DEVICE = config["device"]

# Run registry: every run of every study, trained once even if several studies share it.
RUNS = {}
STUDY_RUNS = {}
for _study, _overrides in config["studies"].items():
    _runs = expand_study(config["train"], _overrides)
    STUDY_RUNS[_study] = [r.run_id for r in _runs]
    RUNS.update({r.run_id: r for r in _runs})
SPLITS = {r.split_id: r for r in RUNS.values()}

SAMPLER = SamplerConfig.from_mapping(config["llc"]["sampler"])
SAMPLER_ID = sampler_id(config["llc"]["backend"], config["llc"]["every"], SAMPLER)
CHUNKS = config["llc"]["chunks"]


wildcard_constraints:
    run="|".join(RUNS) or "NO_RUNS",
    split="|".join(SPLITS) or "NO_SPLITS",
    sampler=SAMPLER_ID,
    chunk=r"\d+",


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
    return f"{RESULTS}/llc/{run_id}/{SAMPLER_ID}.parquet"


def train_log_path(run_id):
    return f"{RESULTS}/runs/{run_id}/train_log.parquet"


def get_fig3_inputs(wildcards):
    run_id = STUDY_RUNS[config["figures"]["fig3"]["study"]][0]
    return {"train_log": train_log_path(run_id), "llc": llc_path(run_id)}


def get_fig3_title(wildcards):
    r = RUNS[STUDY_RUNS[config["figures"]["fig3"]["study"]][0]]
    return (
        f"p={r.p}, K={r.width}, lr={r.lr:g}, wd={r.weight_decay:g}, batch={r.batch_size}, "
        f"train_frac={r.train_frac:g}, seed={r.seed}  [{r.run_id}]"
    )


def get_figure_targets():
    return [f"{RESULTS}/figures/fig3_llc_tracks_generalisation.png"]
