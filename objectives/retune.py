"""``hps retune``: search again from a production model's study on new data, train the new best, and promote it
only if it beats the old model on the new test split by more than noise.

Three stages, each resumable: run ``hps retune`` again after an interruption and it goes on where it stopped.

1. **Study** ``<lineage>-retune-<model>-<hash>`` in the model's database (the hash is of the new files and the
   overrides, so other data starts another study): the trial's own task overrides (model, data config, training
   settings; not the values the search space sets) with ``data.dir`` the new folder, warm-started with the old
   study's ``top_k`` best configurations. ``n_trials`` is the study's total, so a resumed study runs only the
   trials it lacks.
2. **Production training** of its best trial, as ``hps export`` and ``hps-finetune`` do it, registered in the old
   model's lineage with the old model as its parent; skipped when the registry already holds it.
3. **Comparison**: both models over the new test split, a paired bootstrap of their metric difference
   (:func:`hps.search.drift.paired_difference`); the new model is promoted only when the whole interval is above
   zero, else the old one stays and the reason is printed. Stored as a ``retune`` check of the new model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hps.objectives.checks import ProductionModel, open_model, run_model
from hps.objectives.data import fingerprint, read_batch
from hps.objectives.metrics import metric_function
from hps.search.drift import CONFIDENCE, paired_difference
from hps.search.errors import ConfigError
from hps.search.export import Selection, export
from hps.search.registry import PROVENANCE, CheckEntry, ModelEntry, models, promote, record_check
from hps.search.storage import STORAGE_ENV, studies_dir
from hps.search.study import load_study
from hps.search.trial import record


@dataclass
class Outcome:
    """How a re-tune ended."""

    study: str
    incumbent: ModelEntry
    challenger: ModelEntry
    comparison: dict
    promoted: bool
    reason: str


def retune(
    production: ProductionModel,
    data_dir: Path,
    n_trials: int,
    top_k: int = 3,
    overrides: list[str] | None = None,
    confidence: float = CONFIDENCE,
) -> Outcome:
    """Run the three stages for ``production`` on the data folder ``data_dir``; the outcome."""
    incumbent = production.entry
    if incumbent.study is None:
        raise ConfigError(f"model {incumbent.id} was not trained from a study (no hps export); retune needs its study")
    test_file = _check_data_dir(production, data_dir)
    task = [*_task_overrides(production), f"data.dir={_quoted(data_dir.resolve())}"]
    # One study per model, data and overrides: a re-run resumes it; other data or overrides start another.
    files = sorted(path for path in data_dir.iterdir() if path.is_file())
    study = f"{incumbent.lineage}-retune-{incumbent.id}-{fingerprint(files, {'overrides': overrides or []})[:8]}"
    sweep = [
        "-m",
        *task,
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.warm_start={{study:{incumbent.study},top_k:{top_k}}}",
        *(overrides or []),
    ]
    _run_stage("the re-tuning study", sweep, production.url)
    challenger = _challenger(production, study)
    if challenger is None:
        exported = export(production.url, study, Selection(), "yaml", studies_dir())[0]
        production_run = [
            "--config-dir",
            str(exported.parent.resolve()),
            "--config-name",
            exported.stem,
            f"production.source.lineage={incumbent.lineage}",
            f"production.source.parent={incumbent.id}",
            f"hydra.run.dir={_quoted((studies_dir() / study / 'runs' / 'retune').resolve())}",
        ]
        _run_stage("production training of the re-tuned model", production_run, production.url)
        challenger = _challenger(production, study)
        if challenger is None:
            raise ConfigError(f"production training of study {study}'s best trial registered no model")
    return _compare(production, open_model(Path(challenger.folder), production.url), test_file, study, confidence)


def _quoted(path: Path) -> str:
    """A path as a Hydra override value: quoted, so that commas, spaces and brackets stay part of it."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_data_dir(production: ProductionModel, data_dir: Path) -> Path:
    """The new data folder holds every split file of the model's data config; the test file's path."""
    data = production.config.data
    if not data_dir.is_dir():
        raise ConfigError(f"--data {str(data_dir)!r} is not a folder; give a folder laid out as data.dir of the model")
    names = {"train_file": data.train_file, "validation_file": data.get("validation_file"), "test_file": data.test_file}
    for key, name in names.items():
        if key != "validation_file" and not name:
            raise ConfigError(f"the model's data config has no {key}; retune trains and compares on the new folder's")
        if name and not (data_dir / str(name)).is_file():
            raise ConfigError(
                f"--data {str(data_dir)!r} has no {name!r} (the model's data.{key}); allowed: a folder "
                f"with {', '.join(repr(str(n)) for n in names.values() if n)}"
            )
    return data_dir / str(data.test_file)


