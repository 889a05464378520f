"""The budget lock: one worker at a time counts a study's budget and asks for a trial.

Held in the database where it can be (PostgreSQL advisory lock, MySQL ``GET_LOCK``) or, for SQLite, on a lock
file beside the database, so that N workers sharing a study never start more than ``n_trials`` trials.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import zlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url


@contextlib.contextmanager
def budget_lock(url: str, study_name: str) -> Iterator[None]:
    """Hold the study's budget lock: one worker at a time counts the budget and asks for a trial.

    Args:
        url: The study's storage URL: the lock lives in that database, or beside that SQLite file.
        study_name: The study: workers of other studies in the same database do not wait.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        with Path(f"{Path(parsed.database).expanduser()}.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if backend == "postgresql":
        key = zlib.crc32(f"hps:{study_name}".encode())
        take, release = "SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"
    elif backend in ("mysql", "mariadb"):
        key = f"hps:{study_name}"[:64]
        take, release = "SELECT GET_LOCK(:key, -1)", "SELECT RELEASE_LOCK(:key)"
    else:  # no cross-process lock known: N workers may overshoot n_trials by up to N - 1
        yield
        return
    with _lock_engine(url).connect() as connection:
        connection.execute(text(take), {"key": key})
        try:
            yield
        finally:
            connection.execute(text(release), {"key": key})
            connection.commit()


@functools.cache
def _lock_engine(url: str) -> Engine:
    """An engine of its own for the lock's session, apart from Optuna's transactions; one kept connection."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, pool_size=1, max_overflow=0, pool_pre_ping=True)
