"""Every use of another package's private names, in one place, with the versions each was checked against.

Optuna, Hydra, datasets and torch give no public way to do these few things. Kept here, an upgrade that moves one
fails ``tests/test_compat.py`` with the name that moved, instead of a sweep failing somewhere else.

Checked against optuna 5.0-5.1, hydra-core 1.3.2, datasets 3.0-5.2; the torch name not yet on a CUDA build
(``tests/test_compat.py``'s ``gpu`` test checks it there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from datasets import Dataset
from hydra.core.utils import JobReturn
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import is_heartbeat_enabled as _is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import Engine


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes (optuna: ``Study._storage``)."""
    return study._storage


def study_id(study: Any) -> int:
    """The id of a study, or of a stored study from ``get_all_studies``, in its storage (optuna: ``_study_id``)."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial's id in its storage, which storage methods take (optuna: ``Trial._trial_id``)."""
    return trial._trial_id


def is_heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether the storage records heartbeats (optuna: ``storages._heartbeat.is_heartbeat_enabled``)."""
    return _is_heartbeat_enabled(storage)


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """Running trials whose heartbeat stopped (optuna: ``BaseHeartbeat._get_stale_trial_ids``).

    :func:`optuna.storages.fail_stale_trials` fails them without a word; we first store why.
    """
    return study._storage._get_stale_trial_ids(study._study_id)


def grace_period(storage: BaseStorage) -> int | None:
    """The storage's heartbeat grace period in seconds, if set (optuna wraps an RDBStorage as ``_backend``)."""
    return getattr(getattr(storage, "_backend", storage), "grace_period", None)


def storage_engine(study: optuna.Study) -> Engine | None:
    """The SQLAlchemy engine of a study in a relational database; None for other storages (optuna wraps an
    RDBStorage as ``_backend``)."""
    storage = study_storage(study)
    return getattr(getattr(storage, "_backend", storage), "engine", None)


def job_error(result: JobReturn) -> BaseException:
    """The exception a failed Hydra job raised (hydra: ``JobReturn._return_value``).

    The public ``JobReturn.return_value`` re-raises it and logs its traceback; its message is all we store.
    """
    return result._return_value


def dataset_fingerprint(table: Dataset) -> str:
    """The hash ``datasets`` keeps of a table's content and the transforms that made it (``Dataset._fingerprint``)."""
    return table._fingerprint


class StudyWithTrials:
    """``study`` as Optuna's samplers read its trials (optuna: ``Study._get_trials``), passed through ``transform``.

    Everything else is the study's own. Samplers call ``_get_trials``, not the public ``get_trials``, so a
    sampler that must see the trials otherwise (pruned trials as complete, for one) hands it this view.
    """

    def __init__(self, study: optuna.Study, transform: Callable[[list[FrozenTrial]], list[FrozenTrial]]) -> None:
        self._study = study
        self._transform = transform

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: tuple[TrialState, ...] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        trials = self._transform(self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache))
        return [t for t in trials if states is None or t.state in states]


def clear_cublas_workspaces() -> None:
    """Free the cuBLAS workspaces that PyTorch allocates per stream through its caching allocator and keeps until the
    process ends (torch: ``torch._C._cuda_clearCublasWorkspaces``; CUDA builds only, a CPU build has none to free).

    A worker would otherwise never hand them back between trials: on an H200, 65 MiB stayed allocated after a released
    run (benchmarks/RESULTS.md, "GPU").
    """
    import torch  # not at import: the synthetic objective starts without torch

    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()
