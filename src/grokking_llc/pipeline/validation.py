"""Config rules a JSON schema cannot state, and a YAML reader that refuses duplicate keys.

:func:`load_yaml` reads a config file; a key written twice in one mapping (where plain YAML lets
the last value silently win) and a syntax error are each refused with one line naming the file and
line. :func:`check_config` runs on the schema-validated, default-filled config and refuses, with
one line naming the key (``config error at <key>: <rule>``), the first problem of these classes:

* numbers: NaN or infinity anywhere; an integer outside the 64-bit range; a float where the
  schema means a count (``num_chains: 2.0``, ``p: 7.0``: jsonschema takes 2.0 as an integer, so
  the raw values are checked against the schema's integer types);
* lists: an empty sweep; the same value twice in one list (a sweep, a grid, a list of names);
* names: a study or sampler named anywhere (figures, ``every_by_study``, a sampler's
  ``studies``) that does not exist;
* runs (each run of each study, with the study's values, which the schema types but does not
  bound): the schema's limits for ``train``; p prime and small enough for the split's int16
  columns; a training set of at least 2 pairs and a validation set of at least 1; the training
  batch within the training set; the checkpoint interval within the step budget; model options
  that the model kind takes (asked of the architecture: a transformer's head count must divide
  its width, the quadratic net takes none); no minibatch or split on which the run's loss is
  identically zero or undefined (:data:`grokking_llc.core.data.LOSS_MIN_SAMPLES`: the centred loss
  needs 2 samples in the training batch, the training split and the validation split, SPEC
  section 2); an ``early_stop_acc`` above chance accuracy 1/p (at or below it every checkpoint
  counts and the run stops after ``early_stop_patience`` checkpoints whatever it learns);
* samplers (every mapping under ``llc.samplers``): the schema's limits, a positive step size,
  ``nbeta: null`` (``m / ln m``) only with ``batch_size >= 2``, and a batch within the training
  set of every run the sampler estimates (the runs of
  :func:`grokking_llc.pipeline.studies.estimated_studies`, the plan's, among them those its
  per-shape calibrations run at; the first run of a grid figure that uses it) and large enough
  for that run's loss;
* calibration: ``llc.calibration.grid`` gives the localisation ladder as ``localization`` or as
  ``resolution``, not both (the calibration job would stop on it after training);
* figures: a figure that draws LLC values points at a study some sampler estimates (one
  sampler for all the studies of ``h2``), else it could not be drawn.

:func:`fill_figure_studies` runs before the schema's defaults are filled: a figure whose study
the user did not write defaults to the schema's study only when the config defines it, else to
the config's only study (when a sampler estimates it, for an LLC figure), else to none, so a
config never refers to a study its user did not write.

Each rule is a small function over the config in :data:`CHECKS`, robust to keys it does not
know; they run in order and the first problem found is raised as
:class:`grokking_llc.core.settings.ConfigError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from grokking_llc.core.data import is_prime, loss_samples_problem, n_train
from grokking_llc.core.settings import ConfigError, TrainConfig, load_schema
from grokking_llc.pipeline.catalog import figure_catalog
from grokking_llc.pipeline.studies import covers, draws_llc, estimated_studies, expand_study

Problem = tuple[str, str]  # (key path, rule broken)

INT64_MAX = 2**63 - 1
P_MAX = 2**15 - 1  # the split stores a, b and c as int16 (grokking_llc.core.data.make_split)


def _grid_figures() -> list[str]:
    return [k for k, info in figure_catalog().items() if info.reads == "grid"]


# --------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader reports it
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _DuplicateKey(key, line, first)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int):
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file; refuse a duplicate key or a syntax error with one line naming the file
    and line (:class:`~grokking_llc.core.settings.ConfigError`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as dup:
        raise ConfigError(
            f"config error in {path}, line {dup.line}: duplicate key {dup.key!r} (first written "
            f"at line {dup.first}); a key may appear once per mapping"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        parts = (getattr(err, "context", None), getattr(err, "problem", None))
        what = " ".join(str(p) for p in parts if p) or str(err).splitlines()[0]
        raise ConfigError(f"config error in {path}{where}: YAML syntax error: {what}") from None


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _key(*parts: Any) -> str:
    return ".".join(str(p) for p in parts if p != "")


def _types(node: Mapping[str, Any]) -> set[str]:
    t = node.get("type")
    return set(t) if isinstance(t, list) else {t} if isinstance(t, str) else set()


def _limit_problem(value: Any, prop: Mapping[str, Any]) -> str | None:
    """The schema's numeric limits and enum for one value (None when it keeps them)."""
    if "enum" in prop and value not in prop["enum"]:
        return f"must be one of {prop['enum']}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if "minimum" in prop and value < prop["minimum"]:
        return f"must be >= {prop['minimum']}, got {value}"
    if "exclusiveMinimum" in prop and value <= prop["exclusiveMinimum"]:
        return f"must be > {prop['exclusiveMinimum']}, got {value}"
    if "maximum" in prop and value > prop["maximum"]:
        return f"must be <= {prop['maximum']}, got {value}"
    if "exclusiveMaximum" in prop and value >= prop["exclusiveMaximum"]:
        return f"must be < {prop['exclusiveMaximum']}, got {value}"
    return None


