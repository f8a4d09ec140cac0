"""Configuration: defaults, validation, study expansion and the hashes that name outputs.

One source of defaults and limits: ``workflow/schemas/config.schema.yaml``. Every key there is
typed, described and defaulted; :class:`TrainConfig` and :class:`SamplerConfig` take their
defaults from it, and :func:`validate_config` fills a user's config from it. Rules a JSON schema
cannot state (p prime, a batch within the training set, no NaN, names that must exist, ...) are
checked by :mod:`grokking_llc.validation`. Every problem is one line naming the key, raised before
any job starts.

Naming. A run is named by a short hash of its canonical training hyperparameters: keys whose value
equals :data:`TRAIN_HASH_BASE` are left out, so adding an option (with its neutral value added to
the base) renames nothing. A sampler is named by a hash of its settings built the same way from
:data:`SAMPLER_HASH_BASE`. The bases are *not* defaults: they are frozen reference points for
names (the paper's baseline and sampler), independent of the editable schema defaults, and a value
there is never edited.

This module imports neither torch nor the plan, so validating a config (and a dry run) stays fast.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "config.yaml"

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

# Frozen reference values for the sampler hash (the paper's sampler, SPEC section 4). "every"
# stays in the base at its neutral value so that names made before the stride left the hash are
# unchanged; the stride is now part of an LLC track's path, not of the sampler's name.
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
    # added later, at the values that reproduce what came before them
    "kind": "sgld",
    "burn_in": "fixed",
    "max_steps": None,
    "target_ess": 400.0,
    "min_steps": None,
}


class ConfigError(ValueError):
    """A config value breaks a rule; the message is one line naming the key."""


# --------------------------------------------------------------------------------------------
# The schema: the one source of defaults and limits
# --------------------------------------------------------------------------------------------


@cache
def _schema_cached(path: str) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh)


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The config schema (a fresh copy: callers may not mutate the cached one)."""
    return copy.deepcopy(_schema_cached(str(path)))


def _subschema(*keys: str) -> dict[str, Any]:
    node = _schema_cached(str(SCHEMA_PATH))
    for key in keys:
        node = node["additionalProperties"] if key == "*" else node["properties"][key]
    return node


def schema_defaults(*keys: str) -> dict[str, Any]:
    """``{key: default}`` of the object at ``keys`` in the schema (``"*"`` = any name)."""
    props = _subschema(*keys)["properties"]
    return {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}


_TRAIN = schema_defaults("train")
_SAMPLER = schema_defaults("llc", "samplers", "*")

# Keys of a named sampler that are not SGLD settings (where and how it runs).
SAMPLER_META_KEYS = (
    "backend",
    "calibration",
    "studies",
    "every",
    "every_by_study",
    "refine",
    "protocol",
)

# The paper's LLC estimator, written once (SPEC section 4; the paper's appendix H.1): SGLD with
# step size eps = 5e-4, nbeta = DevInterp's default batch / ln(batch) (null; 26.38 at batch 128),
# localisation gamma = 5, 3 chains, a fixed burn-in of 100 steps dropped, 500 draws, minibatches
# of 128, no SGLD weight decay, L(w*) averaged over 32 minibatches, fixed length. A named sampler
# with ``protocol: paper`` takes exactly these values (:func:`expand_protocols`); they do not
# follow the schema's defaults, which may change. ``target_ess`` only matters for an adaptive
# run (``max_steps`` set), so it is pinned at its frozen hash value to keep the sampler's name.
PAPER_PROTOCOL: dict[str, Any] = {
    "kind": "sgld",
    "lr": 5e-4,
    "nbeta": None,
    "localization": 5.0,
    "num_chains": 3,
    "num_burnin_steps": 100,
    "burn_in": "fixed",
    "num_draws": 500,
    "batch_size": 128,
    "weight_decay": 0.0,
    "num_init_loss_batches": 32,
    "max_steps": None,
    "target_ess": 400.0,
    "min_steps": None,
}
PROTOCOLS: dict[str, dict[str, Any]] = {"paper": PAPER_PROTOCOL}


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
    """Hyperparameters of one training run (SPEC section 3); defaults from the schema."""

    p: int = _TRAIN["p"]
    train_frac: float = _TRAIN["train_frac"]
    data_seed: int = _TRAIN["data_seed"]
    seed: int = _TRAIN["seed"]
    model: str = _TRAIN["model"]
    width: int = _TRAIN["width"]
    model_options: dict = field(default_factory=lambda: dict(_TRAIN["model_options"]))
    loss: str = _TRAIN["loss"]
    lr: float = _TRAIN["lr"]
    weight_decay: float = _TRAIN["weight_decay"]
    batch_size: int = _TRAIN["batch_size"]
    max_steps: int = _TRAIN["max_steps"]
    checkpoint_every: int = _TRAIN["checkpoint_every"]
    early_stop_patience: int = _TRAIN["early_stop_patience"]
    early_stop_acc: float = _TRAIN["early_stop_acc"]

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


