"""Checks of a search space against the composed config, before any trial runs.

A parameter must point at a key that exists and give values of the kind the key holds, and every value the
space can give must pass the objective's own check; otherwise a trial would fail, hours in, on a typo.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution

from hps.search.errors import ConfigError

if TYPE_CHECKING:
    from hps.search.space import SearchSpace

_ABSENT = object()
_PLURALS = {"a bool": "bools", "an integer": "integers", "a number": "numbers", "a string": "strings"}


def check_keys(space: SearchSpace, config: DictConfig) -> None:
    """Refuse a parameter whose key is not in ``config``, or whose values are not of the kind the key holds.

    Args:
        space: The search space to check.
        config: The composed task config the trials' overrides will change. A key holding an integer takes
            integers, a float numbers, a string strings, a bool bools; a categorical choice may also be null,
            for keys where null means something (the objective checks that). A config group's parameter is checked
            against the config repository instead (:mod:`hps.search.groups`).
    """
    for p in space.parameters.values():
        if p.group:
            continue
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


def check_candidates(space: SearchSpace, config: DictConfig, check: Callable[[DictConfig], None]) -> None:
    """Run ``check`` on ``config`` and on it set to each value the space can give, one parameter at a time.

    Each choice, and each end of a range: a check that passes on all of them passes on every trial's values
    that it checks one by one, so a trial never finds a value its objective refuses. A config group's options
    are whole configs: the sweeper composes each and runs the objective's preflight on it
    (:mod:`hps.search.groups`), with :meth:`SearchSpace.for_option`, so they are not set here.

    Args:
        space: The search space whose values are tried.
        config: The composed task config.
        check: The objective's check; a :class:`ConfigError` it raises is prefixed with the parameter and value.
    """
    check(config)
    for where, candidate in _candidates(space, config):
        try:
            check(candidate)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None


def _candidates(space: SearchSpace, config: DictConfig) -> Iterator[tuple[str, DictConfig]]:
    """A copy of ``config`` set to each choice or each end of each parameter, and which value it is.

    A yielded config changes with the next one.
    """
    for p in space.parameters.values():
        if p.group:
            continue
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
