"""Heartbeats of running trials: settings, checked, and the thread that beats while a trial runs.

Optuna's own heartbeat beats only inside ``study.optimize``; the sweeper's ask/tell loop beats itself, so that a
trial whose worker died (``kill -9``, a lost node) stops beating and is failed and run again
(:func:`hps.search.storage.fail_lost_trials`).
"""

from __future__ import annotations

import threading

import optuna
from omegaconf import DictConfig

from hps.search._compat import trial_id
from hps.search.errors import ConfigError, first_line, is_whole_number
from hps.search.progress import console
from hps.search.storage import HeartbeatSettings


def heartbeat_settings(config: DictConfig | None) -> HeartbeatSettings | None:
    """``hydra.sweeper.heartbeat`` checked; None when heartbeats are off (``interval: null``).

    Args:
        config: ``{interval, grace_period, max_retry}``; a grace period no longer than the interval would take
            live trials for lost.
    """
    if config is None or config.get("interval") is None:
        return None
    values = {key: config.get(key) for key in ("interval", "grace_period", "max_retry")}
    for key, value in values.items():
        minimum = 0 if key == "max_retry" else 1  # no re-run at all is a valid choice; no interval is not
        if not is_whole_number(value, minimum):
            raise ConfigError(f"hydra.sweeper.heartbeat.{key} is {value!r}; it must be a whole number >= {minimum}")
    if values["grace_period"] <= values["interval"]:
        raise ConfigError(
            f"hydra.sweeper.heartbeat.grace_period ({values['grace_period']}) must be longer than the interval "
            f"({values['interval']}), or live trials are taken for lost"
        )
    return HeartbeatSettings(**values)


class Heartbeat:
    """Records a running trial's heartbeat every ``settings.interval`` seconds from a thread; inert without.

    Args:
        trial: The running trial.
        settings: How often to beat; None: heartbeats are off and the thread never starts.
    """

    def __init__(self, trial: optuna.Trial, settings: HeartbeatSettings | None) -> None:
        self._trial, self._settings = trial, settings
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial.number}", daemon=True)

    def __enter__(self) -> Heartbeat:
        if self._settings is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stopped.wait(self._settings.interval):
            try:
                self._trial.storage.record_heartbeat(trial_id(self._trial))
            except Exception as error:  # a database hiccup: beat again next interval rather than stop beating
                console.print(f"heartbeat of trial {self._trial.number} not recorded: {first_line(error)}")
