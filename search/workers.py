"""Several workers on one study: each worker's name and share of the machine, its asks, and local workers.

Every worker runs the same command and they coordinate only through the storage:

* **Budget.** ``n_trials`` is the study's total; a worker counts it and asks for a trial under the budget lock
  (:mod:`hps.search.locks`), so that N workers never start more than ``n_trials`` trials.
* **Heartbeats.** While a trial runs, its worker beats (:mod:`hps.search.heartbeats`). Before each ask, and
  while waiting for other workers' trials, a worker fails the trials whose heartbeat is older than the grace
  period; :class:`hps.search.storage.RetryLostTrial` queues each again with the same parameters.
* **Local workers.** ``n_jobs: N`` starts N - 1 more copies of the same command as child processes (their
  output in ``<sweep dir>/workers/``), and the machine's cores are shared among the N
  (:func:`threads_per_worker`); with GPUs, each worker gets its own (:mod:`hps.search.devices`), and each
  trial records the value it ran with (user attribute ``cuda_visible_devices``).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution

from hps.search._compat import trial_id
from hps.search.devices import AUTO, CUDA_DEVICES_ENV, check_worker_settings, device_assignment, visible_devices
from hps.search.errors import ConfigError, failure_reason
from hps.search.locks import budget_lock
from hps.search.progress import console
from hps.search.storage import HeartbeatSettings, fail_lost_trials
from hps.search.study import INTERRUPTED_REASON, budget_spent, fail_trial

WORKERS_ENV = "HPS_WORKERS_PER_MACHINE"  # how many workers share this machine's cores
WORKER_INDEX_ENV = "HPS_WORKER_INDEX"  # set in the children a sweeper starts: they start none themselves
WORKER = "worker"  # user attribute: host:pid of the worker that ran the trial
DEVICES = "cuda_visible_devices"  # user attribute: the CUDA_VISIBLE_DEVICES its worker ran the trial with, if set
STOP_TIMEOUT_S = 60


def quiet_optuna_notices() -> None:
    """Silence Optuna's notices about what the platform does on purpose.

    It builds on Optuna's experimental APIs (heartbeats, metric names, artifacts) and beats heartbeats itself
    in its ask/tell loop; the warnings about both are noise to a user. A range that depends on a config group's
    option (:mod:`hps.search.groups`) is a dynamic space, which Optuna's GP sampler draws at random, as
    docs/search-spaces.md says; its warning on every trial would bury the study's progress.
    """
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    for handler in logging.getLogger("optuna").handlers:
        if _dynamic_space_notice not in handler.filters:
            handler.addFilter(_dynamic_space_notice)


def _dynamic_space_notice(record: logging.LogRecord) -> bool:
    """False for the GP sampler's notice that it samples a parameter of a dynamic space independently."""
    return "dynamic search space is not supported by GPSampler" not in record.getMessage()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def workers_per_machine() -> int:
    """``HPS_WORKERS_PER_MACHINE`` (1 when unset), checked."""
    try:
        return max(1, int(os.environ.get(WORKERS_ENV) or 1))
    except ValueError:
        raise ConfigError(f"{WORKERS_ENV} is {os.environ[WORKERS_ENV]!r}; it must be a positive integer") from None


