"""Search spaces: which config keys a study tunes, and over which distributions.

Two spellings are accepted and give the same :class:`SearchSpace`:

* ours, in ``conf/search_space/*.yaml``: one entry per hyperparameter::

      learning_rate: {key: training.learning_rate, type: float, low: 1.0e-5, high: 5.0e-4, log: true}
      batch_size:    {key: training.batch_size, type: categorical, choices: [16, 32]}

* the Hydra Optuna sweeper's ``hydra.sweeper.params`` (``key: interval(a, b)`` and friends), so that a
  lightning-hydra-template config works unchanged; see :func:`parameter_from_override`.

A parameter is named after its entry (the name Optuna and the dashboard show) and points at a key of the
composed config; a trial's values become plain Hydra overrides of those keys.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)

from hps.search.errors import ConfigError, first_line

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
    """An ordered set of :class:`Parameter`, addressed by name."""

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
        """Every parameter must point at a key of the composed config and give values of the kind the key holds.

        A key holding an integer takes integers, a float takes numbers, a string strings, a bool bools; a
        categorical choice may also be null, for keys where null means something (the objective checks that).
        """
        for p in self.parameters.values():
            current = OmegaConf.select(config, p.key, default=_ABSENT, throw_on_missing=False)
            where = f"search space parameter {p.name!r}"
            if current is _ABSENT:
                raise ConfigError(f"{where}: key {p.key!r} does not exist in the composed config")
            kind = _kind(current)
            if kind is None:  # null or a node: nothing to compare with
                continue
            if isinstance(p.distribution, CategoricalDistribution):
                wrong = next((c for c in p.distribution.choices if c is not None and not _is_kind(c, kind)), None)
                if wrong is not None:
                    raise ConfigError(
                        f"{where}: choice {wrong!r} is {_kind(wrong)}, but key {p.key!r} "
                        f"holds {kind} ({current!r}); give {_PLURALS[kind]} (or null)"
                    )
            elif isinstance(p.distribution, FloatDistribution) and kind == "an integer":
                raise ConfigError(
                    f"{where}: key {p.key!r} holds an integer ({current}) but the parameter is float; "
                    "use type int (or range(a, b) in hydra.sweeper.params)"
                )
            elif kind not in ("an integer", "a number"):
                raise ConfigError(f"{where}: key {p.key!r} holds {kind} ({current!r}) but the parameter is numeric")

    def _candidates(self, config: DictConfig) -> Iterator[tuple[str, DictConfig]]:
        """A copy of ``config`` set to each value the space can give it, one parameter at a time, and which value.

        Each parameter is set to each of its choices, or to its low and its high end, the rest of ``config``
        unchanged: a check that passes on all of them passes on every trial's values that are checked one by one.
        A yielded config changes with the next one.
        """
        for p in self.parameters.values():
            distribution = p.distribution
            values = (
                distribution.choices
                if isinstance(distribution, CategoricalDistribution)
                else (distribution.low, distribution.high)
            )
            candidate = copy.deepcopy(config)  # one copy per parameter: only its key changes
            for value in values:
                OmegaConf.update(candidate, p.key, value, merge=False)
                yield f"search space parameter {p.name!r} = {value!r}", candidate

    def check_candidates(self, config: DictConfig, check: Callable[[DictConfig], None]) -> None:
        """Run ``check`` on ``config`` and on it set to each value the space can give (each choice, each end of a
        range, one parameter at a time), so that a trial never finds a value its objective refuses; a refusal
        names the parameter and the value."""
        check(config)
        for where, candidate in self._candidates(config):
            try:
                check(candidate)
            except ConfigError as error:
                raise ConfigError(f"{where}: {error}") from None


_ABSENT = object()


_PLURALS = {"a bool": "bools", "an integer": "integers", "a number": "numbers", "a string": "strings"}


def _kind(value: Any) -> str | None:
    """What kind of value a config key holds, as a check's message says it; None for null or a node."""
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return "a string" if isinstance(value, str) else None


def _is_kind(value: Any, kind: str) -> bool:
    """Whether ``value`` may be set on a key that holds ``kind``: an integer where a number is, nothing else."""
    return _kind(value) == kind or (kind == "a number" and _kind(value) == "an integer")


def parse_search_space(spec: Mapping[str, Any] | None) -> SearchSpace:
    """Parse ``conf/search_space`` YAML (a mapping of parameter name to its spec)."""
    if not spec:
        return SearchSpace([])
    if not isinstance(spec, Mapping):
        raise ConfigError("search_space must be a mapping of parameter name to {key, type, ...}")
    return SearchSpace([parse_parameter(str(name), entry) for name, entry in spec.items()])