def default_nbeta(batch_size: int) -> float:
    """DevInterp's default inverse temperature ``m / ln m`` for batch size m (SPEC section 4)."""
    return batch_size / math.log(batch_size)


@dataclass(frozen=True)
class SamplerConfig:
    """SGLD settings for LLC estimation (SPEC section 4); defaults (the paper's sampler) from the
    schema's ``llc.samplers.<name>``. ``nbeta=None`` means DevInterp's ``m / ln m``."""

    lr: float = _SAMPLER["lr"]
    nbeta: float | None = _SAMPLER["nbeta"]
    localization: float = _SAMPLER["localization"]
    num_chains: int = _SAMPLER["num_chains"]
    num_burnin_steps: int = _SAMPLER["num_burnin_steps"]
    num_draws: int = _SAMPLER["num_draws"]
    batch_size: int = _SAMPLER["batch_size"]
    weight_decay: float = _SAMPLER["weight_decay"]
    num_init_loss_batches: int = _SAMPLER["num_init_loss_batches"]
    seed: int = _SAMPLER["seed"]
    kind: str = _SAMPLER["kind"]
    burn_in: str = _SAMPLER["burn_in"]
    max_steps: int | None = _SAMPLER["max_steps"]
    target_ess: float = _SAMPLER["target_ess"]
    min_steps: int | None = _SAMPLER["min_steps"]

    @classmethod
    def from_mapping(cls, sampler: Mapping[str, Any] | SamplerConfig) -> SamplerConfig:
        """Settings from a mapping (unknown keys refused, the schema's limits checked); the
        meta keys of a named sampler (:data:`SAMPLER_META_KEYS`) are ignored."""
        if isinstance(sampler, SamplerConfig):
            return sampler
        names = {f.name for f in fields(cls)}
        settings = {k: v for k, v in sampler.items() if k not in SAMPLER_META_KEYS}
        unknown = set(settings) - names
        if unknown:
            raise ConfigError(f"sampler: unknown key(s) {sorted(unknown)}")
        cfg = cls(**settings)
        props = _subschema("llc", "samplers", "*")["properties"]
        for name in names:
            _check_limits(f"sampler.{name}", getattr(cfg, name), props[name])
            if "enum" in props[name] and getattr(cfg, name) not in props[name]["enum"]:
                raise ConfigError(f"sampler.{name}: must be one of {props[name]['enum']}")
        if cfg.nbeta is None and cfg.batch_size < 2:
            raise ConfigError("sampler.nbeta: the default m/ln(m) needs batch_size >= 2")
        return cfg

    @property
    def resolved_nbeta(self) -> float:
        """``nbeta``, or DevInterp's default ``m / ln m`` for batch size m (SPEC section 4)."""
        if self.nbeta is not None:
            return float(self.nbeta)
        if self.batch_size < 2:
            raise ConfigError("sampler.nbeta: the default m/ln(m) needs batch_size >= 2")
        return default_nbeta(self.batch_size)

    @property
    def num_steps(self) -> int:
        return self.num_burnin_steps + self.num_draws

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_limits(where: str, value: Any, prop: Mapping[str, Any]) -> None:
    """The schema's numeric limits of one value (for objects built outside validate_config)."""
    if value is None:
        if "null" not in (prop.get("type") if isinstance(prop.get("type"), list) else []):
            raise ConfigError(f"{where}: must not be null")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not math.isfinite(value):
        raise ConfigError(f"{where}: must be finite, got {value}")
    if "integer" in str(prop.get("type")) and not float(value).is_integer():
        raise ConfigError(f"{where}: must be an integer, got {value}")
    if "minimum" in prop and value < prop["minimum"]:
        raise ConfigError(f"{where}: must be >= {prop['minimum']}, got {value}")
    if "exclusiveMinimum" in prop and value <= prop["exclusiveMinimum"]:
        raise ConfigError(f"{where}: must be > {prop['exclusiveMinimum']}, got {value}")
    if "maximum" in prop and value > prop["maximum"]:
        raise ConfigError(f"{where}: must be <= {prop['maximum']}, got {value}")


def sampler_id(backend: str, sampler: SamplerConfig, **extra: Any) -> str:
    """Hash naming one sampler setting: backend and SGLD values (plus ``extra`` keys, e.g. the
    calibration it comes from). The checkpoint stride is not part of it (it selects checkpoints,
    it changes no estimate)."""
    params = {"backend": backend, **asdict(sampler), **extra}
    return f"{backend}-{short_hash(params, SAMPLER_HASH_BASE)}"


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


