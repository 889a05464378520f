"""Open study storages from SQLAlchemy URLs, and retry the trials of workers that died.

The default is an SQLite file under ``studies/`` (embedded, no set-up), or the URL in ``HPS_STORAGE`` (so a
password never has to be written in a config or on a command line); any SQLAlchemy URL Optuna supports works,
PostgreSQL (driver psycopg 3; ``postgresql://`` means ``postgresql+psycopg://``) when several workers or
machines share a study. SQLite files are switched to write-ahead logging (readers never block the writer) and
wait up to a minute for a lock, so several local workers and a dashboard share one file without "database is
locked" failures; an SQLite connection whose work was cut short is closed, not reused
(:func:`_discard_interrupted_sqlite_connections`). One storage object is kept per URL, heartbeat setting and
process.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DisconnectionError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from search.errors import ConfigError, first_line

# Seconds an SQLite connection waits for a lock before failing: trials write briefly but a dashboard or a
# second worker may hold the file for a moment.
SQLITE_BUSY_TIMEOUT_S = 60
STORAGE_ENV = "HPS_STORAGE"
SCHEMA_RACE_ATTEMPTS = 5
ROLLED_BACK = "hps_rolled_back"  # connection info: its last use ended in a rollback
RETRY_OF = "retry_of"  # user attribute of a re-run: the number of the trial it replaces
LOST_WORKER = "lost_worker"  # system attribute of a re-run whose original's worker stopped beating


@dataclass(frozen=True)
class HeartbeatSettings:
    """How running trials prove their worker is alive, and what happens to those whose worker died."""

    interval: int  # seconds between heartbeats
    grace_period: int  # a RUNNING trial without a heartbeat for this long is failed ...
    max_retry: int  # ... and run again with the same parameters, at most this many times


def studies_dir() -> Path:
    """Where studies live: ``HPS_STUDIES_DIR``, as in ``conf/paths/default.yaml``, else ``studies``."""
    return Path(os.environ.get("HPS_STUDIES_DIR", "studies"))


def default_storage() -> str:
    """The sweeper's default storage (``conf/hydra/sweeper/hps.yaml``), which the ``hps`` commands read."""
    return os.environ.get(STORAGE_ENV) or f"sqlite:///{studies_dir()}/hps.db"


def display_url(url: str) -> str:
    """The URL with any password masked, safe to print or store."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable storage URL>"


def has_password(url: str) -> bool:
    """Whether ``url`` (as written, before interpolation) spells out a password."""
    try:
        return "${" not in url and make_url(url).password is not None
    except ArgumentError:
        return False


@functools.cache
def open_storage(
    url: str, create: bool = True, heartbeat: HeartbeatSettings | None = None
) -> optuna.storages.BaseStorage:
    """Open the Optuna storage behind ``url``, creating it (an SQLite file) if needed and ``create``.

    Commands that only read (reports, export, the dashboard) pass ``create=False`` so a mistyped path is an
    error rather than a new empty database. With ``heartbeat``, stale running trials can be failed and retried
    (:func:`optuna.storages.fail_stale_trials`). Raises :class:`ConfigError` with one line for a URL that does
    not parse, names an unknown database or driver, or cannot be reached.
    """
    shown = display_url(url)
    allowed = "an SQLAlchemy URL such as sqlite:///studies/hps.db or postgresql+psycopg://user@host/db"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"storage {url!r} is not a database URL; expected {allowed}") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine_kwargs: dict = {}
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite:
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError(f"storage {shown!r} names no file; expected {allowed}")
        database = Path(parsed.database).expanduser()
        if not create and not database.is_file():
            raise ConfigError(f"storage {shown!r}: no such database file; run a sweep first (-m) or give --storage")
        database.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True  # a worker's connection may idle through a long trial
    retry = {}
    if heartbeat is not None:
        retry = {
            "heartbeat_interval": heartbeat.interval,
            "grace_period": heartbeat.grace_period,
            "heartbeat_stale_trial_callback": RetryLostTrial(heartbeat.max_retry),
        }
    try:
        storage = _create_rdb_storage(parsed.render_as_string(hide_password=False), engine_kwargs, retry)
        if sqlite:
            with storage.engine.connect() as connection:  # persistent: stored in the database file
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            _discard_interrupted_sqlite_connections(storage.engine)
        return storage
    except (SQLAlchemyError, ImportError, ValueError, RuntimeError) as error:  # RuntimeError: schema version
        raise ConfigError(f"cannot open storage {shown!r}: {first_line(error)}; expected {allowed}") from None


def _create_rdb_storage(url: str, engine_kwargs: dict, options: dict) -> optuna.storages.RDBStorage:
    """RDBStorage, tolerating the race of workers creating Optuna's tables in a new database together."""
    for attempt in itertools.count(1):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **options)
        except (IntegrityError, OperationalError, ProgrammingError) as error:
            # Another worker created the same table or type a moment ago (PostgreSQL: a unique violation;
            # SQLite: "table ... already exists").
            racing = isinstance(error, IntegrityError) or "already exists" in str(error)
            if not racing or attempt == SCHEMA_RACE_ATTEMPTS:
                raise
            time.sleep(0.5 * attempt)


def _discard_interrupted_sqlite_connections(engine: Engine) -> None:
    """Close, rather than reuse, a pooled SQLite connection whose last use ended in a rollback.

    Work cut short (Ctrl-C while Optuna reads trials, an error between a query and its last row) can leave a
    half-read statement open on the connection, and Python's sqlite3 does not reset it when the connection goes
    back to the pool. The open statement pins the connection to the database as it was: it no longer sees new
    trials ("Record does not exist"), and its next write fails at once with "database is locked", so the next
    trial that gets it fails. Optuna's sessions commit when they succeed, so a rollback marks work that did not
    finish (or a read-only use, which costs only a reconnection).
    """

    @event.listens_for(engine, "rollback")
    def _mark(connection: Connection) -> None:
        connection.info[ROLLED_BACK] = True

    @event.listens_for(engine, "checkout")
    def _discard(dbapi_connection: object, record: ConnectionPoolEntry, proxy: PoolProxiedConnection) -> None:
        if record.info.pop(ROLLED_BACK, False):
            raise DisconnectionError("its last use was rolled back; a fresh connection replaces it")


class RetryLostTrial:
    """Heartbeat-stale callback: queue a lost trial again with the same parameters, up to ``max_retry`` times.

    Like Optuna's ``RetryHeartbeatStaleTrialCallback`` (the same ``failed_trial`` and ``retry_history`` system
    attributes, so its ``retried_trial_number`` works) except that the re-run starts clean: it does not
    inherit the lost run's records, artifacts and attributes, only its parameters, plus
    ``user_attrs.retry_of``. :func:`optuna.storages.fail_stale_trials` calls it in exactly one worker.
    """

    def __init__(self, max_retry: int) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > self.max_retry:
            return
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs={RETRY_OF: trial.number},
                system_attrs={
                    "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                    "retry_history": history,
                    LOST_WORKER: True,
                },
            )
        )
