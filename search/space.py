"""Search spaces: which config keys a study tunes, and over which distributions.

Our spelling, in ``conf/search_space/*.yaml``, has one entry per hyperparameter::

    learning_rate: {key: training.learning_rate, type: float, low: 1.0e-5, high: 5.0e-4, log: true}
    batch_size:    {key: training.batch_size, type: categorical, choices: [16, 32]}

A parameter is named after its entry (the name Optuna and the dashboard show) and points at a key of the
composed config; a trial's values become plain Hydra overrides of those keys. The Hydra Optuna sweeper's
spellings (``hydra.sweeper.params`` and ``hydra.sweeper.search_space``) give the same :class:`SearchSpace`
(:mod:`hps.search.hydra_optuna_syntax`).

An entry ``{group: model, choices: [minilm, tiny_bert]}`` searches a config group: each trial picks one of its
options (``model=tiny_bert``), and a numeric range whose bound depends on that option (``freeze_layers`` up to
the chosen model's depth) is asked after it, per option (:mod:`hps.search.groups`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    IntDistribution,
    distribution_to_json,
)

from hps.search import space_checks
from hps.search.distributions import categorical, numeric
from hps.search.errors import ConfigError

TYPES = ("float", "int", "categorical")
_NUMERIC_FIELDS = {"key", "type", "low", "high", "log", "step"}
_FIELDS = {"float": _NUMERIC_FIELDS, "int": _NUMERIC_FIELDS, "categorical": {"key", "type", "choices"}}
_GROUP_FIELDS = {"group", "type", "choices"}
_PLAIN_OPTION = re.compile(r"[\w][\w./-]*")  # a group option Hydra parses unquoted (model=tiny_bert)


@dataclass(frozen=True)
class Parameter:
    """One tuned hyperparameter: its name in the study, the config key it sets, its distribution."""

    name: str
    key: str
    distribution: BaseDistribution
    group: bool = False
    """Whether ``key`` is a config group (``model``) and the values are its options (a Hydra group override)."""
    depends_on: str | None = None
    """The group parameter whose option sets this parameter's range, per option in ``by_option``; None: fixed."""
    by_option: Mapping[str, BaseDistribution] | None = None
    """With ``depends_on``: each option's distribution. ``distribution`` then spans them all (stored, shown)."""

    def distribution_for(self, params: Mapping[str, Any]) -> BaseDistribution:
        """The distribution this parameter is asked with when the trial's other values are ``params``."""
        if self.depends_on is None or self.by_option is None:
            return self.distribution
        return self.by_option[params[self.depends_on]]

    def as_json(self) -> dict[str, Any]:
        """The key and distribution as Optuna's JSON; a group marked, per-option ranges listed."""
        stored: dict[str, Any] = {"key": self.key, "distribution": distribution_to_json(self.distribution)}
        if self.group:
            stored["group"] = True
        if self.depends_on is not None and self.by_option is not None:
            stored["depends_on"] = self.depends_on
            stored["by_option"] = {option: distribution_to_json(d) for option, d in self.by_option.items()}
        return stored


class SearchSpace:
    """An ordered set of :class:`Parameter`, addressed by name.

    Args:
        parameters: The parameters; two may share neither a name (the study could not tell them apart) nor a
            key (one would overwrite the other's value).
    """

    def __init__(self, parameters: list[Parameter]) -> None:
        self.parameters = {p.name: p for p in parameters}
        for what, values in (("name", [p.name for p in parameters]), ("key", [p.key for p in parameters])):
            duplicated = sorted({v for v in values if values.count(v) > 1})
            if duplicated:
                raise ConfigError(f"search space: {what} {duplicated[0]!r} is used by more than one parameter")

    def __len__(self) -> int:
        return len(self.parameters)

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        """Every parameter's distribution (a range that depends on a group's option: the span of its options)."""
        return {name: p.distribution for name, p in self.parameters.items()}

    @property
    def independent_distributions(self) -> dict[str, BaseDistribution]:
        """The distributions a trial is asked with first: all but those that depend on a group's option."""
        return {name: p.distribution for name, p in self.parameters.items() if p.depends_on is None}

    @property
    def group(self) -> Parameter | None:
        """The parameter that searches a config group, if any (a space has at most one)."""
        return next((p for p in self.parameters.values() if p.group), None)

    def suggest_dependent(self, trial: optuna.Trial) -> None:
        """Ask ``trial`` (asked with :attr:`independent_distributions`) for each parameter whose range depends on
        the group option it drew, with that option's range."""
        for p in self.parameters.values():
            if p.depends_on is not None:
                suggest(trial, p.name, p.distribution_for(trial.params))

    def for_option(self, option: str) -> SearchSpace:
        """The space as trials of one group option see it: the group parameter left out, each dependent range that
        option's. The objective's checks run on it, once per option."""
        return SearchSpace(
            [
                replace(p, distribution=p.distribution_for({p.depends_on: option}), depends_on=None, by_option=None)
                for p in self.parameters.values()
                if not p.group
            ]
        )

    def as_json(self) -> dict[str, dict[str, Any]]:
        """The space as JSON-friendly data, stored with a study: each parameter's key and distribution."""
        return {name: p.as_json() for name, p in self.parameters.items()}

    def by_key(self) -> dict[str, Parameter]:
        return {p.key: p for p in self.parameters.values()}

    def merged(self, other: SearchSpace) -> SearchSpace:
        """This space with ``other``'s parameters added; on a shared key, ``other`` wins."""
        replaced = set(other.by_key())
        kept = [p for p in self.parameters.values() if p.key not in replaced]
        return SearchSpace(kept + list(other.parameters.values()))

    def admits(self, name: str, value: Any, params: Mapping[str, Any] | None = None) -> bool:
        """Whether parameter ``name`` exists and ``value`` lies in its distribution.

        Args:
            name: The parameter.
            value: Its value.
            params: The trial's other values: a range that depends on a group's option admits only the values of
                the option they hold (none when they hold no option).
        """
        parameter = self.parameters.get(name)
        if parameter is None:
            return False
        distribution = parameter.distribution
        if parameter.depends_on is not None and parameter.by_option is not None:
            option = (params or {}).get(parameter.depends_on)
            if option not in parameter.by_option:
                return False
            distribution = parameter.by_option[option]
        if isinstance(distribution, CategoricalDistribution):
            return value in distribution.choices
        return isinstance(value, (int, float)) and distribution.low <= value <= distribution.high

    def without_keys(self, keys: set[str]) -> SearchSpace:
        return SearchSpace([p for p in self.parameters.values() if p.key not in keys])

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """Hydra overrides (``key=value``; ``group=option`` for a config group) that apply a trial's values."""
        return [
            f"{p.key}={group_option_value(value) if p.group else override_value(value)}"
            for p, value in ((self.parameters[name], value) for name, value in params.items())
        ]

    def check_against(self, config: DictConfig) -> None:
        """Refuse a parameter whose key ``config`` lacks, or holds another kind of value (:mod:`space_checks`)."""
        space_checks.check_keys(self, config)

    def check_candidates(self, config: DictConfig, check: Callable[[DictConfig], None]) -> None:
        """Run the objective's ``check`` on every value the space can give (:mod:`space_checks`)."""
        space_checks.check_candidates(self, config, check)


