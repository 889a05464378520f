"""Open study storages from SQLAlchemy URLs.

The default is an SQLite file under ``studies/`` (embedded, no set-up); any SQLAlchemy URL Optuna supports
works, PostgreSQL when several workers or machines share a study. One storage object is kept per URL and
process, so the sweeper and the trials it runs in-process share one engine and connection pool.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from search.errors import ConfigError, first_line

# Seconds an SQLite connection waits for a lock before failing: trials write briefly but a dashboard or a
# second worker may hold the file for a moment.
SQLITE_BUSY_TIMEOUT_S = 60


def studies_dir() -> Path:
    """Where studies live: ``HPS_STUDIES_DIR``, as in ``conf/paths/default.yaml``, else ``studies``."""
    return Path(os.environ.get("HPS_STUDIES_DIR", "studies"))


def default_storage() -> str:
    """The sweeper's default storage (``conf/hydra/sweeper/hps.yaml``), which the ``hps`` commands read."""
    return f"sqlite:///{studies_dir()}/hps.db"


def display_url(url: str) -> str:
    """The URL with any password masked, safe to print or store."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable storage URL>"


@functools.cache
def open_storage(url: str, create: bool = True) -> optuna.storages.BaseStorage:
    """Open the Optuna storage behind ``url``, creating it (an SQLite file) if needed and ``create``.

    Commands that only read (reports, export, the dashboard) pass ``create=False`` so a mistyped path is an
    error rather than a new empty database. Raises :class:`ConfigError` with one line for a URL that does
    not parse, names an unknown database or driver, or cannot be reached.
    """
    shown = display_url(url)
    allowed = "an SQLAlchemy URL such as sqlite:///studies/hps.db or postgresql+psycopg://user@host/db"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"storage {url!r} is not a database URL; expected {allowed}") from None
    engine_kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError(f"storage {shown!r} names no file; expected {allowed}")
        database = Path(parsed.database).expanduser()
        if not create and not database.is_file():
            raise ConfigError(f"storage {shown!r}: no such database file; run a sweep first (-m) or give --storage")
        database.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except (SQLAlchemyError, ImportError, ValueError, RuntimeError) as error:  # RuntimeError: schema version
        raise ConfigError(f"cannot open storage {shown!r}: {first_line(error)}; expected {allowed}") from None