class _Context:
    """The config being checked, with what several rules need computed once."""

    def __init__(self, cfg: Mapping[str, Any], schema: Mapping[str, Any]):
        self.cfg = cfg
        self.schema = schema

    def prop(self, *keys: str) -> dict:
        """Schema node at ``keys`` (``"*"``: a named entry); {} when the schema has none."""
        node: Any = self.schema
        for key in keys:
            node = _dict(node)
            if key == "*":
                node = node.get("additionalProperties")
            else:
                node = _dict(node.get("properties")).get(key)
        return _dict(node)

    @property
    def studies(self) -> dict:
        return _dict(self.cfg.get("studies"))

    @property
    def samplers(self) -> dict:
        return _dict(_dict(self.cfg.get("llc")).get("samplers"))

    @cached_property
    def study_runs(self) -> dict[str, list[TrainConfig]]:
        train = _dict(self.cfg.get("train"))
        return {s: expand_study(train, _dict(ov)) for s, ov in self.studies.items()}

    def sampler_specs(self) -> list[tuple[str, dict]]:
        """``(key, mapping)`` of every named sampler, ``llc.samplers.<name>``."""
        return [
            (_key("llc.samplers", n), s) for n, s in self.samplers.items() if isinstance(s, dict)
        ]

    def sampled_runs(self) -> Iterator[tuple[str, dict, str, TrainConfig]]:
        """``(sampler key, sampler settings, why, run)`` for every run a sampler estimates: the
        runs of its :func:`~grokking_llc.pipeline.studies.estimated_studies` (the plan's tracks
        and calibrations), and the first run of a grid figure drawn with it."""
        for name, spec in self.samplers.items():
            for study in estimated_studies(self.cfg, name) if isinstance(spec, dict) else []:
                for run in self.study_runs.get(study, []):
                    yield _key("llc.samplers", name), spec, f"a run of study {study}", run
        for fig in _grid_figures():
            entry = _dict(_dict(self.cfg.get("figures")).get(fig))
            runs = self.study_runs.get(entry.get("study"), [])
            spec = self.samplers.get(entry.get("sampler"))
            if runs and isinstance(spec, dict):
                yield _key("llc.samplers", entry["sampler"]), spec, f"figure {fig}", runs[0]


# --------------------------------------------------------------------------------------------
# The checks: each yields (key, rule) problems and tolerates keys it does not know
# --------------------------------------------------------------------------------------------


def _walk(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*path, i))


