"""Open study storages from SQLAlchemy URLs, and retry the trials of workers that died.

The default is an SQLite file under ``studies/`` (embedded, no set-up), or the URL in ``HPS_STORAGE`` (so a
password never has to be written in a config or on a command line); any SQLAlchemy URL Optuna supports works,
PostgreSQL (driver psycopg 3; ``postgresql://`` means ``postgresql+psycopg://``) when several workers or
machines share a study. An SQLite file is set up for sharing and refused when damaged (:mod:`hps.search.sqlite`);
a server that refuses the connection is named with the reason. One storage object is kept per URL, heartbeat
setting and process.
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)

from hps.search._compat import grace_period, is_heartbeat_enabled, stale_trial_ids, study_storage
from hps.search.errors import ConfigError, first_line
from hps.search.sqlite import SQLITE_BUSY_TIMEOUT_S, prepare_engine, refuse_if_damaged

STORAGE_ENV = "HPS_STORAGE"
SCHEMA_RACE_ATTEMPTS = 5
RETRY_OF = "retry_of"  # user attribute of a re-run: the number of the trial it replaces
FAIL_REASON = "fail_reason"  # user attribute of a failed trial: why, in one line
LOST_WORKER = "lost_worker"  # system attribute of a re-run whose original's worker stopped beating
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


def default_storage(folder: Path | None = None) -> str:
    """The sweeper's default storage (``conf/hydra/sweeper/hps.yaml``), which the ``hps`` commands read: the
    database file in ``folder`` (default: :func:`studies_dir`) unless ``HPS_STORAGE`` names another."""
    return os.environ.get(STORAGE_ENV) or f"sqlite:///{folder or studies_dir()}/hps.db"


def display_url(url: str) -> str:
    """The URL with any password masked, safe to print or store."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable storage URL>"


def absolute_url(url: str) -> str:
    """``url`` with a relative SQLite path made absolute, so that it names the same file from any folder."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return url
    return parsed.set(database=str(Path(parsed.database).expanduser().resolve())).render_as_string(hide_password=False)


def has_password(url: str) -> bool:
    """Whether ``url`` (as written, before interpolation) spells out a password.

    Args:
        url: The URL as written in the config, so that one read from an environment variable is not counted.
    """
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

    Args:
        url: An SQLAlchemy URL; ``postgresql://`` means psycopg 3, and an SQLite file's folder is created.
        create: Whether a missing SQLite file may be created: False for the commands that only read, so that a
            mistyped path is an error rather than a new empty database.
        heartbeat: Heartbeat settings, so that stale running trials can be failed and retried; None: off.
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
            refuse_if_damaged(database, shown)
        storage = _create_rdb_storage(parsed.render_as_string(hide_password=False), engine_kwargs, retry)
        if database is not None:
            prepare_engine(storage.engine, database, shown)
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


class RetryLostTrial:
    """Heartbeat-stale callback: queue a lost trial again with the same parameters, up to ``max_retry`` times.

    Like Optuna's ``RetryHeartbeatStaleTrialCallback`` (the same ``failed_trial`` and ``retry_history`` system
    attributes, so its ``retried_trial_number`` works) except that the re-run starts clean: it does not
    inherit the lost run's records, artifacts and attributes, only its parameters, plus
    ``user_attrs.retry_of``. :func:`fail_lost_trials` calls it in exactly one worker.

    Args:
        max_retry: The most times one lost trial runs again: a trial that kills its worker every time (out of
            memory) must not run forever.
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

    Args:
        study: The study whose stale trials are failed; nothing happens unless its storage has heartbeats.
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
