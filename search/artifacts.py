"""Where trials' files live: Optuna's artifact store, a folder shared by every worker and the dashboard.

The folder is ``hydra.sweeper.artifact_dir`` (default ``studies/artifacts``). The database records, per
trial, each file's name and its id in the store; the store holds the bytes. ``hps dashboard`` starts
optuna-dashboard with the same folder, so a trial's page lists and previews its files (images and CSV
tables). Workers on several machines need the folder on a shared file system.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta

from hps.search._compat import study_storage

DEFAULT_FOLDER = "artifacts"  # below the studies folder


def artifact_store(folder: str | Path) -> FileSystemArtifactStore:
    """The store in ``folder``, created if missing."""
    path = Path(folder).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def attach(trial: optuna.Trial, store: FileSystemArtifactStore, path: Path) -> str:
    """Upload the file at ``path`` to ``trial``; returns its artifact id."""
    return optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)


def attached_files(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, str]:
    """File name -> artifact id of each file attached to ``trial``."""
    return {meta.filename: meta.artifact_id for meta in get_all_artifact_meta(trial, storage=study_storage(study))}
