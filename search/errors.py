"""User-facing errors: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from omegaconf.errors import MissingMandatoryValue

EXIT_CONFIG_ERROR = 2


class ConfigError(Exception):
    """Bad input from the user (a config value, a file, a storage URL).

    The message is one line that names what is wrong and what is allowed.
    """


def is_whole_number(value: object, minimum: int) -> bool:
    """Whether ``value`` is an int >= ``minimum``, not a bool (YAML's ``true`` is not a count).

    Args:
        value: The value as the config gives it.
        minimum: The smallest value allowed.
    """
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def failure_reason(error: BaseException) -> str:
    """How a failed trial's reason reads: the exception's type and the first line of its message.

    A library's wrapper (Optuna's ``StorageInternalError`` says only that a commit failed) is followed by the
    error it was raised from, which says why.
    """
    reason = f"{type(error).__name__}: {first_line(error)}"
    cause = error.__cause__
    return reason if cause is None else f"{reason} (from {type(cause).__name__}: {first_line(cause)})"


def as_config_error(error: BaseException) -> ConfigError | None:
    """The user error behind ``error``, also when a library wrapped it (OmegaConf wraps resolver errors)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ConfigError):
            return error
        if isinstance(error, MissingMandatoryValue):
            return ConfigError(f"{error.full_key} has no value (???); set it in the config or on the command line")
        error = error.__cause__ or error.__context__
    return None


@contextmanager
def exit_on_config_error() -> Iterator[None]:
    """Turn a user error into ``error: <message>`` on stderr and exit status 2; re-raise anything else."""
    try:
        yield
    except Exception as error:
        config_error = as_config_error(error)
        if config_error is None:
            raise
        print(f"error: {config_error}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