def parse_search_space(spec: Mapping[str, Any] | None) -> SearchSpace:
    """The search space of a ``conf/search_space`` YAML mapping.

    Args:
        spec: Parameter name to its entry (:func:`parse_parameter`); None or empty is the empty space.
    """
    if not spec:
        return SearchSpace([])
    if not isinstance(spec, Mapping):
        raise ConfigError("search_space must be a mapping of parameter name to {key, type, ...}")
    return SearchSpace([parse_parameter(str(name), entry) for name, entry in spec.items()])


def parse_parameter(name: str, spec: Any) -> Parameter:
    """One parameter of our YAML spelling, checked: a field that its type does not take is refused.

    Args:
        name: The parameter's name in the study.
        spec: ``{key, type, low, high, log, step}`` for ``float`` and ``int``, ``{key, type, choices}`` for
            ``categorical``.
    """
    where = f"search space parameter {name!r}"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping with key, type and bounds or choices, got {spec!r}")
    if "group" in spec:
        return _group_parameter(name, spec)
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{where}: unknown type {kind!r}; allowed: {', '.join(TYPES)}")
    unknown = sorted(set(spec) - _FIELDS[kind])
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {unknown[0]!r} for type {kind}; allowed: {', '.join(sorted(_FIELDS[kind]))}"
        )
    key = spec.get("key")
    if not isinstance(key, str) or not key:
        raise ConfigError(f"{where}: 'key' must name a config key, such as training.learning_rate")
    if kind == "categorical":
        return Parameter(name, key, categorical(where, spec.get("choices")))
    distribution = numeric(where, kind, spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step"))
    return Parameter(name, key, distribution)


def _group_parameter(name: str, spec: Mapping[str, Any]) -> Parameter:
    """``{group: model, choices: [minilm, tiny_bert]}``: a config group's options; whether the group and its
    options exist is checked against the config repository (:mod:`hps.search.groups`)."""
    where = f"search space parameter {name!r}"
    unknown = sorted(set(spec) - _GROUP_FIELDS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {unknown[0]!r} for a config group; allowed: {', '.join(sorted(_GROUP_FIELDS))} "
            "(a group's options are whole configs: search their values with entries of their own)"
        )
    group = spec["group"]
    if not isinstance(group, str) or not group:
        raise ConfigError(f"{where}: 'group' must name a config group, such as model")
    if spec.get("type", "categorical") != "categorical":
        raise ConfigError(f"{where}: a config group is categorical; drop 'type: {spec['type']}'")
    distribution = categorical(where, spec.get("choices"))
    bad = next((c for c in distribution.choices if not isinstance(c, str)), None)
    if bad is not None:
        raise ConfigError(f"{where}: choice {bad!r} is not the name of an option of config group {group!r}")
    return Parameter(name, group, distribution, group=True)


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """Ask ``trial`` for parameter ``name`` from ``distribution``, with Optuna's public ``suggest_*`` calls."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    call = trial.suggest_int if isinstance(distribution, IntDistribution) else trial.suggest_float
    return call(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)


def group_option_value(option: str) -> str:
    """A group option in an override: plain (``model=tiny_bert``, as on the command line), quoted if need be."""
    return option if _PLAIN_OPTION.fullmatch(option) else override_value(option)


def override_value(value: Any) -> str:
    """Format a value for a Hydra override so that it parses back to the same value (strings are quoted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