def _task_overrides(production: ProductionModel) -> list[str]:
    """The overrides that rebuilt the model's trial from ``conf/``, less the values its search space set and the
    data folder: the task as the old study ran it."""
    study = load_study(production.url, production.entry.study)
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == production.entry.trial), None)
    if trial is None:
        raise ConfigError(f"trial {production.entry.trial} of study {study.study_name!r} is gone from the database")
    config = record(trial, "config") or {}
    tuned = {str(spec.get("key")) for spec in (config.get("search_space") or {}).values() if isinstance(spec, dict)}
    kept = []
    for override in record(trial, "overrides", []):
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in tuned and key != "data.dir":
            kept.append(override)
    return kept


def _run_stage(what: str, arguments: list[str], url: str) -> None:
    """Run ``hps-finetune`` with ``arguments``, the storage passed by environment (a password stays off the
    command line); a failure is one line saying that a re-run resumes."""
    environment = os.environ | {STORAGE_ENV: url, "HPS_STUDIES_DIR": str(studies_dir().resolve())}
    command = [sys.executable, "-m", "hps.objectives.finetune", *arguments]
    finished = subprocess.run(command, env=environment, check=False)
    if finished.returncode != 0:
        raise ConfigError(
            f"{what} stopped (exit status {finished.returncode}); mend what it printed above and run hps retune "
            "again: it resumes"
        )


def _challenger(production: ProductionModel, study: str) -> ModelEntry | None:
    """The re-tuned model, once its production training has finished and registered it."""
    done = [
        entry
        for entry in models(production.url, production.entry.lineage)
        if entry.study == study and entry.parent == production.entry.id and (Path(entry.folder) / PROVENANCE).is_file()
    ]
    return done[-1] if done else None


def _compare(
    incumbent: ProductionModel, challenger: ProductionModel, test_file: Path, study: str, confidence: float
) -> Outcome:
    table = read_batch(incumbent.config.data, test_file)
    old, new = run_model(incumbent, table), run_model(challenger, table)
    if old.labels is None:
        raise ConfigError(f"{str(test_file)!r} has no label column {incumbent.config.data.label_column!r}")
    metric = metric_function(incumbent.entry.metric)
    comparison = paired_difference(metric, old.labels, new.predictions, old.predictions, confidence)
    better = comparison["verdict"] == "better"
    name = incumbent.entry.metric
    shown = (
        f"{name} {comparison['challenger']:.4f} against {comparison['incumbent']:.4f} on {len(table)} new test "
        f"examples, difference {comparison['difference']:+.4f} [{comparison['low']:+.4f}, {comparison['high']:+.4f}]"
    )
    if better:
        reason = f"model {challenger.entry.id} promoted: {shown}, above zero"
    else:
        reason = f"model {challenger.entry.id} not promoted, model {incumbent.entry.id} stays: {shown}; " + (
            "the interval includes zero (within noise)" if comparison["verdict"] == "within noise" else "worse"
        )
    record_check(
        incumbent.url,
        CheckEntry(
            model=challenger.entry.id,
            kind="retune",
            data=str(test_file.resolve()),
            fingerprint=fingerprint([test_file]),
            examples=len(table),
            verdict="promoted" if better else "refused",
            action_needed=False,
            numbers=comparison | {"incumbent_model": incumbent.entry.id, "confidence": confidence, "reason": reason},
        ),
    )
    if better:  # after the record, so a promotion never goes unrecorded; a re-run compares and promotes again
        promote(incumbent.url, challenger.entry.id, studies_dir())
    return Outcome(study, incumbent.entry, challenger.entry, comparison, better, reason)
