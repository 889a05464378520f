"""Each experiment of a sweep made ready to run: composed, checked, and its study created or resumed.

All of it happens for every experiment before the first trial runs, so that bad input (a key that does not
exist, a bound the objective refuses, a resume that would mix two objectives) never waits behind hours of work.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
from hydra.core.config_loader import ConfigLoader
from hydra.errors import HydraException
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hps.search.components import build, build_sampler
from hps.search.errors import ConfigError, first_line
from hps.search.groups import ConfigGroups, group_options, merged_identity, with_dependent_ranges, with_group_parameters
from hps.search.locks import budget_lock
from hps.search.notes import record_setup, study_setup
from hps.search.planning import Experiment, SweepPlan
from hps.search.progress import console
from hps.search.reruns import warm_start
from hps.search.settings import SweeperSettings
from hps.search.space import Parameter, SearchSpace, parse_search_space
from hps.search.storage import display_url, open_storage
from hps.search.study import StudySpec, open_study


@dataclass(frozen=True)
class StudyPlan:
    """An experiment checked and ready to run: its study (created or resumed) and its search space."""

    experiment: Experiment
    study: optuna.Study
    space: SearchSpace
    metric: str


def prepare_study(
    experiment: Experiment, sweep: SweepPlan, settings: SweeperSettings, loader: ConfigLoader, config: DictConfig
) -> StudyPlan:
    """Compose the experiment, check its search space and input, then create or resume (and check) its study.

    Args:
        experiment: The experiment to prepare.
        sweep: The sweep's plan, whose parameters and fixed keys apply to every experiment.
        settings: The sweeper's settings.
        loader: Hydra's config loader, which composes the experiment's config as its trials' jobs will get it.
        config: The sweep's own config, which Hydra composes each job's from.
    """
    task = _compose(loader, config, experiment.overrides)
    groups = ConfigGroups(loader, config.hydra.job.get("config_name"), _composing_overrides(config, experiment))
    space = with_group_parameters(_search_space(task, sweep), groups)
    if not len(space):
        raise ConfigError("the search space is empty; choose one with search_space=NAME or hydra.sweeper.params")
    group = space.group
    tasks: dict[str | None, DictConfig] = {None: task}
    if group is not None:  # each option composed as its trials' jobs will be, and the space read in it
        tasks = {o: _compose(loader, config, [*experiment.overrides, f"{group.key}={o}"]) for o in group_options(group)}
        spaces = {
            o: with_group_parameters(_search_space(t, sweep, f"{group.key}={o}"), groups) for o, t in tasks.items()
        }
        space = with_dependent_ranges(space, spaces)
    for option, composed in tasks.items():
        with _naming(group, option):
            space.for_option(option).check_against(composed)
    spec = _study_spec(experiment.study_name, tasks, space, settings.direction)
    if settings.preflight:
        check = get_method(settings.preflight)
        for option, composed in tasks.items():
            with _naming(group, option):
                check(composed, space.for_option(option))
    sampler, pruner = build_sampler(settings.sampler), build("pruner", settings.pruner)
    storage = open_storage(settings.storage, heartbeat=settings.heartbeat)
    study = open_study(storage, settings.storage, spec, sampler, pruner, settings.allow_space_change)
    setup = study_setup(
        spec, space, settings.sampler, settings.pruner, settings.n_trials, display_url(settings.storage)
    )
    record_setup(study, setup)
    if settings.warm_start:
        _warm_start(study, space, settings)
    return StudyPlan(experiment, study, space, spec.metric)


def _compose(loader: ConfigLoader, config: DictConfig, overrides: list[str]) -> DictConfig:
    try:
        return loader.load_sweep_config(config, overrides)
    except HydraException as error:
        raise ConfigError(first_line(error)) from None


def _composing_overrides(config: DictConfig, experiment: Experiment) -> list[str]:
    """The overrides an experiment's jobs are composed with (:meth:`ConfigLoader.load_sweep_config`'s)."""
    return [*OmegaConf.to_container(config.hydra.overrides.hydra), *experiment.overrides]


def _search_space(task: DictConfig, sweep: SweepPlan, option: str | None = None) -> SearchSpace:
    """The space of the composed ``task``'s ``search_space`` node and the sweep's, less the keys it fixes."""
    node = task.get("search_space")  # search_space=none: an empty node
    try:
        resolved = OmegaConf.to_container(node, resolve=True) if node else None
    except OmegaConfBaseException as error:  # a bound that interpolates a key this config lacks
        raise ConfigError(f"search_space{f' (with {option})' if option else ''}: {first_line(error)}") from None
    return parse_search_space(resolved).merged(sweep.space).without_keys(sweep.fixed_keys)


@contextmanager
def _naming(group: Parameter | None, option: str | None) -> Iterator[None]:
    """A one-line error raised inside names the group's option it was checked with (``with model=tiny_bert: ...``)."""
    try:
        yield
    except ConfigError as error:
        if group is None:
            raise
        raise ConfigError(f"with {group.key}={option}: {error}") from None


def _study_spec(
    name: str, tasks: Mapping[str | None, DictConfig], space: SearchSpace, direction: str | None
) -> StudySpec:
    """What the study optimises: the task's ``objective`` node, its direction overridden by ``direction``.

    Args:
        name: The study's name.
        tasks: The composed task config, or with a searched config group each option's: the identity then holds
            every option's value where they differ (:func:`merged_identity`).
        space: The search space.
        direction: ``hydra.sweeper.direction``, or None: the objective's.
    """
    task = next(iter(tasks.values()))
    objective = task.get("objective")
    if objective is None or "metric" not in objective or "direction" not in objective:
        raise ConfigError("the task config needs an 'objective' node with 'metric' and 'direction'")
    identities = {
        option: {k: str(v) for k, v in (composed.objective.get("identity") or {}).items()}
        for option, composed in tasks.items()
    }
    return StudySpec(
        name=name,
        direction=str(direction or objective.direction),
        metric=str(objective.metric),
        identity=merged_identity(identities),
        space=space.as_json(),
    )


def _warm_start(study: optuna.Study, space: SearchSpace, settings: SweeperSettings) -> None:
    """Seed a new study with the best trials of ``hydra.sweeper.warm_start.study``."""
    url = settings.warm_start.get("storage") or settings.storage
    name = settings.warm_start.study
    if name not in optuna.get_all_study_names(open_storage(url)):
        raise ConfigError(f"hydra.sweeper.warm_start.study: no study {name!r} in {display_url(url)}")
    source = optuna.load_study(study_name=name, storage=open_storage(url))
    with budget_lock(settings.storage, study.study_name):  # workers starting together seed the study once
        origins = warm_start(study, source, int(settings.warm_start.get("top_k", 3)), space)
    if origins:
        console.print(f"warm start: the first trials re-run {', '.join(origins)}", highlight=False)
