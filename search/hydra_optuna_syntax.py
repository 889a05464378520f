"""The Hydra Optuna sweeper's spellings of a search space, read into a :class:`SearchSpace`.

A config written for that sweeper (lightning-hydra-template's ``hparams_search`` configs) runs here with only its
sweeper line changed, in either spelling it has had:

* ``hydra.sweeper.params`` (since its 1.2): ``key: interval(a, b)``, ``choice(a, b)``, ``range(a, b)``, and a plain
  value, which fixes the key (:func:`parse_sweeper_params`);
* ``hydra.sweeper.search_space`` (its 1.1): ``key: {type: float|int|categorical, low, high, log, step, choices}``
  (:func:`parse_optuna_search_space`).

Each parameter is named after its key, as that sweeper names it. A categorical parameter on a config group's key
(``model: choice(minilm, tiny_bert)``) chooses the group's option per trial, as that sweeper's ``model=minilm``
override does: the sweeper makes it a group parameter once it can ask Hydra which keys are groups
(:func:`hps.search.groups.with_group_parameters`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException

from hps.search.distributions import categorical, numeric
from hps.search.errors import ConfigError, first_line
from hps.search.space import Parameter, SearchSpace, parse_parameter


def parse_sweeper_params(params: Mapping[str, Any] | None) -> tuple[SearchSpace, dict[str, str]]:
    """The search space and the fixed values of ``hydra.sweeper.params``.

    Args:
        params: Config key to a sweep expression (:func:`parameter_from_override`) or a plain value, such as
            ``model.lr: 0.1``, which fixes the key and takes it out of every other spelling's space.
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


def parse_optuna_search_space(search_space: Mapping[str, Any] | None) -> SearchSpace:
    """The search space of ``hydra.sweeper.search_space``, the Hydra Optuna sweeper's 1.1 spelling.

    Args:
        search_space: Config key to ``{type, low, high, log, step}`` or ``{type, choices}``; a field set to null
            is left out, as that sweeper's defaults are null.
    """
    if not search_space:
        return SearchSpace([])
    if not isinstance(search_space, Mapping):
        raise ConfigError("hydra.sweeper.search_space must map config keys to {type, low, high, ...} or be null")
    return SearchSpace([parse_parameter(str(key), _entry(str(key), entry)) for key, entry in search_space.items()])


def _entry(key: str, entry: Any) -> Any:
    """A ``search_space`` entry in our spelling: its key added, its null fields left out."""
    if not isinstance(entry, Mapping):
        return entry  # parse_parameter says what it expected
    return {"key": key, **{field: value for field, value in entry.items() if value is not None}}


def parameter_from_override(override: Override) -> Parameter | None:
    """The parameter of a Hydra sweep override, mapped as the Hydra Optuna sweeper maps it; None for a plain value.

    ``choice(a, b)`` and ``a,b`` are categorical; ``range(a, b[, step])`` is an int (float if any bound is a
    float) distribution with both ends included; ``interval(a, b)`` is float (Hydra parses its ends as
    floats); ``tag(log, ...)`` adds a log scale.

    Args:
        override: One parsed override, from ``hydra.sweeper.params`` or the command line.
    """
    key = override.get_key_element()
    where = f"search space parameter {key!r}"
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return Parameter(key, key, categorical(where, list(value.list)))
    if isinstance(value, RangeSweep):
        if value.shuffle:
            return Parameter(key, key, categorical(where, list(override.sweep_iterator())))
        kind = "float" if any(isinstance(v, float) for v in (value.start, value.stop, value.step)) else "int"
        return Parameter(key, key, numeric(where, kind, value.start, value.stop, "log" in value.tags, value.step))
    if isinstance(value, IntervalSweep):
        return Parameter(key, key, numeric(where, "float", value.start, value.end, "log" in value.tags, None))
    return None


def _parse_override(line: str) -> Override:
    try:
        return OverridesParser.create().parse_override(line)
    except HydraException as error:
        raise ConfigError(
            f"cannot parse search parameter {line!r} ({first_line(error)}); "
            "allowed: interval(a, b), range(a, b[, step]), choice(a, b, ...), tag(log, interval(a, b))"
        ) from None
