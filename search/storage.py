"""Open study storages from SQLAlchemy URLs, and retry the trials of workers that died.

The default is an SQLite file under ``studies/`` (embedded, no set-up), or the URL in ``HPS_STORAGE`` (so a
password never has to be written in a config or on a command line); any SQLAlchemy URL Optuna supports works,
PostgreSQL (driver psycopg 3; ``postgresql://`` means ``postgresql+psycopg://``) when several workers or
machines share a study. SQLite files are switched to write-ahead logging (readers never block the writer) and
wait up to a minute for a lock, so several local workers and a dashboard share one file without "database is
locked" failures; an SQLite connection whose work was cut short is closed, not reused
(:func:`_discard_interrupted_sqlite_connections`). One storage object is kept per URL, heartbeat setting and
process. A damaged SQLite file is refused in one line with SQLite's integrity check, when the storage is opened
and when a later query meets the damage (:func:`_refuse_damaged_sqlite`), so nothing writes to it.
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
import re
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, ExceptionContext, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from hps.search._compat import grace_period, is_heartbeat_enabled, stale_trial_ids, study_storage
from hps.search.errors import ConfigError, first_line

# Seconds an SQLite connection waits for a lock before failing: trials write briefly but a dashboard or a
# second worker may hold the file for a moment.
SQLITE_BUSY_TIMEOUT_S = 60
STORAGE_ENV = "HPS_STORAGE"
SCHEMA_RACE_ATTEMPTS = 5
ROLLED_BACK = "hps_rolled_back"  # connection info: its last use ended in a rollback
RETRY_OF = "retry_of"  # user attribute of a re-run: the number of the trial it replaces
FAIL_REASON = "fail_reason"  # user attribute of a failed trial: why, in one line
LOST_WORKER = "lost_worker"  # system attribute of a re-run whose original's worker stopped beating
# SQLite's own words for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB), whichever query meets the damage first.
DAMAGE_MESSAGES = ("database disk image is malformed", "file is not a database")
INTEGRITY_CHECK_LIMIT = 20  # problems PRAGMA integrity_check lists at most; the one line shows the first
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
# Why a server refused a connection, told apart by the words of libpq and MySQL; the first that matches says.
CONNECTION_FAILURES = (
    (
        re.compile(r'database "[^"]+" does not exist|Unknown database', re.IGNORECASE),
        "database {database!r} does not exist on {server}; create it, or name an existing database",
    ),
    (
        re.compile(r'authentication failed|role "[^"]+" does not exist|pg_hba\.conf|Access denied', re.IGNORECASE),
        "authentication failed for user {user!r} at {server} ({detail})",
    ),
    (
        re.compile(r"connection (failed|refused|timeout)|resolve host|can't connect|unknown \w+ server host", re.I),
        "server unreachable at {server} ({detail}); is it running, and are host and port right?",
    ),
)


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
    (:func:`fail_lost_trials`). Raises :class:`ConfigError` with one line for a URL that does not parse or names
    an unknown driver, a server that cannot be reached or refuses the connection, and a damaged SQLite file.
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
    database = None
    if parsed.get_backend_name() == "sqlite":
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
        if database is not None:  # before Optuna writes its tables to it
            _refuse_if_damaged(database, shown)
        storage = _create_rdb_storage(parsed.render_as_string(hide_password=False), engine_kwargs, retry)
        if database is not None:
            _refuse_damaged_sqlite(storage.engine, database, shown)
            with storage.engine.connect() as connection:  # persistent: stored in the database file
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            _discard_interrupted_sqlite_connections(storage.engine)
        return storage
    except ArgumentError as error:  # an unknown dialect or driver
        raise ConfigError(f"cannot open storage {shown!r}: {first_line(error)}; expected {allowed}") from None
    except ImportError as error:
        missing = first_line(error.__cause__ or error)
        raise ConfigError(
            f"cannot open storage {shown!r}: its driver is not installed ({missing}); expected {allowed}"
        ) from None
    except DBAPIError as error:
        raise ConfigError(f"cannot open storage {shown!r}: {_connection_failure(parsed, error)}") from None
    except (SQLAlchemyError, sqlite3.Error, ValueError, RuntimeError) as error:  # RuntimeError: schema version
        raise ConfigError(f"cannot open storage {shown!r}: {first_line(error)}") from None


def _connection_failure(url: URL, error: DBAPIError) -> str:
    """What the database driver's error says failed: the server, the database, or the credentials."""
    reason = first_line(error.orig)
    server = f"{url.host}:{url.port or DEFAULT_PORTS.get(url.get_backend_name(), 'its default port')}"
    detail = re.split(r"failed: (?:FATAL:\s+)?", reason)[-1].strip()  # libpq: "connection ... failed: FATAL: why"
    for pattern, message in CONNECTION_FAILURES:
        if url.host and pattern.search(reason):
            return message.format(database=url.database, user=url.username, server=server, detail=detail)
    return reason


