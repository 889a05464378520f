"""Stopping a sweep: Ctrl-C and a scheduler's SIGTERM, remembered even when the trial's own code swallows them."""

from __future__ import annotations

import signal
from typing import Any


class StopSignals:
    """While entered, Ctrl-C (SIGINT) and SIGTERM (a scheduler's stop) raise KeyboardInterrupt and are remembered.

    Remembered because the trial's own code runs when they arrive: a training loop that catches the interrupt
    to save a checkpoint and returns, or a clean-up that fails and raises another error instead, would
    otherwise turn a stop into an ordinary finished trial and go on to the next. A SIGINT that the process
    ignores (started in the background by a shell) stays ignored.
    """

    def __init__(self) -> None:
        self.received = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signum == signal.SIGINT and signal.getsignal(signum) is not signal.default_int_handler:
                continue
            self._previous[signum] = signal.signal(signum, self._stop)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _stop(self, signum: int, frame: object) -> None:
        self.received = True
        raise KeyboardInterrupt

    def raise_if_received(self) -> None:
        """Raise KeyboardInterrupt if a stop arrived, also one the code it interrupted swallowed."""
        if self.received:
            raise KeyboardInterrupt
