"""A study run from Python as the command line runs it: ``hps-<task> -m OVERRIDES``, in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from hps._config import compose
from hps.search.errors import ConfigError, first_line
from hps.search.planning import plan_sweep
from hps.search.settings import sweeper_settings
from hps.search.study import load_study


class SweepError(RuntimeError):
    """A sweep ended with an error; the message is the one line it printed, as the command line shows it.

    Args:
        message: The sweep's error line (``error: ...`` without the prefix), else its last line of output.
        returncode: The exit status of the sweep's process: 2 for bad input, 130 when it was interrupted.
    """

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


def sweep(overrides: Sequence[str] = (), *, config_name: str = "finetune") -> optuna.Study:
    """Run a study, or resume it, as ``hps-finetune -m OVERRIDES`` does, and return it.

    The sweep runs in a child process of the task's entry point (``python -m hps.objectives.<task> -m``), not in
    this one: Hydra's state is global (its config singleton, the logging it sets up, the job's output folders) and
    not made to be entered twice in a process, a sweep takes over SIGINT and SIGTERM to store the running trial as
    interrupted, and with ``hydra.sweeper.n_jobs`` it starts copies of its own command. A child also keeps the
    training's threads and memory out of the caller's process. What it prints is passed on to ``sys.stderr``.

    Args:
        overrides: Hydra overrides, as on the command line: ``experiment=smoke``, ``hydra.sweeper.n_trials=20``,
            search parameters such as ``training.dropout=interval(0,0.3)``. One study per call: comma lists and
            other experiment sweeps, which run one study each, are refused (call ``sweep`` once per value).
        config_name: The task: ``finetune`` (``hps-finetune``), ``synthetic`` or ``lcbench``.

    Returns:
        The study, loaded from the storage the sweep wrote to (``hydra.sweeper.storage``), to look at; more trials
        come from another ``sweep`` with a larger ``hydra.sweeper.n_trials``, which resumes it with its sampler and
        pruner.

    Raises:
        ConfigError: The overrides or the sweeper's settings are wrong, or run more than one study; found before
            the sweep starts.
        SweepError: The sweep ended with an error (bad input it found, a stop, a crash).
    """
    study_name, storage = _study_of(overrides, config_name)
    command = [sys.executable, "-m", f"hps.objectives.{config_name}", "-m", *overrides]
    environment = os.environ | {"PYTHONUNBUFFERED": "1"}  # its lines arrive as it prints them
    error, last = None, None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment) as run:
        try:
            for line in run.stdout:
                sys.stderr.write(line)
                if line.startswith("error: "):
                    error = line.removeprefix("error: ").strip()
                last = line.strip() or last
        except KeyboardInterrupt:  # the child has it too: let it store its running trial as interrupted
            run.wait()
            raise
    if run.returncode:
        raise SweepError(error or last or f"the sweep exited with status {run.returncode}", run.returncode)
    return load_study(storage, study_name)


def _study_of(overrides: Sequence[str], config_name: str) -> tuple[str, str]:
    """The name and storage URL of the study that a sweep with ``overrides`` runs, found as the sweeper finds them.

    The sweeper reads its settings from the config composed without the command line's sweeps (experiment lists
    and ``interval(...)`` search parameters), and names the study after them (:func:`~hps.search.planning.plan_sweep`).
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as error:
        raise ConfigError(first_line(error)) from None
    config = compose(config_name, [o.input_line for o in parsed if not o.is_sweep_override()])
    sweeper = config.hydra.sweeper
    settings = sweeper_settings({key: sweeper[key] for key in sweeper if not str(key).startswith("_")})
    experiments = plan_sweep(list(overrides), settings, None, str(config.hydra.job.name)).experiments
    if len(experiments) > 1:
        names = ", ".join(e.study_name for e in experiments)
        raise ConfigError(f"hps.sweep runs one study; these overrides run {len(experiments)} ({names}): one call each")
    return experiments[0].study_name, settings.storage