def _format_path(path) -> str:
    return ".".join(str(p) for p in path) or "<config>"


def _fill_defaults(instance: Any, schema: Mapping[str, Any]) -> Any:
    """Fill ``default`` values from ``schema`` into ``instance`` (objects only, recursively)."""
    if "object" in str(schema.get("type")) and isinstance(instance, dict):
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


def _sorted_keys(value: Any) -> Any:
    """``value`` with every mapping's keys in sorted order (lists keep their order)."""
    if isinstance(value, Mapping):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def expand_protocols(config: Mapping[str, Any]) -> dict:
    """A copy of ``config`` in which every named sampler with a ``protocol`` (``llc.samplers.
    <name>.protocol``, a key of :data:`PROTOCOLS`) carries that protocol's SGLD settings.

    Runs before the schema's defaults are filled, so the protocol's values, not the defaults,
    reach the sampler. A sampler with a protocol that also writes one of the protocol's keys, or
    names a calibration, is refused (one line naming the key): a protocol is used as published
    or not at all. Other values (unknown protocols, non-mappings) are left to the schema.
    """
    cfg = copy.deepcopy(dict(config))
    samplers = (cfg.get("llc") or {}).get("samplers") if isinstance(cfg.get("llc"), dict) else None
    if not isinstance(samplers, dict):
        return cfg
    for name, spec in samplers.items():
        if not isinstance(spec, dict) or spec.get("protocol") not in PROTOCOLS:
            continue
        protocol = spec["protocol"]
        where = f"llc.samplers.{name}"
        written = [k for k in PROTOCOLS[protocol] if k in spec]
        if written:
            raise ConfigError(
                f"config error at {where}.{written[0]}: set by protocol {protocol!r} "
                f"(SPEC section 4); remove it, or drop `protocol` to choose the settings"
            )
        if spec.get("calibration") is not None:
            raise ConfigError(
                f"config error at {where}.calibration: a sampler with protocol {protocol!r} "
                "runs the protocol's fixed settings and cannot be calibrated"
            )
        spec.update(copy.deepcopy(PROTOCOLS[protocol]))
    return cfg


def validate_config(config: Mapping[str, Any], schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Validate ``config``, expand sampler protocols (:func:`expand_protocols`), fill defaults,
    and check the rules beyond the schema.

    Returns the completed config with sorted keys (key order is not meaning: a reordered file
    reruns nothing). Raises :class:`ConfigError` naming the key of the first problem found.
    """
    import jsonschema

    from grokking_llc import validation

    schema = load_schema(schema_path)
    cfg = expand_protocols(config)
    validation.fill_figure_studies(cfg, schema)  # before the defaults: only studies it defines
    cfg = _fill_defaults(cfg, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        err = errors[0]
        raise ConfigError(f"config error at {_format_path(err.absolute_path)}: {err.message}")
    validation.check_config(cfg, schema)
    return _sorted_keys(cfg)


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


def deep_update(base: dict, extra: Mapping[str, Any]) -> dict:
    """``base`` updated by ``extra`` (mappings merged recursively; anything else replaced)."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def read_config_files(paths: list[str | Path]) -> dict:
    """The config a run uses: the given files merged in order (one file is taken as written),
    read with :func:`grokking_llc.validation.load_yaml` (duplicate keys and syntax errors are
    refused with the file and line)."""
    from grokking_llc.validation import load_yaml

    cfg: dict = {}
    for path in paths:
        data = load_yaml(path)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"config error in {path}: the top level must be a mapping")
        deep_update(cfg, data)
    return cfg


def load_config(path: str | Path, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Read a YAML config file and validate it (see :func:`validate_config`)."""
    return validate_config(read_config_files([path]), schema_path)


def _cli_value(value: Any) -> Any:
    """A ``--config`` value: Snakemake leaves nested values as strings; read them as YAML
    scalars (``lr=1.0e-3`` becomes a float), mappings recursively."""
    if isinstance(value, Mapping):
        return {k: _cli_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cli_value(v) for v in value]
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return parsed if isinstance(parsed, (int, float, bool)) or parsed is None else value
    return value


def load_workflow_config(
    configfiles: list[str | Path] | tuple = (), overrides: Mapping[str, Any] | None = None
) -> dict:
    """The config of a workflow run: exactly the ``--configfile`` file(s) if any were given,
    else ``config/config.yaml`` -- never a merge of the two -- then the ``--config KEY=VALUE``
    ``overrides`` on top, validated (schema defaults fill what the files leave out)."""
    paths = [Path(p) for p in configfiles] or [DEFAULT_CONFIG_PATH]
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
    cfg = read_config_files(paths)
    deep_update(cfg, _cli_value(dict(overrides or {})))
    return validate_config(cfg)
