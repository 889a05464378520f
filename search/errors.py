"""User-facing errors: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_CONFIG_ERROR = 2


class ConfigError(Exception):
    """Bad input from the user (a config value, a file, a storage URL).

    The message is one line that names what is wrong and what is allowed.
    """


@contextmanager
def exit_on_config_error() -> Iterator[None]:
    """Turn a :class:`ConfigError` into ``error: <message>`` on stderr and exit status 2."""
    try:
        yield
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
