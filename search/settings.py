"""The sweeper's settings, ``hydra.sweeper``, checked: ours, and the Hydra Optuna sweeper's.

A config written for the Hydra Optuna sweeper (lightning-hydra-template's ``hparams_search`` files) runs with
only its sweeper line changed (``override /hydra/sweeper: hps``, its ``_target_`` ours or left out): its
``params`` and ``search_space`` (:mod:`hps.search.hydra_optuna_syntax`), ``study_name: null`` (here the task's
name), a ``sampler`` given as an Optuna ``_target_``, ``n_trials``, ``n_jobs`` and ``direction`` mean what they
meant there. ``storage: null``, an in-memory study there, is the default database here, said in one line: a
study lost with its process could not be resumed. A key neither sweeper has is one line naming those allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hps.search.devices import check_worker_settings
from hps.search.errors import ConfigError, is_whole_number
from hps.search.heartbeats import heartbeat_settings
from hps.search.progress import console
from hps.search.space import override_value
from hps.search.storage import STORAGE_ENV, HeartbeatSettings, default_storage, display_url, has_password
from hps.search.study import DIRECTIONS

# Keys of the Hydra Optuna sweeper that have no counterpart here, and what does their work instead.
_OPTUNA_SWEEPER_ONLY = {
    "max_failure_rate": "hydra.sweeper.fail_fast stops a sweep whose first trials all fail alike",
    "custom_search_space": "the search space is declared in full, in hydra.sweeper.params or search_space",
}


@dataclass(frozen=True)
class SweeperSettings:
    """``hydra.sweeper``, checked. Each field is a key of ``conf/hydra/sweeper/hps.yaml``, which says what it does.

    ``heartbeat`` is read into :class:`HeartbeatSettings` (None: off); ``job_overrides`` are what each trial's
    job must be told that its own config does not say (the storage, when ``storage`` was null).
    """

    storage: str
    n_trials: int
    sampler: DictConfig
    pruner: DictConfig
    study_name: str | None = None
    params: DictConfig | None = None
    search_space: DictConfig | None = None
    preflight: str | None = None
    top_k: int = 10
    direction: str | None = None
    n_jobs: int | str = 1
    trials_per_device: int = 1
    warm_start: DictConfig | None = None
    artifact_dir: str | None = None
    heartbeat: HeartbeatSettings | None = None
    fail_fast: int | None = 3
    allow_space_change: bool = False
    job_overrides: tuple[str, ...] = ()


KEYS = tuple(sorted(f.name for f in fields(SweeperSettings) if f.name != "job_overrides"))


def sweeper_settings(config: Mapping[str, Any]) -> SweeperSettings:
    """The settings of ``config``, each checked; a :class:`ConfigError` names what is wrong and what is allowed.

    Args:
        config: ``hydra.sweeper``'s keys as Hydra hands them to the sweeper (``_target_`` taken out).
    """
    _refuse_unknown_keys(config)
    values = dict(config)
    if values.get("storage") is None:
        values["storage"], values["job_overrides"] = default_storage(), (_default_storage_override(),)
        console.print(
            f"hydra.sweeper.storage is null: the study goes to the default database, {display_url(values['storage'])}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    n_trials, fail_fast, direction = values.get("n_trials"), values.get("fail_fast", 3), values.get("direction")
    if not is_whole_number(n_trials, 1):
        raise ConfigError(f"hydra.sweeper.n_trials is {n_trials!r}; it must be a positive integer")
    check_worker_settings(values.get("n_jobs", 1), values.get("trials_per_device", 1))
    if fail_fast is not None and not is_whole_number(fail_fast, 1):
        raise ConfigError(f"hydra.sweeper.fail_fast is {fail_fast!r}; allowed: a whole number >= 1, or null")
    if direction is not None and direction not in DIRECTIONS:
        raise ConfigError(
            f"hydra.sweeper.direction is {direction!r}; allowed: {', '.join(DIRECTIONS)} "
            "(one objective: a study optimises one metric)"
        )
    values["heartbeat"] = heartbeat_settings(values.get("heartbeat"))
    return SweeperSettings(**values)


def warn_if_password_written(sweeper: DictConfig) -> None:
    """Warn when ``hydra.sweeper.storage`` spells out a password, which each trial's ``.hydra/`` folder keeps.

    Args:
        sweeper: The ``hydra.sweeper`` node, read as written (before interpolation: ``${oc.env:...}`` is safe).
    """
    written = OmegaConf.to_container(sweeper, resolve=False).get("storage")
    if has_password(str(written)):
        console.print(
            "warning: the storage URL's password is written to each trial's .hydra/ folder; put the "
            f"URL in ${STORAGE_ENV}, or write hydra.sweeper.storage='${{oc.env:MY_VARIABLE}}'",
            highlight=False,
            markup=False,
        )


def _refuse_unknown_keys(config: Mapping[str, Any]) -> None:
    """One line for the first key that is not a setting: what it is, and what is allowed or does its work."""
    unknown = sorted(set(config) - set(KEYS))
    if not unknown:
        return
    key = unknown[0]
    if key in _OPTUNA_SWEEPER_ONLY:
        raise ConfigError(
            f"hydra.sweeper.{key} is a Hydra Optuna sweeper setting this sweeper does not have "
            f"({_OPTUNA_SWEEPER_ONLY[key]}); drop it"
        )
    raise ConfigError(f"hydra.sweeper.{key} is not a setting of the hps sweeper; allowed: {', '.join(KEYS)}")


def _default_storage_override() -> str:
    """``hydra.sweeper.storage`` for each trial's job, which reads its storage there (:mod:`hps.search.trial`).

    A URL from ``$HPS_STORAGE`` stays an interpolation, so its password is not written to the job's config.
    """
    if os.environ.get(STORAGE_ENV):
        return f"hydra.sweeper.storage=${{oc.env:{STORAGE_ENV}}}"
    return f"hydra.sweeper.storage={override_value(default_storage())}"
