"""Configuration: validation, study expansion and the hashes that name runs and LLC outputs.

The workflow's config (``config/config.yaml``, described key by key in ``config/README.md``) is
checked against ``workflow/schemas/config.schema.yaml`` plus the rules a JSON schema cannot state
(p prime, checkpoint interval within the step budget, ...). Every problem is reported as one line
naming the key, before any job starts.

Naming. A run is named by a short hash of its canonical training hyperparameters: keys whose value
equals :data:`TRAIN_HASH_BASE` are left out, so adding an option (with its neutral value added to
the base) renames nothing. LLC outputs are keyed by run and by a hash of the sampler settings built
the same way from :data:`SAMPLER_HASH_BASE`. The bases are frozen: editing a value there would
rename runs, so they are independent of the (editable) schema defaults.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from grokking_llc.data import is_prime, n_train

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"

# Frozen reference values for the run hash (the paper's baseline, SPEC section 3). Never edit a
# value; a new training option is added here with the value that reproduces the old behaviour.
TRAIN_HASH_BASE: dict[str, Any] = {
    "p": 53,
    "train_frac": 0.4,
    "data_seed": 0,
    "seed": 0,
    "model": "quadratic",
    "width": 1024,
    "model_options": {},
    "loss": "centred_mse",
    "lr": 1e-4,
    "weight_decay": 1e-5,
    "batch_size": 128,
    "max_steps": 100_000,
    "checkpoint_every": 100,
    "early_stop_patience": 10,
    "early_stop_acc": 0.99,
}

# Frozen reference values for the sampler hash (the paper's sampler, SPEC section 4).
SAMPLER_HASH_BASE: dict[str, Any] = {
    "backend": "devinterp",
    "every": 1,
    "lr": 5e-4,
    "nbeta": None,
    "localization": 5.0,
    "num_chains": 3,
    "num_burnin_steps": 100,
    "num_draws": 500,
    "batch_size": 128,
    "weight_decay": 0.0,
    "num_init_loss_batches": 32,
    "seed": 0,
}


class ConfigError(ValueError):
    """A config value breaks a rule; the message is one line naming the key."""


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, Mapping):
        return {k: _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def short_hash(params: Mapping[str, Any], base: Mapping[str, Any], length: int = 8) -> str:
    """Hash of the canonical JSON of ``params`` with keys at their ``base`` value left out."""
    kept = {
        k: _canonical(v)
        for k, v in params.items()
        if k not in base or _canonical(v) != _canonical(base[k])
    }
    blob = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (SPEC section 3)."""

    p: int = 53
    train_frac: float = 0.4
    data_seed: int = 0
    seed: int = 0
    model: str = "quadratic"
    width: int = 1024
    model_options: dict = field(default_factory=dict)
    loss: str = "centred_mse"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 128
    max_steps: int = 20_000
    checkpoint_every: int = 100
    early_stop_patience: int = 10
    early_stop_acc: float = 0.99

    @property
    def run_id(self) -> str:
        """``<model>-p<p>-K<width>-<hash>``: readable, and unique by the hash."""
        h = short_hash(asdict(self), TRAIN_HASH_BASE)
        return f"{self.model}-p{self.p}-K{self.width}-{h}"

    @property
    def split_id(self) -> str:
        return f"p{self.p}-f{self.train_frac:g}-s{self.data_seed}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SamplerConfig:
    """SGLD settings for LLC estimation (SPEC section 4; defaults are the paper's sampler).

    ``nbeta=None`` means DevInterp's default ``batch_size / ln(batch_size)``.
    """

    lr: float = 5e-4
    nbeta: float | None = None
    localization: float = 5.0
    num_chains: int = 3
    num_burnin_steps: int = 100
    num_draws: int = 500
    batch_size: int = 128
    weight_decay: float = 0.0
    num_init_loss_batches: int = 32
    seed: int = 0

    @classmethod
    def from_mapping(cls, sampler: Mapping[str, Any] | SamplerConfig) -> SamplerConfig:
        if isinstance(sampler, SamplerConfig):
            return sampler
        unknown = set(sampler) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"sampler: unknown key(s) {sorted(unknown)}")
        cfg = cls(**dict(sampler))
        for key in ("lr", "localization", "weight_decay"):
            if getattr(cfg, key) < 0:
                raise ConfigError(f"sampler.{key}: must be >= 0, got {getattr(cfg, key)}")
        for key in ("num_chains", "num_draws", "batch_size", "num_init_loss_batches"):
            if getattr(cfg, key) < 1:
                raise ConfigError(f"sampler.{key}: must be >= 1, got {getattr(cfg, key)}")
        if cfg.num_burnin_steps < 0:
            raise ConfigError("sampler.num_burnin_steps: must be >= 0")
        if cfg.nbeta is not None and cfg.nbeta <= 0:
            raise ConfigError(f"sampler.nbeta: must be > 0 or null, got {cfg.nbeta}")
        return cfg

    @property
    def resolved_nbeta(self) -> float:
        """``nbeta``, or DevInterp's default ``m / ln m`` for batch size m (SPEC section 4)."""
        from grokking_llc.llc import default_nbeta

        if self.nbeta is not None:
            return float(self.nbeta)
        if self.batch_size < 2:
            raise ConfigError("sampler.nbeta: the default m/ln(m) needs batch_size >= 2")
        return default_nbeta(self.batch_size)

    @property
    def num_steps(self) -> int:
        return self.num_burnin_steps + self.num_draws