def _integrity_problems(database: Path) -> list[str]:
    """What SQLite's integrity check finds wrong with the file ``database``; empty when it is sound.

    ``PRAGMA integrity_check`` reads every page and checks the indexes against their tables. For a study of 5000
    trials (49 MB) it took 75-125 ms with the file in the page cache and 0.5-1 s from a cold disk, while opening
    the storage takes 0.7 s and reading those trials 6 s; ``quick_check``, which skips the indexes, saves half
    of the warm time and nothing cold (reading the file is the cost).
    """
    # SQLite lists what it found in its first row, one problem a line, and may then fail: Python's sqlite3 steps
    # past a row before handing it over, so that row would be lost without LIMIT 1.
    query = f"SELECT * FROM pragma_integrity_check({INTEGRITY_CHECK_LIMIT}) LIMIT 1"
    try:
        with closing(sqlite3.connect(database, timeout=SQLITE_BUSY_TIMEOUT_S)) as connection:
            (found,) = connection.execute(query).fetchone()
    except sqlite3.DatabaseError as error:  # damage that stops the check before it starts (a broken header)
        if not _is_damage(error):
            raise
        return [first_line(error)]
    return [line for line in found.splitlines() if line != "ok" and not line.startswith("*** in database")]


def _is_damage(error: BaseException) -> bool:
    return isinstance(error, sqlite3.DatabaseError) and any(message in str(error) for message in DAMAGE_MESSAGES)


def _damaged(shown: str, problems: list[str]) -> ConfigError:
    """The one line for a damaged SQLite file: the first problem found, how many more, and what to do."""
    found = problems[0]
    if len(problems) > 1:
        found += f", and {'at least ' if len(problems) >= INTEGRITY_CHECK_LIMIT else ''}{len(problems) - 1} more"
    return ConfigError(
        f"storage {shown!r}: the database file is damaged (SQLite's integrity check: {found}); restore it from a "
        "backup, or use another database file"
    )


def _refuse_if_damaged(database: Path, shown: str) -> None:
    """Raise :class:`ConfigError` if the SQLite file ``database`` exists and is damaged."""
    if database.is_file():
        problems = _integrity_problems(database)
        if problems:
            raise _damaged(shown, problems)


def _refuse_damaged_sqlite(engine: Engine, database: Path, shown: str) -> None:
    """Turn SQLite's "malformed" / "not a database" errors met after opening into the same one line.

    The file may be damaged while a sweep or the dashboard runs (a disk error, a copy over it); Optuna would
    wrap the error in a ``StorageInternalError`` that says a commit failed.
    """

    @event.listens_for(engine, "handle_error")
    def _refuse(context: ExceptionContext) -> None:
        if _is_damage(context.original_exception):
            raise _damaged(shown, _integrity_problems(database) or [first_line(context.original_exception)])


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
    ``user_attrs.retry_of``. :func:`fail_lost_trials` calls it in exactly one worker.
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


def fail_lost_trials(study: optuna.Study) -> None:
    """Fail the running trials whose worker stopped beating, saying so, and retry them.

    Optuna's :func:`optuna.storages.fail_stale_trials`, step for step, except that each trial first gets its
    ``user_attrs.fail_reason``: Optuna refuses attributes on a finished trial, so it is set while the trial
    still runs. Several workers may find the same trial stale: the one that fails it calls the storage's
    stale-trial callback (:class:`RetryLostTrial`), the others leave it.
    """
    storage = study_storage(study)
    if not is_heartbeat_enabled(storage):
        return
    grace = grace_period(storage) or 2 * storage.get_heartbeat_interval()  # Optuna's default
    reason = f"lost: its worker stopped beating for {grace} s (killed, or its machine was lost)"
    failed_ids = []
    for trial_id in stale_trial_ids(study):
        try:
            storage.set_trial_user_attr(trial_id, FAIL_REASON, reason)
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed_ids.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it a moment ago
            pass
    callback = storage.get_heartbeat_stale_trial_callback()
    if callback is not None:
        for trial_id in failed_ids:
            callback(study, copy.deepcopy(storage.get_trial(trial_id)))
