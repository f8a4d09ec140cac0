"""Reading and validating a config (the pipeline's entry to the settings of
:mod:`grokking_llc.core.settings`).

A config is validated before any job starts: the schema's types and limits, then the rules a
JSON schema cannot state (p prime, a batch within the training set, no NaN, names that must
exist, ...; :mod:`grokking_llc.pipeline.validation`). Every problem is one line naming the key.
Which runs its studies make, and which of them each sampler estimates, is
:mod:`grokking_llc.pipeline.studies`' (read by the validation and the plan alike).

This module imports neither torch nor the plan, so validating a config (and a dry run) stays fast.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from grokking_llc.core.settings import (
    PROTOCOLS,
    REPO_ROOT,
    SCHEMA_PATH,
    ConfigError,
    load_schema,
)
from grokking_llc.pipeline import validation

DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "config.yaml"


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
    read with :func:`grokking_llc.pipeline.validation.load_yaml` (duplicate keys and syntax
    errors are refused with the file and line)."""
    cfg: dict = {}
    for path in paths:
        data = validation.load_yaml(path)
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