def parse_parameter(name: str, spec: Any) -> Parameter:
    """Parse and validate one entry of our YAML spelling."""
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
        return Parameter(name, key, _categorical(where, spec.get("choices")))
    return Parameter(
        name,
        key,
        _numeric(where, kind, spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")),
    )


def parse_sweeper_params(params: Mapping[str, Any] | None) -> tuple[SearchSpace, dict[str, str]]:
    """Parse ``hydra.sweeper.params`` (Hydra Optuna sweeper syntax).

    Returns the search space and the fixed values (a plain value such as ``model.lr: 0.1`` fixes the key).
    """
    parameters, fixed = [], {}
    for key, expression in (params or {}).items():
        override = _parse_override(f"{key}={expression}")
        parameter = parameter_from_override(override)
        if parameter is None:
            fixed[str(key)] = override.get_value_element_as_str()
        else:
            parameters.append(parameter)
    return SearchSpace(parameters), fixed


def parameter_from_override(override: Override) -> Parameter | None:
    """Map a Hydra sweep override to a parameter, as the Hydra Optuna sweeper does.

    ``choice(a, b)`` and ``a,b`` are categorical; ``range(a, b[, step])`` is an int (float if any bound is a
    float) distribution with both ends included; ``interval(a, b)`` is float (Hydra parses its ends as
    floats); ``tag(log, ...)`` adds a log scale. A plain value returns ``None``.
    """
    key = override.get_key_element()
    where = f"search space parameter {key!r}"
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return Parameter(key, key, _categorical(where, list(value.list)))
    if isinstance(value, RangeSweep):
        if value.shuffle:
            return Parameter(key, key, _categorical(where, list(override.sweep_iterator())))
        kind = "float" if any(isinstance(v, float) for v in (value.start, value.stop, value.step)) else "int"
        return Parameter(key, key, _numeric(where, kind, value.start, value.stop, "log" in value.tags, value.step))
    if isinstance(value, IntervalSweep):
        return Parameter(key, key, _numeric(where, "float", value.start, value.end, "log" in value.tags, None))
    return None


def _parse_override(line: str) -> Override:
    try:
        return OverridesParser.create().parse_override(line)
    except HydraException as error:
        raise ConfigError(
            f"cannot parse search parameter {line!r} ({first_line(error)}); "
            "allowed: interval(a, b), range(a, b[, step]), choice(a, b, ...), tag(log, interval(a, b))"
        ) from None


def _categorical(where: str, choices: Any) -> CategoricalDistribution:
    if not isinstance(choices, (list, tuple)) and not OmegaConf.is_list(choices):
        raise ConfigError(f"{where}: 'choices' must be a non-empty list, got {choices!r}")
    choices = list(choices)
    if not choices:
        raise ConfigError(f"{where}: 'choices' is empty; give at least one value")
    bad = [c for c in choices if not (c is None or isinstance(c, (bool, int, float, str)))]
    if bad:
        raise ConfigError(f"{where}: choice {bad[0]!r} is not a number, string, bool or null")
    return CategoricalDistribution(choices)


def _numeric(where: str, kind: str, low: Any, high: Any, log: Any, step: Any) -> BaseDistribution:
    for bound, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: '{bound}' must be a finite number, got {value!r}")
        if kind == "int" and not float(value).is_integer():
            raise ConfigError(f"{where}: '{bound}' must be an integer for type int, got {value!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: 'log' must be true or false, got {log!r}")
    if low > high:
        raise ConfigError(f"{where}: low ({low}) is greater than high ({high}); need low <= high")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got low={low}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise ConfigError(f"{where}: 'step' must be a positive number, got {step!r}")
        if kind == "int" and not float(step).is_integer():
            raise ConfigError(f"{where}: 'step' must be an integer for type int, got {step!r}")
        if log and step != 1:  # Optuna's log scale takes no step (an int one keeps step 1)
            raise ConfigError(f"{where}: 'step' and a log scale cannot be combined; drop one of them")
    if kind == "int":
        return IntDistribution(int(low), int(high), log=log, step=int(step) if step is not None else 1)
    return FloatDistribution(float(low), float(high), log=log, step=float(step) if step is not None else None)


def describe(distribution: BaseDistribution) -> str:
    """``float in [1e-05, 0.001], log`` / ``int in [0, 6]`` / ``one of 16, 32``."""
    if isinstance(distribution, CategoricalDistribution):
        return "one of " + ", ".join(str(choice) for choice in distribution.choices)
    kind = "float" if isinstance(distribution, FloatDistribution) else "int"
    text = f"{kind} in [{distribution.low:g}, {distribution.high:g}]"
    if distribution.log:
        text += ", log"
    if distribution.step not in (None, 1):
        text += f", step {distribution.step:g}"
    return text


def describe_json(parameter: Mapping[str, str]) -> str:
    """``training.dropout: float in [0, 0.3]`` for a parameter as :meth:`SearchSpace.as_json` stores it."""
    return f"{parameter['key']}: {describe(json_to_distribution(parameter['distribution']))}"


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
