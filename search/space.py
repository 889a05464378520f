"""Search spaces: which config keys a study tunes, and over which distributions.

Our spelling, in ``conf/search_space/*.yaml``, has one entry per hyperparameter::

    learning_rate: {key: training.learning_rate, type: float, low: 1.0e-5, high: 5.0e-4, log: true}
    batch_size:    {key: training.batch_size, type: categorical, choices: [16, 32]}

A parameter is named after its entry (the name Optuna and the dashboard show) and points at a key of the
composed config; a trial's values become plain Hydra overrides of those keys. The Hydra Optuna sweeper's
spellings (``hydra.sweeper.params`` and ``hydra.sweeper.search_space``) give the same :class:`SearchSpace`
(:mod:`hps.search.hydra_optuna_syntax`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig
from optuna.distributions import BaseDistribution, CategoricalDistribution, distribution_to_json

from hps.search import space_checks
from hps.search.distributions import categorical, numeric
from hps.search.errors import ConfigError

TYPES = ("float", "int", "categorical")
_NUMERIC_FIELDS = {"key", "type", "low", "high", "log", "step"}
_FIELDS = {"float": _NUMERIC_FIELDS, "int": _NUMERIC_FIELDS, "categorical": {"key", "type", "choices"}}


@dataclass(frozen=True)
class Parameter:
    """One tuned hyperparameter: its name in the study, the config key it sets, its distribution."""

    name: str
    key: str
    distribution: BaseDistribution


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
        return {name: p.distribution for name, p in self.parameters.items()}

    def as_json(self) -> dict[str, dict[str, str]]:
        """The space as JSON-friendly data, stored with a study: each parameter's key and distribution."""
        return {
            name: {"key": p.key, "distribution": distribution_to_json(p.distribution)}
            for name, p in self.parameters.items()
        }

    def by_key(self) -> dict[str, Parameter]:
        return {p.key: p for p in self.parameters.values()}

    def merged(self, other: SearchSpace) -> SearchSpace:
        """This space with ``other``'s parameters added; on a shared key, ``other`` wins."""
        replaced = set(other.by_key())
        kept = [p for p in self.parameters.values() if p.key not in replaced]
        return SearchSpace(kept + list(other.parameters.values()))

    def admits(self, name: str, value: Any) -> bool:
        """Whether parameter ``name`` exists and ``value`` lies in its distribution."""
        parameter = self.parameters.get(name)
        if parameter is None:
            return False
        distribution = parameter.distribution
        if isinstance(distribution, CategoricalDistribution):
            return value in distribution.choices
        return isinstance(value, (int, float)) and distribution.low <= value <= distribution.high

    def without_keys(self, keys: set[str]) -> SearchSpace:
        return SearchSpace([p for p in self.parameters.values() if p.key not in keys])

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """Hydra overrides (``key=value``) that apply a trial's parameter values."""
        return [f"{self.parameters[name].key}={override_value(value)}" for name, value in params.items()]

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
