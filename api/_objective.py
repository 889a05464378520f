"""The fine-tuning task as a plain Optuna objective, for a study the user drives with ``study.optimize``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.distributions import CategoricalDistribution, IntDistribution

from hps._config import compose
from hps.search.artifacts import artifact_store
from hps.search.errors import ConfigError
from hps.search.space import SearchSpace, parse_search_space
from hps.search.trial import TrialLink


def objective(
    overrides: Sequence[str] = (), *, search_space: str | Mapping[str, Mapping[str, Any]] | None = None
) -> Callable[[optuna.Trial], float]:
    """The fine-tuning task as an objective for ``study.optimize``: one trial, one fine-tuning run.

    Each call samples the search space's parameters with the trial, composes the task config as a sweep's trial
    composes it (``overrides`` and the sampled values), and fine-tunes in this process. Every evaluation is
    reported to the trial, and :class:`optuna.TrialPruned` is raised when the study's pruner stops it. The trial
    stores what a sweep's trial stores from the task (its config, overrides, curve and package versions, seed,
    device and cost as user attributes, learning curve, confusion matrix and config in the artifact store), so ``hps
    export``, ``hps report`` and ``hps dashboard`` read it as they read a sweep's. The run's files are written to
    ``<hydra.sweep.dir>/<study>/trial_<n>``, as a sweep's are.

    The config, its search space, data and model are checked once, here, so that bad input fails before any trial.

    Args:
        overrides: Hydra overrides of the ``finetune`` config, as on the command line (``model=tiny_bert``,
            ``data=sst2``, ``experiment=smoke``). A key they set leaves the search space, as in a sweep.
        search_space: The search space: the name of one in ``conf/search_space``, or a mapping in its YAML
            spelling (``{"learning_rate": {"key": "training.learning_rate", "type": "float", "low": 1e-5,
            "high": 1e-3, "log": True}}``). None: the config's own (``default``, unless an override chose another).

    Returns:
        The objective: a function of the trial that returns the validation metric of the last evaluation (of the
        best one with ``objective.value=best``). The study must optimise in the config's ``objective.direction``
        (``maximize`` for the shipped metrics).
    """
    from hps.objectives.device import release_memory  # torch and transformers: only once an objective is made
    from hps.objectives.finetune import fine_tune, preflight

    overrides = [*overrides, *([f"search_space={search_space}"] if isinstance(search_space, str) else [])]
    config = compose("finetune", overrides)
    space = _search_space(config, search_space, overrides)
    space.check_against(config)
    preflight(config, space)
    artifact_dir = config.hydra.sweeper.artifact_dir
    artifacts = artifact_store(artifact_dir) if artifact_dir else None
    runs = Path(str(config.hydra.sweep.dir)).absolute()  # also when the caller changes folder later
    direction = str(config.objective.direction)

    def fine_tuning(trial: optuna.Trial) -> float:
        if trial.study.direction.name.lower() != direction:
            raise ConfigError(f"the study should {direction} {config.objective.metric}: create it with {direction=}")
        trial_overrides = [*overrides, *space.overrides(_suggest(trial, space))]
        task = compose("finetune", trial_overrides)
        with open_dict(task):
            del task["hydra"]  # a job sees its config without it
        folder = _run_folder(runs / trial.study.study_name, trial.number)
        # The composed config where Hydra writes a job's: the run attaches it to the trial, as a sweep's trial's.
        (folder / ".hydra").mkdir()
        OmegaConf.save(task, folder / ".hydra" / "config.yaml")
        try:
            return fine_tune(task, TrialLink(trial, artifacts), folder, trial_overrides).metric
        finally:  # the next trial starts from what the last one held
            release_memory()

    return fine_tuning


def _search_space(
    config: DictConfig, search_space: str | Mapping[str, Mapping[str, Any]] | None, overrides: list[str]
) -> SearchSpace:
    """The space trials sample: ``search_space`` if it is a mapping, else the config's; less the keys ``overrides``
    set, as a sweep leaves out the keys its command line fixes."""
    if isinstance(search_space, Mapping):
        space = parse_search_space(search_space)
    else:
        node = config.get("search_space")
        space = parse_search_space(OmegaConf.to_container(node, resolve=True) if node else None)
    space = space.without_keys({o.get_key_element() for o in OverridesParser.create().parse_overrides(overrides)})
    group = space.group
    if group is not None:  # each option is another composition, checked and ranged by the sweeper only
        raise ConfigError(
            f"search space parameter {group.name!r} chooses an option of config group {group.key!r}, which "
            f"hps.objective does not search; use hps.sweep (or hps-finetune -m), or fix it: {group.key}=NAME"
        )
    if not len(space):
        raise ConfigError(
            "the search space is empty: choose one with search_space=NAME, or leave some of its keys unset"
        )
    return space


def _suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Sample each parameter of ``space`` with ``trial``: its value by name."""
    values = {}
    for name, distribution in space.distributions.items():
        if isinstance(distribution, CategoricalDistribution):
            values[name] = trial.suggest_categorical(name, distribution.choices)
        else:
            suggest = trial.suggest_int if isinstance(distribution, IntDistribution) else trial.suggest_float
            values[name] = suggest(
                name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
            )
    return values


def _run_folder(parent: Path, number: int) -> Path:
    """A new folder ``<parent>/trial_<number>``, suffixed (``.2``, ...) when one of that name is left from before."""
    folder, suffix = parent / f"trial_{number}", 1
    while True:
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:  # also when a trial running beside this one took it first
            suffix += 1
            folder = parent / f"trial_{number}.{suffix}"
