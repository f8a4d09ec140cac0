"""Settings types, their defaults and the hashes that name outputs (SPEC sections 3 and 4).

One source of defaults and limits: ``workflow/schemas/config.schema.yaml``. Every key there is
typed, described and defaulted; :class:`TrainConfig` and :class:`SamplerConfig` (the one sampler
settings type, from the YAML to the sampler) take their defaults from it, and the pipeline's
:func:`grokking_llc.pipeline.config.validate_config` fills a user's config from it. The paper's
sampler is written once here (:data:`PAPER_PROTOCOL`).

Naming. A run is named by a short hash of its canonical training hyperparameters: keys whose value
equals :data:`TRAIN_HASH_BASE` are left out, so adding an option (with its neutral value added to
the base) renames nothing. A sampler is named by a hash of its settings built the same way from
:data:`SAMPLER_HASH_BASE`. The bases are *not* defaults: they are frozen reference points for
names (the paper's baseline and sampler), independent of the editable schema defaults, and a value
there is never edited.

This module imports neither torch nor anything above the core layer.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
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
    # the preconditioned kinds' constants, at the values every sampler had before they were keys
    "rmsprop_alpha": 0.99,
    "rmsprop_eps": 0.1,
    "gn_damping": 1.0,
    "gn_probes": 64,
}
# The preconditioned kinds' constants: sampler keys added after job params were first written,
# so :meth:`SamplerConfig.to_dict` leaves them out at their :data:`SAMPLER_HASH_BASE` value and
# no job's params (the calibration's name, an LLC track's provenance) change where they keep it.
PRECONDITIONER_KEYS = ("rmsprop_alpha", "rmsprop_eps", "gn_damping", "gn_probes")
_SAMPLER_KEYS_OMITTED_AT_BASE = PRECONDITIONER_KEYS


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
# run (``max_steps`` set), and the preconditioners' constants only for another ``kind``, so they
# are pinned at their frozen hash values to keep the sampler's name.
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
    **{k: SAMPLER_HASH_BASE[k] for k in PRECONDITIONER_KEYS},
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
    """Sampler settings for LLC estimation (SPEC sections 4 and 10), the one type from the YAML's
    ``llc.samplers.<name>`` to the sampler; defaults (the paper's sampler) and limits from the
    schema, which describes every key. ``nbeta=None`` means DevInterp's ``m / ln m``.

    * SGLD (SPEC section 4): ``lr``, ``nbeta``, ``localization``, ``num_chains``,
      ``num_burnin_steps``, ``num_draws``, ``batch_size``, ``weight_decay``,
      ``num_init_loss_batches``, ``seed``.
    * ``kind``: ``"sgld"``, or a preconditioned kind of the fast backend, ``"rmsprop"``
      (RMSprop-SGLD: decay ``rmsprop_alpha`` in (0, 1), ``delta = rmsprop_eps`` > 0) or
      ``"gn_diag"`` (diagonal Gauss-Newton at w*: relative damping ``gn_damping`` > 0 from
      ``gn_probes`` >= 1 random probes); :mod:`grokking_llc.sampling.sgld` states the updates.
    * ``burn_in``: ``"auto"`` (drop ``max(num_burnin_steps, measured relaxation)``) or
      ``"fixed"`` (``num_burnin_steps``).
    * Length: ``max_steps`` None for a fixed-length run of ``num_burnin_steps + num_draws``
      steps; otherwise the cap of an adaptive run that stops once the chains are stationary with
      an ESS of at least ``target_ess``, not before ``min_steps`` steps (None: no minimum).

    A value outside the schema's limits is refused at construction with a
    :class:`ConfigError` naming the key."""

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
    rmsprop_alpha: float = _SAMPLER["rmsprop_alpha"]
    rmsprop_eps: float = _SAMPLER["rmsprop_eps"]
    gn_damping: float = _SAMPLER["gn_damping"]
    gn_probes: int = _SAMPLER["gn_probes"]

    def __post_init__(self) -> None:
        props = _subschema("llc", "samplers", "*")["properties"]
        for f in fields(self):
            value, prop = getattr(self, f.name), props[f.name]
            _check_limits(f"sampler.{f.name}", value, prop)
            if "enum" in prop and value not in prop["enum"]:
                raise ConfigError(f"sampler.{f.name}: must be one of {prop['enum']}")
        if self.nbeta is None and self.batch_size < 2:
            raise ConfigError("sampler.nbeta: the default m/ln(m) needs batch_size >= 2")

    @classmethod
    def from_mapping(cls, sampler: Mapping[str, Any] | SamplerConfig) -> SamplerConfig:
        """Settings from a mapping (unknown keys refused, the schema's limits checked); the
        meta keys of a named sampler (:data:`SAMPLER_META_KEYS`) are ignored."""
        if isinstance(sampler, SamplerConfig):
            return sampler
        settings = {k: v for k, v in sampler.items() if k not in SAMPLER_META_KEYS}
        unknown = set(settings) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"sampler: unknown key(s) {sorted(unknown)}")
        return cls(**settings)

    @property
    def resolved_nbeta(self) -> float:
        """``nbeta``, or DevInterp's default ``m / ln m`` for batch size m (SPEC section 4)."""
        if self.nbeta is not None:
            return float(self.nbeta)
        return default_nbeta(self.batch_size)

    @property
    def num_steps(self) -> int:
        return self.num_burnin_steps + self.num_draws

    def to_dict(self) -> dict[str, Any]:
        """Every key, except the preconditioners' constants where they keep their
        :data:`SAMPLER_HASH_BASE` value (:data:`_SAMPLER_KEYS_OMITTED_AT_BASE`);
        :meth:`from_mapping` of it gives these settings back."""
        return {
            k: v
            for k, v in asdict(self).items()
            if k not in _SAMPLER_KEYS_OMITTED_AT_BASE or v != SAMPLER_HASH_BASE[k]
        }


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
    if "exclusiveMaximum" in prop and value >= prop["exclusiveMaximum"]:
        raise ConfigError(f"{where}: must be < {prop['exclusiveMaximum']}, got {value}")


def sampler_id(backend: str, sampler: SamplerConfig, **extra: Any) -> str:
    """Hash naming one sampler setting: backend and SGLD values (plus ``extra`` keys, e.g. the
    calibration it comes from). The checkpoint stride is not part of it (it selects checkpoints,
    it changes no estimate)."""
    params = {"backend": backend, **asdict(sampler), **extra}
    return f"{backend}-{short_hash(params, SAMPLER_HASH_BASE)}"
