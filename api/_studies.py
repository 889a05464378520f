"""The ``hps`` commands around a finished study, from Python: load, export, report and compare.

Each takes what its command takes, with the same defaults: the storage is ``$HPS_STORAGE``, else
``sqlite:///<studies>/hps.db``, and files go below the studies folder, ``$HPS_STUDIES_DIR`` or ``studies``.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from hps.search import study as studies
from hps.search.export import Selection
from hps.search.export import export as export_trials
from hps.search.storage import default_storage, studies_dir


def load_study(*, study_name: str | None = None, storage: str | None = None) -> optuna.Study:
    """A study of the storage, by name or the newest, with the trials and records its sweep stored.

    Args:
        study_name: The study's name; None for the newest study in the storage.
        storage: The storage's SQLAlchemy URL; None for the sweeper's default.
    """
    return studies.load_study(storage or default_storage(), study_name)


def export(
    *,
    study_name: str | None = None,
    storage: str | None = None,
    top_k: int | None = None,
    trial: int | None = None,
    output_format: str = "yaml",
    folder: str | Path | None = None,
) -> list[Path]:
    """Write the best trial's complete config, ready for production training, as ``hps export`` does.

    ``hps-finetune --config-dir <folder>/<study> --config-name best`` then trains the production model from it.

    Args:
        study_name: The study's name; None for the newest study in the storage.
        storage: The storage's SQLAlchemy URL; None for the sweeper's default.
        top_k: Export the ``top_k`` best complete trials instead, one file each (``top_1``, ``top_2``, ...).
        trial: Export this trial (by number) instead.
        output_format: ``yaml`` (a config Hydra runs) or ``json``.
        folder: The studies folder, below which ``<study>/best.yaml`` is written; None for the default.

    Returns:
        The files written.
    """
    return export_trials(
        storage or default_storage(),
        study_name,
        Selection(top_k=top_k, trial=trial),
        output_format,
        _studies_folder(folder),
    )


def report(
    *, study_name: str | None = None, storage: str | None = None, png: bool = False, folder: str | Path | None = None
) -> list[Path]:
    """Write a study's self-contained HTML report (top trials, history, curves, importances), as ``hps report`` does.

    Args:
        study_name: The study's name; None for the newest study in the storage.
        storage: The storage's SQLAlchemy URL; None for the sweeper's default.
        png: Also write each figure as a PNG, for papers and slides.
        folder: The studies folder, below which ``<study>/report.html`` is written; None for the default.

    Returns:
        The files written.
    """
    from hps.search.report import write_report  # plotly and matplotlib: only when a report is written

    study = load_study(study_name=study_name, storage=storage)
    return write_report(study, (_studies_folder(folder)) / study.study_name, png=png)


def compare(*, pattern: str | None = None, storage: str | None = None, folder: str | Path | None = None) -> list[Path]:
    """Compare the studies of a storage, as ``hps compare`` does: a table and their best value against compute spent.

    Args:
        pattern: Only studies whose names match this shell pattern (``smoke-*``); None for all.
        storage: The storage's SQLAlchemy URL; None for the sweeper's default.
        folder: The studies folder, where ``comparison.csv`` and ``comparison.html`` are written; None for the
            default.

    Returns:
        The files written.
    """
    from hps.search.compare import comparison_figure, select_studies, study_row, write_comparison  # plotly

    chosen = select_studies(storage or default_storage(), pattern)
    rows = [study_row(study) for study in chosen]
    return write_comparison(rows, comparison_figure(chosen), _studies_folder(folder))


def _studies_folder(folder: str | Path | None) -> Path:
    return Path(folder) if folder is not None else studies_dir()
