"""SQLite files as study storages: shared by several workers and a dashboard, and refused when damaged.

An SQLite connection waits up to a minute for a lock, and the file is switched to write-ahead logging (readers
never block the writer), so local workers and a dashboard share one file without "database is locked"
failures. A connection whose work was cut short is closed, not reused (:func:`_discard_interrupted_connections`).
A damaged file is refused in one line with SQLite's integrity check, when the storage is opened and when a later
query meets the damage, so nothing writes to it.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from hps.search.errors import ConfigError, first_line

# Seconds an SQLite connection waits for a lock before failing: trials write briefly but a dashboard or a
# second worker may hold the file for a moment.
SQLITE_BUSY_TIMEOUT_S = 60
ROLLED_BACK = "hps_rolled_back"  # connection info: its last use ended in a rollback
# SQLite's own words for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB), whichever query meets the damage first.
DAMAGE_MESSAGES = ("database disk image is malformed", "file is not a database")
INTEGRITY_CHECK_LIMIT = 20  # problems PRAGMA integrity_check lists at most; the one line shows the first


def refuse_if_damaged(database: Path, shown: str) -> None:
    """Raise :class:`ConfigError` if the SQLite file ``database`` exists and is damaged.

    Args:
        database: The file, checked before Optuna writes its tables to it.
        shown: The storage URL as the message shows it (its password masked).
    """
    if database.is_file():
        problems = _integrity_problems(database)
        if problems:
            raise _damaged(shown, problems)


def prepare_engine(engine: Engine, database: Path, shown: str) -> None:
    """Set up an opened SQLite storage's engine for sharing, and for damage met after opening.

    Args:
        engine: The engine of Optuna's storage on ``database``.
        database: The file, checked again when a query meets damage.
        shown: The storage URL as the message shows it.
    """
    _refuse_damage_met_later(engine, database, shown)
    with engine.connect() as connection:  # persistent: stored in the database file
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    _discard_interrupted_connections(engine)


def _integrity_problems(database: Path) -> list[str]:
    """What SQLite's integrity check finds wrong with the file ``database``; empty when it is sound.

    ``PRAGMA integrity_check`` reads every page and checks the indexes against their tables: a fraction of a
    second on thousands of trials (benchmarks/RESULTS.md, "Study machinery under load").
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


def _refuse_damage_met_later(engine: Engine, database: Path, shown: str) -> None:
    """Turn SQLite's "malformed" / "not a database" errors met after opening into the same one line.

    The file may be damaged while a sweep or the dashboard runs (a disk error, a copy over it); Optuna would
    wrap the error in a ``StorageInternalError`` that says a commit failed.
    """

    @event.listens_for(engine, "handle_error")
    def _refuse(context: ExceptionContext) -> None:
        if _is_damage(context.original_exception):
            raise _damaged(shown, _integrity_problems(database) or [first_line(context.original_exception)])


def _discard_interrupted_connections(engine: Engine) -> None:
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
