"""Each experiment of a sweep made ready to run: composed, checked, and its study created or resumed.

All of it happens for every experiment before the first trial runs, so that bad input (a key that does not
exist, a bound the objective refuses, a resume that would mix two objectives) never waits behind hours of work.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from hydra.core.config_loader import ConfigLoader
from hydra.errors import HydraException
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from hps.search.components import build, build_sampler
from hps.search.errors import ConfigError, first_line
from hps.search.locks import budget_lock
from hps.search.notes import record_setup, study_setup
from hps.search.planning import Experiment, SweepPlan
from hps.search.progress import console
from hps.search.reruns import warm_start
from hps.search.settings import SweeperSettings
from hps.search.space import SearchSpace, parse_search_space
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
    node = task.get("search_space")  # search_space=none: an empty node
    space = parse_search_space(OmegaConf.to_container(node, resolve=True) if node else None)
    space = space.merged(sweep.space).without_keys(sweep.fixed_keys)
    if not len(space):
        raise ConfigError("the search space is empty; choose one with search_space=NAME or hydra.sweeper.params")
    space.check_against(task)
    spec = _study_spec(experiment.study_name, task, space, settings.direction)
    if settings.preflight:
        get_method(settings.preflight)(task, space)
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


def _study_spec(name: str, task: DictConfig, space: SearchSpace, direction: str | None) -> StudySpec:
    """What the study optimises: the task's ``objective`` node, its direction overridden by ``direction``."""
    objective = task.get("objective")
    if objective is None or "metric" not in objective or "direction" not in objective:
        raise ConfigError("the task config needs an 'objective' node with 'metric' and 'direction'")
    return StudySpec(
        name=name,
        direction=str(direction or objective.direction),
        metric=str(objective.metric),
        identity={k: str(v) for k, v in (objective.get("identity") or {}).items()},
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