def sampler_id(backend: str, every: int, sampler: SamplerConfig) -> str:
    """Hash naming one LLC setting: backend, checkpoint stride and sampler values."""
    params = {"backend": backend, "every": every, **asdict(sampler)}
    return f"{backend}-{short_hash(params, SAMPLER_HASH_BASE)}"


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


def _format_path(path) -> str:
    return ".".join(str(p) for p in path) or "<config>"


def _fill_defaults(instance: Any, schema: Mapping[str, Any]) -> Any:
    """Fill ``default`` values from ``schema`` into ``instance`` (objects only, recursively)."""
    if schema.get("type") == "object" and isinstance(instance, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                instance[key] = _fill_defaults(instance[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in instance:
                if key not in schema.get("properties", {}):
                    instance[key] = _fill_defaults(instance[key], extra)
    return instance


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh)


def validate_config(config: Mapping[str, Any], schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Validate ``config``, fill defaults, and check the rules beyond the schema.

    Returns the completed config. Raises :class:`ConfigError` with one line per run of the
    workflow: the first problem found, naming its key.
    """
    import jsonschema

    schema = load_schema(schema_path)
    cfg = _fill_defaults(copy.deepcopy(dict(config)), schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        err = errors[0]
        raise ConfigError(f"config error at {_format_path(err.absolute_path)}: {err.message}")
    for study, overrides in cfg["studies"].items():
        unknown = set(overrides) - set(TrainConfig.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"config error at studies.{study}: unknown key(s) {sorted(unknown)}")
        for run in expand_study(cfg["train"], overrides):
            _check_run(run, f"studies.{study}", overridden=set(overrides))
    SamplerConfig.from_mapping(cfg["llc"]["sampler"])
    cfg = _sorted_keys(cfg)  # key order is not meaning: a reordered file reruns nothing
    for name, fig in cfg["figures"].items():
        for key, refs in (("study", [fig.get("study")]), ("studies", fig.get("studies", []))):
            for study in refs:
                if study is not None and study not in cfg["studies"]:
                    raise ConfigError(
                        f"config error at figures.{name}.{key}: no study named {study!r}"
                    )
    return cfg


def _sorted_keys(value: Any) -> Any:
    """``value`` with every mapping's keys in sorted order (lists keep their order)."""
    if isinstance(value, Mapping):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def _check_run(run: TrainConfig, study: str, overridden: set[str]) -> None:
    def fail(key: str, rule: str) -> None:
        where = study if key in overridden else "train"
        raise ConfigError(f"config error at {where}.{key}: {rule} (run of {study})")

    if not is_prime(run.p):
        fail("p", f"must be a prime number, got {run.p}")
    if not 0.0 < run.train_frac < 1.0:
        fail("train_frac", f"must lie in (0, 1), got {run.train_frac}")
    n = n_train(run.p, run.train_frac)
    if not 2 <= n < run.p**2:
        fail("train_frac", f"gives {n} training pairs of {run.p**2}; need 2 <= n < p^2")
    if run.batch_size > n:
        fail("batch_size", f"{run.batch_size} exceeds the {n} training pairs (p={run.p})")
    if run.lr <= 0:
        fail("lr", f"must be > 0, got {run.lr}")
    if run.weight_decay < 0:
        fail("weight_decay", f"must be >= 0, got {run.weight_decay}")
    if run.checkpoint_every > run.max_steps:
        fail(
            "checkpoint_every",
            f"{run.checkpoint_every} is larger than the step budget max_steps={run.max_steps}",
        )


def expand_study(train: Mapping[str, Any], overrides: Mapping[str, Any]) -> list[TrainConfig]:
    """The runs of one study: ``train`` defaults updated by ``overrides``.

    A list value in ``overrides`` sweeps that key; several lists give their cross product
    (in the order the keys are written). Duplicate runs are dropped.
    """
    swept = {k: v for k, v in overrides.items() if isinstance(v, list)}
    fixed = {k: v for k, v in overrides.items() if not isinstance(v, list)}
    runs: dict[str, TrainConfig] = {}
    for combo in itertools.product(*swept.values()):
        params = {**train, **fixed, **dict(zip(swept, combo, strict=True))}
        run = TrainConfig(**params)
        runs.setdefault(run.run_id, run)
    return list(runs.values())


def load_config(path: str | Path, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Read a YAML config file and validate it (see :func:`validate_config`)."""
    with open(path) as fh:
        return validate_config(yaml.safe_load(fh) or {}, schema_path)