def _path_key(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<config>"


def check_finite_numbers(ctx: _Context) -> Iterator[Problem]:
    """NaN or infinity anywhere (``.nan``, ``.inf``, or an overflowing literal such as 1e999);
    an integer beyond the 64-bit range."""
    for path, value in _walk(ctx.cfg):
        if isinstance(value, float) and not math.isfinite(value):
            yield _path_key(path), f"must be a finite number, got {value}"
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
            yield _path_key(path), f"{value} is outside the 64-bit integer range"


def _integer_problems(value: Any, node: Mapping[str, Any], path: tuple) -> Iterator[Problem]:
    """Floats where ``node`` (a schema node) allows integers only, recursively."""
    node = _dict(node)
    branches = node.get("oneOf") or node.get("anyOf")
    if branches:
        kind = "array" if isinstance(value, list) else "object" if isinstance(value, dict) else ""
        if kind:
            fits = [_dict(b) for b in branches if kind in _types(_dict(b))]
            if fits:
                yield from _integer_problems(value, fits[0], path)
            return
        types = set().union(*(_types(_dict(b)) for b in branches)) - {"array", "object"}
        if isinstance(value, float) and "integer" in types and "number" not in types:
            yield _path_key(path), f"must be an integer (a count), got {value!r}"
        return
    types = _types(node)
    if isinstance(value, float) and "integer" in types and "number" not in types:
        yield _path_key(path), f"must be an integer (a count), got {value!r}"
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _integer_problems(item, _dict(node.get("items")), (*path, i))
    elif isinstance(value, dict):
        props, extra = _dict(node.get("properties")), node.get("additionalProperties")
        for k, v in value.items():
            sub = props.get(k, extra if isinstance(extra, dict) else None)
            if sub is not None:
                yield from _integer_problems(v, sub, (*path, k))


def check_integer_counts(ctx: _Context) -> Iterator[Problem]:
    """A float (even 2.0) where the schema means an integer: jsonschema accepts 2.0 as an
    integer, so the raw values are checked here."""
    yield from _integer_problems(ctx.cfg, ctx.schema, ())


def check_lists(ctx: _Context) -> Iterator[Problem]:
    """An empty sweep; no study at all; a value written twice in one list."""
    if not ctx.studies:
        yield "studies", "no study is defined: nothing would be trained"
    for study, overrides in ctx.studies.items():
        for key, value in _dict(overrides).items():
            if isinstance(value, list) and not value:
                yield _key("studies", study, key), "an empty list sweeps nothing (no run)"
    for path, value in _walk(ctx.cfg):
        if not isinstance(value, list) or "model_options" in path:
            continue
        seen: list = []
        for item in value:
            if isinstance(item, (dict, list)):
                continue
            if any(item == s and type(item) is not bool for s in seen):
                yield _path_key(path), f"{item!r} is listed twice"
            seen.append(item)


def check_names(ctx: _Context) -> Iterator[Problem]:
    """Every study and sampler named anywhere exists."""
    studies, samplers = set(ctx.studies), set(ctx.samplers)

    def unknown_study(key: str, name: Any) -> Iterator[Problem]:
        if name is not None and name not in studies:
            yield key, f"no study named {name!r} (studies: {sorted(studies)})"

    for fig, entry in _dict(ctx.cfg.get("figures")).items():
        entry = _dict(entry)
        yield from unknown_study(_key("figures", fig, "study"), entry.get("study"))
        for name in entry.get("studies") or []:
            yield from unknown_study(_key("figures", fig, "studies"), name)
        if entry.get("study") is not None or entry.get("studies"):
            for key in ("sampler", "samplers"):
                value = entry.get(key)
                for name in value if isinstance(value, list) else [value] if value else []:
                    if samplers and name not in samplers:
                        known = sorted(samplers)
                        rule = f"no sampler named {name!r} (llc.samplers: {known})"
                        yield _key("figures", fig, key), rule
    llc = _dict(ctx.cfg.get("llc"))
    for name in _dict(llc.get("every_by_study")):
        yield from unknown_study("llc.every_by_study", name)
    for where, spec in ctx.sampler_specs():
        for name in _dict(spec.get("every_by_study")):
            yield from unknown_study(_key(where, "every_by_study"), name)
        for name in spec.get("studies") or []:
            yield from unknown_study(_key(where, "studies"), name)


def _options_problem(run: TrainConfig) -> str | None:
    """Ask the model kind whether it takes ``run.model_options`` (for this p and width), through
    :func:`grokking_llc.core.architectures.options.check_model_options`, which needs no torch."""
    from grokking_llc.core.architectures.options import check_model_options

    try:
        check_model_options(run.model, run.p, run.width, dict(run.model_options or {}))
    except (TypeError, ValueError) as err:
        return str(err)
    return None


def _run_problems(run: TrainConfig, train_props: Mapping[str, Any]) -> Iterator[Problem]:
    """(train keys involved, rule) for one run; the first key is the one the rule is about."""
    for key, prop in train_props.items():
        problem = _limit_problem(getattr(run, key, None), _dict(prop))
        if problem:
            yield (key,), problem
    if not is_prime(run.p):
        yield ("p",), f"must be a prime number, got {run.p}"
    elif run.p > P_MAX:
        yield ("p",), f"{run.p} exceeds {P_MAX}, the largest the split's int16 columns hold"
    n = n_train(run.p, run.train_frac)
    if not 2 <= n < run.p**2:
        yield ("train_frac", "p"), f"gives {n} training pairs of {run.p**2}; need 2 <= n < p^2"
    if run.batch_size > n:
        rule = f"{run.batch_size} exceeds the {n} training pairs (p={run.p})"
        yield ("batch_size", "p", "train_frac"), rule
    problem = loss_samples_problem(run.loss, min(run.batch_size, n))
    if problem:
        yield ("batch_size", "loss"), f"{run.batch_size}: {problem} (training minibatch)"
    if 2 <= n < run.p**2:
        problem = loss_samples_problem(run.loss, n) or loss_samples_problem(run.loss, run.p**2 - n)
        if problem:
            rule = f"gives {n} training and {run.p**2 - n} validation pairs: {problem}"
            yield ("train_frac", "p", "loss"), rule
    if run.early_stop_acc <= 1.0 / run.p:
        rule = (
            f"{run.early_stop_acc:g} is at or below chance accuracy 1/p = {1.0 / run.p:.3g}: "
            f"every checkpoint counts, so training would stop after early_stop_patience="
            f"{run.early_stop_patience} checkpoint(s) whatever it learns"
        )
        yield ("early_stop_acc", "p"), rule
    if run.checkpoint_every > run.max_steps:
        rule = f"{run.checkpoint_every} is larger than the step budget max_steps={run.max_steps}"
        yield ("checkpoint_every", "max_steps"), rule
    problem = _options_problem(run)
    if problem:
        rule = f"{problem} (model {run.model!r}, width {run.width})"
        yield ("model_options", "model", "width", "p"), rule


def check_runs(ctx: _Context) -> Iterator[Problem]:
    """Every run of every study: the train limits, and the rules across keys. The key named is
    the study's when the study sets one of the keys involved, else the one under ``train``."""
    train_props = _dict(ctx.prop("train").get("properties"))
    for study, overrides in ctx.studies.items():
        overrides = _dict(overrides)
        try:
            runs = ctx.study_runs[study]
        except TypeError as err:  # a key TrainConfig does not take (the schema refuses it)
            yield _key("studies", study), str(err)
            continue
        for run in runs:
            for keys, rule in _run_problems(run, train_props):
                set_here = [k for k in keys if k in overrides]
                where = _key("studies", study, set_here[0]) if set_here else _key("train", keys[0])
                if set_here and set_here[0] != keys[0]:
                    rule = f"{keys[0]} {rule}"
                yield where, f"{rule} (a run of study {study})"


def check_samplers(ctx: _Context) -> Iterator[Problem]:
    """Each sampler's limits, a positive step size, the default nbeta's batch rule (``m / ln m``,
    SPEC section 4), and its batch within the training set (``n = round(train_frac p^2)``, SPEC
    section 1) of every run it estimates."""
    props = _dict(ctx.prop("llc", "samplers", "*").get("properties"))
    for where, spec in ctx.sampler_specs():
        for key, value in spec.items():
            problem = _limit_problem(value, _dict(props.get(key))) if value is not None else None
            if problem:
                yield _key(where, key), problem
        lr = spec.get("lr")
        if isinstance(lr, (int, float)) and lr <= 0:
            yield _key(where, "lr"), f"the SGLD step size must be > 0, got {lr}"
        batch = spec.get("batch_size")
        if "nbeta" in spec and spec["nbeta"] is None and isinstance(batch, int) and batch < 2:
            rule = (
                f"{batch} with nbeta null: the default nbeta m/ln(m) is undefined for m < 2; "
                "set nbeta or batch_size >= 2"
            )
            yield _key(where, "batch_size"), rule
    default_batch = _dict(props.get("batch_size")).get("default")
    for where, spec, why, run in ctx.sampled_runs():
        batch = spec.get("batch_size", default_batch)
        n = n_train(run.p, run.train_frac)
        key = _key(where, "batch_size")
        if isinstance(batch, int) and batch > n:
            rule = f"SGLD batch {batch} exceeds the {n} training pairs of {why}"
            yield key, f"{rule} (p={run.p}, train_frac={run.train_frac:g})"
        problem = loss_samples_problem(run.loss, batch) if isinstance(batch, int) else None
        if problem:
            yield key, f"SGLD batch {batch} of {why}: {problem}; every LLC would be 0"


def _covering_samplers(ctx: _Context, studies: list[str]) -> list[str]:
    """Named samplers that estimate every study of ``studies`` (``studies: null`` covers every
    study an LLC figure draws)."""
    own = {name: _dict(spec).get("studies") for name, spec in ctx.samplers.items()}
    return [name for name in own if all(covers(own[name], s) for s in studies)]


def check_figures(ctx: _Context) -> Iterator[Problem]:
    """A figure that draws LLC values of its study's runs needs a sampler that estimates that
    study (for ``h2``, one that estimates all its studies); the plan would otherwise leave the
    figure out without a word."""
    studies = set(ctx.studies)
    for key, entry in _dict(ctx.cfg.get("figures")).items():
        if not draws_llc(key) or not isinstance(entry, dict):
            continue
        study = entry.get("study")
        wanted = [study] if isinstance(study, str) else list(entry.get("studies") or [])
        field = "study" if isinstance(study, str) else "studies"
        if not wanted or not set(wanted) <= studies:  # unknown names: check_names says so
            continue
        if not _covering_samplers(ctx, wanted):
            own = {n: _dict(s).get("studies") for n, s in ctx.samplers.items()}
            yield (
                _key("figures", key, field),
                (
                    f"no sampler estimates {', '.join(repr(s) for s in wanted)} (the samplers' "
                    f"studies: {own}), so the figure could not be drawn; add the study to a "
                    "sampler's studies or set this figure's study to null"
                ),
            )


def check_by_sampler(ctx: _Context) -> Iterator[Problem]:
    """``figures.<key>.by_sampler`` names existing samplers and studies, and each sampler
    estimates the study it is drawn on."""
    studies, samplers = set(ctx.studies), ctx.samplers
    for key, entry in _dict(ctx.cfg.get("figures")).items():
        for name, study in _dict(_dict(entry).get("by_sampler")).items():
            where = _key("figures", key, "by_sampler", name)
            if name not in samplers:
                yield where, f"no sampler named {name!r} (llc.samplers: {sorted(samplers)})"
            elif study not in studies:
                yield where, f"no study named {study!r} (studies: {sorted(studies)})"
            else:
                own = _dict(samplers[name]).get("studies")
                if not covers(own, study):
                    yield (
                        where,
                        (
                            f"sampler {name!r} does not estimate study {study!r} (its studies: "
                            f"{own}); add the study to the sampler's studies"
                        ),
                    )


def check_step_sizes(ctx: _Context) -> Iterator[Problem]:
    """Step sizes, temperatures and their factors anywhere under ``llc`` and ``figures``
    (grids, calibration) are positive."""
    for top in ("llc", "figures"):
        for path, value in _walk(ctx.cfg.get(top), (top,)):
            if not path or path[-1] not in ("lr", "nbeta", "nbeta_factors"):
                continue
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0:
                    yield _path_key(path), f"must be > 0, got {v}"


def check_calibration(ctx: _Context) -> Iterator[Problem]:
    """The calibration's ladder is given one way (:mod:`grokking_llc.sampling.calibrate` refuses
    both,
    but only once its job runs, after training)."""
    grid = _dict(_dict(_dict(ctx.cfg.get("llc")).get("calibration")).get("grid"))
    if grid.get("localization") is not None and grid.get("resolution") is not None:
        yield (
            "llc.calibration.grid",
            (
                "give localization or resolution, not both (the localisation ladder as gammas or "
                "as resolutions nbeta lambda_max / gamma)"
            ),
        )


CHECKS: list[Callable[[_Context], Iterator[Problem]]] = [
    check_finite_numbers,
    check_integer_counts,
    check_lists,
    check_runs,
    check_names,
    check_by_sampler,
    check_samplers,
    check_figures,
    check_step_sizes,
    check_calibration,
]


def fill_figure_studies(cfg: dict[str, Any], schema: Mapping[str, Any]) -> None:
    """Before the schema's defaults are filled (in place): each figure whose study the user did
    not write and whose schema default names a study (Figure 3, the traces: ``baseline``) takes
    that study only if the config defines it; else the config's only study, when it has exactly
    one (and, for a figure of LLC values, a sampler estimates it); else none. A user's config
    with ``studies: {mine: ...}`` thus draws ``mine`` instead of being refused on a key it never
    wrote. A grid figure's sampler left out likewise takes the config's only sampler when the
    schema's default (``paper``) is not one of its samplers."""
    figs_schema = _dict(_dict(_dict(schema.get("properties")).get("figures")).get("properties"))
    studies = (
        cfg.get("studies")
        if "studies" in cfg
        else _dict(_dict(schema.get("properties")).get("studies")).get("default")
    )
    if not isinstance(studies, dict) or ("figures" in cfg and not isinstance(cfg["figures"], dict)):
        return  # the schema refuses it
    ctx = _Context(cfg, schema)
    samplers_given = isinstance(_dict(cfg.get("llc")).get("samplers"), dict)
    for key, sub in figs_schema.items():
        default = _dict(_dict(_dict(sub).get("properties")).get("study")).get("default")
        entry = _dict(cfg).get("figures", {}).get(key)
        if not isinstance(default, str) or (isinstance(entry, dict) and "study" in entry):
            continue
        if entry is not None and not isinstance(entry, dict):
            continue  # the schema refuses it
        if default in studies:
            continue  # the schema's default fills it
        only = next(iter(studies)) if len(studies) == 1 else None
        if only is not None and draws_llc(key) and samplers_given:
            only = only if _covering_samplers(ctx, [only]) else None
        cfg.setdefault("figures", {}).setdefault(key, {})["study"] = only
    # likewise the sampler a grid figure varies (b2, bias_reduced: ``paper``): the config's only
    # sampler when it names none of that name
    samplers = ctx.samplers if samplers_given else {"paper": {}}
    for key, entry in _dict(cfg.get("figures")).items():
        default = _dict(_dict(_dict(figs_schema.get(key)).get("properties")).get("sampler"))
        default = default.get("default")
        if not isinstance(entry, dict) or "sampler" in entry or not isinstance(default, str):
            continue
        if default not in samplers and len(samplers) == 1:
            entry["sampler"] = next(iter(samplers))


def check_config(cfg: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> None:
    """Refuse ``cfg`` (schema-validated, defaults filled) at the first problem of
    :data:`CHECKS`, with :class:`~grokking_llc.core.settings.ConfigError` naming the key in one
    line."""
    ctx = _Context(cfg, schema if schema is not None else load_schema())
    for check in CHECKS:
        for key, rule in check(ctx):
            raise ConfigError(f"config error at {key}: {rule}")