def threads_per_worker() -> int:
    """Torch threads for one worker: the cores shared among ``HPS_WORKERS_PER_MACHINE`` workers (at least 1)."""
    return max(1, available_cores() // workers_per_machine())


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def in_worker_pool() -> bool:
    """Whether this process is one of several local workers."""
    return WORKER_INDEX_ENV in os.environ or workers_per_machine() > 1


def ask_within_budget(
    study: optuna.Study,
    url: str,
    n_trials: int,
    distributions: dict[str, BaseDistribution],
    heartbeat: HeartbeatSettings | None,
    then: Callable[[optuna.Trial], None] | None = None,
) -> optuna.Trial | None:
    """A new trial (or a queued re-run) if the study's budget allows one; ``None`` when it is spent.

    Trials of dead workers are failed (and queued again) first, so that their budget goes to their re-runs.
    Counting and asking happen under the budget lock, so workers sharing the study never start more than
    ``n_trials``. The trial records which worker runs it and, with heartbeats on, its first heartbeat.

    Args:
        study: The study to ask.
        url: Its storage's URL, where the budget lock is held.
        n_trials: The study's budget: the trials it should hold in total, across workers and resumes.
        distributions: The search space, which Optuna samples the trial's parameters from.
        heartbeat: Heartbeat settings, or None: with them the trial beats at once, so that it is never taken for
            lost before its first beat.
        then: Asks the trial for the parameters that depend on its values (a range per model:
            :meth:`SearchSpace.suggest_dependent`); a failure there fails the trial, as any error after the ask.
    """
    fail_lost_trials(study)
    with budget_lock(url, study.study_name):
        if budget_spent(study) >= n_trials:
            return None
        trial = study.ask(distributions)
    try:
        if heartbeat is not None:  # beat at once: a trial that never beat is never found stale
            trial.storage.record_heartbeat(trial_id(trial))
        trial.set_user_attr(WORKER, worker_name())
        if CUDA_DEVICES_ENV in os.environ:  # the GPU(s) the trial could see; device: auto took the first
            trial.set_user_attr(DEVICES, os.environ[CUDA_DEVICES_ENV])
        if then is not None:
            then(trial)
    except KeyboardInterrupt:  # between ask and the first beat: leave no RUNNING trial that nobody watches
        fail_trial(study, trial, INTERRUPTED_REASON, interrupted=True)
        raise
    except Exception as error:
        fail_trial(study, trial, failure_reason(error))
        raise
    return trial


class LocalWorkers:
    """``n_jobs - 1`` copies of this very command, started as child processes for the duration of a sweep.

    Each child is a worker like this process: it opens the same studies and takes trials from the same budget.
    Children get their own session, so a Ctrl-C in the terminal reaches this process only, which stops them
    with SIGTERM (each stores its running trial as interrupted). Their output goes to
    ``<folder>/worker_<i>.log``.

    Built, it has resolved ``n_jobs: auto`` and each worker's device (:func:`device_assignment`) and has set
    this process's ``CUDA_VISIBLE_DEVICES``: build it before anything (a preflight) may initialise CUDA, which
    reads the variable once. In a child (``HPS_WORKER_INDEX`` set) it does nothing: its parent chose for it.

    Args:
        n_jobs: Workers on this machine, this process included, or ``auto``: one per visible GPU times
            ``trials_per_device``.
        folder: Where each child's output goes, since children have no terminal of their own.
        trials_per_device: Workers sharing one GPU: small models leave a GPU mostly idle with one trial.
    """

    def __init__(self, n_jobs: int | str, folder: Path, trials_per_device: int = 1) -> None:
        self.requested, self.trials_per_device, self.folder = n_jobs, trials_per_device, folder
        self.children: list[tuple[subprocess.Popen, Path]] = []
        check_worker_settings(n_jobs, trials_per_device)
        self.devices: list[str] = []
        if WORKER_INDEX_ENV in os.environ or n_jobs == 1:  # one worker: no device to share, no need to count
            self.assignment: list[str | None] = [None]
        else:
            self.devices = visible_devices()
            self.assignment = device_assignment(self.devices, n_jobs, trials_per_device)
        self.n_jobs = len(self.assignment)
        if self.assignment[0] is not None:
            os.environ[CUDA_DEVICES_ENV] = self.assignment[0]

    def __enter__(self) -> LocalWorkers:
        if WORKER_INDEX_ENV in os.environ:
            return self
        if self.n_jobs == 1:
            if self.requested == AUTO:
                console.print(
                    f"1 worker on this machine ({self._auto()}), {threads_per_worker()} threads", highlight=False
                )
            return self
        os.environ[WORKERS_ENV] = str(self.n_jobs)  # for this process's trials and, inherited, the children's
        self.folder.mkdir(parents=True, exist_ok=True)
        for index in range(1, self.n_jobs):
            log = self.folder / f"worker_{index}.log"
            device = self.assignment[index]
            with log.open("w") as output:
                child = subprocess.Popen(
                    sys.orig_argv,
                    env=os.environ | {WORKER_INDEX_ENV: str(index)} | ({CUDA_DEVICES_ENV: device} if device else {}),
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.children.append((child, log))
        console.print(
            f"{self.n_jobs} workers on this machine"
            + (f" ({self._auto()})" if self.requested == AUTO else "")
            + f": this one and {len(self.children)} started (logs in {self.folder}), {threads_per_worker()} threads "
            f"each{self._devices_text()}",
            highlight=False,
        )
        return self

    def _auto(self) -> str:
        if not self.devices:
            return f"n_jobs {AUTO}: no GPU visible"
        gpus = f"{len(self.devices)} GPU{'s' if len(self.devices) > 1 else ''}"
        return f"n_jobs {AUTO}: {gpus} x trials_per_device {self.trials_per_device}"

    def _devices_text(self) -> str:
        """``, 1 per GPU (CUDA_VISIBLE_DEVICES): this one 5, worker_1 7``; empty without GPUs."""
        if self.assignment[0] is None:
            return ""
        per_gpu = math.ceil(self.n_jobs / len(self.devices))
        names = ["this one", *(f"worker_{index}" for index in range(1, self.n_jobs))]
        text = f", {per_gpu} per GPU (CUDA_VISIBLE_DEVICES): " + ", ".join(
            f"{name} {device}" for name, device in zip(names, self.assignment, strict=True)
        )
        if per_gpu > self.trials_per_device:
            text += (
                f" (more than trials_per_device={self.trials_per_device}: {self.n_jobs} workers on "
                f"{len(self.devices)} GPU{'s' if len(self.devices) > 1 else ''})"
            )
        return text

    def wait(self) -> None:
        """Wait for every child to finish its share; say which failed and where its log is."""
        for child, log in self.children:
            if child.wait() != 0:
                console.print(f"worker pid {child.pid} exited with status {child.returncode}; see {log}")

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            return
        for child, _ in self.children:  # interrupted or failed: stop the children cleanly
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child, _ in self.children:
            try:
                child.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
