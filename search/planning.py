"""A sweep's command line, read: which studies it runs, what they search, and which keys it fixes.

``interval(...)`` overrides add search parameters and plain values fix keys; comma lists, ``choice`` and
``range`` are *experiments*: one study per combination, named after what differs (``finetune-data=sst2``).
``hydra.sweeper.params`` and ``hydra.sweeper.search_space`` add parameters (and ``params`` fixed values) the
same way. A key that is fixed or swept as an experiment leaves the search space.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.errors import HydraException

from hps.search.errors import ConfigError, first_line
from hps.search.hydra_optuna_syntax import parameter_from_override, parse_optuna_search_space, parse_sweeper_params
from hps.search.settings import SweeperSettings
from hps.search.space import SearchSpace


@dataclass(frozen=True)
class Experiment:
    """One combination of the command line's experiment sweeps: its overrides and its study's name."""

    overrides: list[str]
    study_name: str


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep's command line asks for.

    ``space`` holds the parameters of the command line and of ``hydra.sweeper`` (each experiment's
    ``search_space`` node adds its own); ``fixed_keys`` are the keys that no study of the sweep searches.
    """

    experiments: list[Experiment]
    space: SearchSpace
    fixed_keys: set[str]


def plan_sweep(
    arguments: list[str], settings: SweeperSettings, loader: ConfigLoader | None, job_name: str
) -> SweepPlan:
    """Split the command line into fixed overrides, search parameters and experiment combinations.

    Args:
        arguments: The sweep's command-line overrides, as Hydra hands them to the sweeper.
        settings: The sweeper's settings: its ``params``, ``search_space``, ``study_name`` and the overrides that
            every job gets.
        loader: Hydra's config loader, with which overrides of config groups parse as on the command line;
            None parses them without (from Python, before a sweep).
        job_name: The task's name, the studies' name when ``study_name`` is null.
    """
    params_space, params_fixed = parse_sweeper_params(settings.params)
    fixed = [*settings.job_overrides, *(f"{key}={value}" for key, value in params_fixed.items())]
    fixed_keys, parameters, dimensions = set(params_fixed), [], []
    for override in _parse(arguments, loader):
        key = override.get_key_element()
        if isinstance(override.value(), IntervalSweep):
            parameters.append(parameter_from_override(override))
            continue
        fixed_keys.add(key)
        if override.is_discrete_sweep():
            dimensions.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            fixed.append(override.input_line)
    base_name = settings.study_name or job_name
    experiments = [
        Experiment(fixed + list(combination), "-".join([base_name, *combination]))
        for combination in itertools.product(*dimensions)
    ]
    sweeper_space = parse_optuna_search_space(settings.search_space).merged(params_space)
    return SweepPlan(experiments, sweeper_space.merged(SearchSpace(parameters)), fixed_keys)


def _parse(arguments: list[str], loader: ConfigLoader | None) -> list[Override]:
    try:
        return OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    except HydraException as error:
        raise ConfigError(first_line(error)) from None
