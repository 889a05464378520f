"""The link between a running task and its Optuna trial.

The sweeper launches each trial as an ordinary Hydra job and tells it which trial it is through the
``trial`` node of its config (``{study: NAME, number: N}``; ``null`` outside a study). The storage URL and the
pruner come from the sweeper's own config (``hydra.sweeper``), which every job of a multirun can read, so a
job reconnects to its trial the same way whether the launcher runs it in the sweeper's process, in a
joblib worker or on a SLURM node. The storage URL never enters the job's config, which is stored with the
trial and may be shared.

:func:`hps.objective` makes the link itself, for the trial a user's ``study.optimize`` passes it.

Outside a study the link is inert: :meth:`TrialLink.report` never prunes and attributes go nowhere, so the
same task serves one-off and production training unchanged.
"""

from __future__ import annotations

import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from optuna.artifacts import FileSystemArtifactStore

from hps.search._compat import study_id, study_storage, trial_id
from hps.search.artifacts import artifact_store, attach
from hps.search.storage import open_storage

RECORD_PREFIX = "hps:"


class TrialLink:
    """Reports a task's intermediate values to its trial and says when the pruner stops it."""

    def __init__(self, trial: optuna.Trial | None = None, artifacts: FileSystemArtifactStore | None = None) -> None:
        self.trial = trial
        self.artifacts = artifacts

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TrialLink:
        """The link for the job whose composed config is ``cfg``; inert when ``cfg.trial`` is null."""
        where = cfg.get("trial")
        if where is None:
            return cls()
        sweeper = HydraConfig.get().sweeper
        study = optuna.load_study(
            study_name=where.study, storage=open_storage(sweeper.storage), pruner=instantiate(sweeper.pruner)
        )
        stored_id = study_storage(study).get_trial_id_from_study_id_trial_number(study_id(study), where.number)
        folder = sweeper.get("artifact_dir")
        return cls(optuna.Trial(study, stored_id), artifact_store(folder) if folder else None)

    @property
    def in_study(self) -> bool:
        return self.trial is not None

    @property
    def number(self) -> int | None:
        return None if self.trial is None else self.trial.number

    @property
    def study_name(self) -> str | None:
        return None if self.trial is None else self.trial.study.study_name

    def report(self, step: int, value: float, can_prune: bool = True) -> None:
        """Record ``value`` at ``step``; raise :class:`optuna.TrialPruned` if the pruner stops the trial.

        ``can_prune=False`` for the last evaluation: a trial that trained to the end is complete.
        """
        if self.trial is None or not math.isfinite(value):
            return
        self.trial.report(value, step)
        if can_prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} with value {value:.4g}")

    def set_user_attrs(self, **attrs: Any) -> None:
        """Store short JSON-serialisable facts about the run (seed, speed, output folder) with the trial."""
        if self.trial is None:
            return
        for key, value in attrs.items():
            self.trial.set_user_attr(key, value)

    def set_records(self, **records: Any) -> None:
        """Store bulky JSON-serialisable records (config, curve) with the trial; read them with :func:`record`.

        They go to the trial's system attributes: kept for export and tools, but out of the dashboard's
        attribute table, which they would stretch to thousands of pixels (the dashboard shows them as files).
        """
        if self.trial is None:
            return
        for key, value in records.items():
            self.trial.storage.set_trial_system_attr(trial_id(self.trial), RECORD_PREFIX + key, value)

    def attach(self, path: Path) -> None:
        """Attach the file at ``path`` to the trial (shown by the dashboard); nothing without an artifact store."""
        if self.trial is not None and self.artifacts is not None:
            attach(self.trial, self.artifacts, path)


def record(trial: optuna.trial.FrozenTrial, name: str, default: Any = None) -> Any:
    """A record stored by :meth:`TrialLink.set_records` (``config``, ``overrides``, ``versions``, ``curve``)."""
    return trial.system_attrs.get(RECORD_PREFIX + name, default)


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` (``"absent"`` for one not installed), stored with each trial."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found
