"""The model registry: which production model came from which study, trial and data, and how it fared since.

Two tables live beside Optuna's in the study's own database, so a model's lineage travels with its study (SQLite
file or PostgreSQL alike) and needs no other service:

- ``hps_models``: one row per production training (its folder, the study and trial it came from, the data's
  fingerprint and sizes, its validation and test metrics, versions, time), grouped by *lineage*: the name under
  which ``studies/<lineage>/production`` points at the promoted model. A re-tuned model names its parent.
- ``hps_checks``: one row per ``hps check`` or ``hps retune`` comparison, with the numbers behind its verdict.

Optuna ignores tables it does not own, and these are created on the first write (reads of a database without
them find nothing and create nothing), so an existing study database gains them without a migration.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine, Row
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.sql import Select

from hps.search._compat import storage_engine
from hps.search.errors import ConfigError
from hps.search.storage import display_url, open_storage

PROVENANCE = "provenance.json"  # in a production run's folder: where the model came from and its registry row
CREATE_ATTEMPTS = 5
PRODUCTION = "production"  # studies/<lineage>/production: a link to the promoted model's run folder

_metadata = MetaData()
models_table = Table(
    "hps_models",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("lineage", String(255), nullable=False, index=True),
    Column("folder", Text, nullable=False),  # the run folder: model/, metrics.json, config.yaml, provenance.json
    Column("study", String(255)),  # None for a production training not exported from a study
    Column("trial", Integer),
    Column("parent", Integer, ForeignKey("hps_models.id")),  # the model a re-tune set out to replace
    Column("data", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("sizes", JSON, nullable=False),  # examples per split
    Column("metric", String(64), nullable=False),
    Column("validation", Float),  # None when validation was merged into training
    Column("test", Float),  # None without a test split
    Column("versions", JSON, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("promoted", Boolean, nullable=False, default=False),
)
checks_table = Table(
    "hps_checks",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", Integer, ForeignKey("hps_models.id"), nullable=False, index=True),
    Column("kind", String(32), nullable=False),  # labelled, unlabelled, retune
    Column("data", Text, nullable=False),  # the file checked
    Column("fingerprint", String(64), nullable=False),
    Column("examples", Integer, nullable=False),
    Column("verdict", String(32), nullable=False),
    Column("action_needed", Boolean, nullable=False),
    Column("numbers", JSON, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)


@dataclass
class ModelEntry:
    """A production model as the registry records it."""

    lineage: str
    folder: str
    data: str
    fingerprint: str
    sizes: dict[str, int]
    metric: str
    validation: float | None
    test: float | None
    versions: dict[str, str]
    study: str | None = None
    trial: int | None = None
    parent: int | None = None
    id: int | None = None
    promoted: bool = False
    created: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc))


@dataclass
class CheckEntry:
    """One check of a model against new data, as the registry records it."""

    model: int
    kind: str
    data: str
    fingerprint: str
    examples: int
    verdict: str
    action_needed: bool
    numbers: dict[str, Any]
    id: int | None = None
    created: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc))


def _engine(database: str | Engine, write: bool = False) -> Engine | None:
    """The engine of the database at the URL (opened and checked as Optuna's storage) or given; the registry's
    tables are made for a write, and a read of a database without them gets None."""
    engine = open_storage(database, create=write).engine if isinstance(database, str) else database
    if write:
        _create_tables(engine)
    elif not inspect(engine).has_table(models_table.name):
        return None
    return engine


def _create_tables(engine: Engine) -> None:
    """The registry's tables, tolerating the race of two processes creating them in a new database together."""
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            _metadata.create_all(engine, checkfirst=True)
            return
        except (IntegrityError, OperationalError, ProgrammingError) as error:
            if attempt == CREATE_ATTEMPTS or not (isinstance(error, IntegrityError) or "already exists" in str(error)):
                raise
            time.sleep(0.2 * attempt)


def register(url: str, entry: ModelEntry) -> int:
    """Add a production model to the registry of the database at ``url``; its id."""
    values = {key: value for key, value in vars(entry).items() if key != "id"}
    with _engine(url, write=True).begin() as connection:
        return connection.execute(insert(models_table).values(**values)).inserted_primary_key[0]


def _select(database: str | Engine, query: Select) -> list[Row]:
    """The rows ``query`` selects; none from a database without the registry's tables."""
    engine = _engine(database)
    if engine is None:
        return []
    with engine.connect() as connection:
        return list(connection.execute(query))


def models(url: str | Engine, lineage: str | None = None) -> list[ModelEntry]:
    """The registered models of the database (a URL or a study's engine), oldest first; only ``lineage``'s when
    given."""
    query = select(models_table).order_by(models_table.c.id)
    if lineage is not None:
        query = query.where(models_table.c.lineage == lineage)
    return [ModelEntry(**row._asdict()) for row in _select(url, query)]


def model(url: str, model_id: int) -> ModelEntry:
    """The registered model ``model_id``; one line when the database has none."""
    rows = _select(url, select(models_table).where(models_table.c.id == model_id))
    if not rows:
        raise ConfigError(f"model {model_id} is not in the registry of {display_url(url)}; `hps models` lists them")
    return ModelEntry(**rows[0]._asdict())


def record_check(url: str, entry: CheckEntry) -> int:
    """Store a check's numbers and verdict; its id."""
    values = {key: value for key, value in vars(entry).items() if key != "id"}
    values["numbers"] = json.loads(json.dumps(values["numbers"]))  # plain floats and lists only
    with _engine(url, write=True).begin() as connection:
        return connection.execute(insert(checks_table).values(**values)).inserted_primary_key[0]


def checks(url: str | Engine, model_id: int | None = None) -> list[CheckEntry]:
    """The stored checks, oldest first; only ``model_id``'s when given."""
    query = select(checks_table).order_by(checks_table.c.id)
    if model_id is not None:
        query = query.where(checks_table.c.model == model_id)
    return [CheckEntry(**row._asdict()) for row in _select(url, query)]


def checks_by_model(url: str | Engine) -> dict[int, list[CheckEntry]]:
    """Every stored check, grouped by model, oldest first: one query for a listing of many models."""
    grouped: dict[int, list[CheckEntry]] = {}
    for entry in checks(url):
        grouped.setdefault(entry.model, []).append(entry)
    return grouped


def promote(url: str, model_id: int, studies_dir: Path) -> Path:
    """Make ``model_id`` its lineage's production model: the only promoted row of the lineage, and the target of
    the ``studies/<lineage>/production`` link (replaced atomically, so a reader never finds it missing)."""
    entry = model(url, model_id)
    with _engine(url, write=True).begin() as connection:
        connection.execute(update(models_table).where(models_table.c.lineage == entry.lineage).values(promoted=False))
        connection.execute(update(models_table).where(models_table.c.id == model_id).values(promoted=True))
    entry = promoted(url, entry.lineage) or entry  # the link follows the database, should promotions race
    link = studies_dir / entry.lineage / PRODUCTION
    link.parent.mkdir(parents=True, exist_ok=True)
    staged = link.with_name(f".{PRODUCTION}-{entry.id}")
    staged.unlink(missing_ok=True)
    staged.symlink_to(os.path.relpath(Path(entry.folder).resolve(), link.parent.resolve()), target_is_directory=True)
    os.replace(staged, link)
    return link


def study_models(study: optuna.Study) -> list[ModelEntry]:
    """The production models trained from ``study``'s trials; none when its storage is not a database."""
    engine = storage_engine(study)
    return [] if engine is None else [entry for entry in models(engine) if entry.study == study.study_name]


def promoted(url: str, lineage: str) -> ModelEntry | None:
    """The lineage's production model; None before one is promoted."""
    return next((entry for entry in models(url, lineage) if entry.promoted), None)
