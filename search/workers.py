"""Several workers on one study: the budget lock, heartbeats and local worker processes.

Every worker runs the same command and they coordinate only through the storage:

* **Budget.** ``n_trials`` is the study's total. "Count the trials that spend the budget, then create one"
  runs under a lock held in the database (PostgreSQL advisory lock, MySQL ``GET_LOCK``) or, for SQLite,
  on a lock file beside the database, so that N workers never start more than ``n_trials`` trials.
* **Heartbeats.** While a trial runs, its worker records a heartbeat every ``interval`` seconds (Optuna's
  own heartbeat beats only inside ``study.optimize``; an ask/tell loop has to do it itself). Before each
  ask, and while waiting for other workers' trials, a worker fails the trials whose heartbeat is older than
  the grace period; :class:`hps.search.storage.RetryLostTrial` queues each again with the same parameters.
* **Local workers.** ``n_jobs: N`` starts N - 1 more copies of the same command as child processes (their
  output in ``<sweep dir>/workers/``), and the machine's cores are shared among the N
  (:func:`threads_per_worker`).
* **Devices.** ``n_jobs: auto`` is one worker per visible GPU times ``trials_per_device`` (1 without a GPU).
  With several workers, each gets one entry of the visible list as its own ``CUDA_VISIBLE_DEVICES``
  (:func:`device_assignment`), so a trial's ``device: auto`` is "its" GPU as ``cuda:0``; each trial records
  the value it ran with (user attribute ``cuda_visible_devices``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from hps.search._compat import trial_id
from hps.search.errors import ConfigError, failure_reason, first_line, is_whole_number
from hps.search.progress import console
from hps.search.storage import HeartbeatSettings, fail_lost_trials
from hps.search.study import INTERRUPTED_REASON, budget_spent, fail_trial

WORKERS_ENV = "HPS_WORKERS_PER_MACHINE"  # how many workers share this machine's cores
WORKER_INDEX_ENV = "HPS_WORKER_INDEX"  # set in the children a sweeper starts: they start none themselves
WORKER = "worker"  # user attribute: host:pid of the worker that ran the trial
CUDA_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"
DEVICES = "cuda_visible_devices"  # user attribute: the CUDA_VISIBLE_DEVICES its worker ran the trial with, if set
AUTO = "auto"  # n_jobs: one worker per visible GPU times trials_per_device
STOP_TIMEOUT_S = 60


def quiet_optuna_notices() -> None:
    """Silence Optuna's notices about what the platform does on purpose.

    It builds on Optuna's experimental APIs (heartbeats, metric names, artifacts) and beats heartbeats itself
    in its ask/tell loop; the warnings about both are noise to a user.
    """
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


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


def check_worker_settings(n_jobs: object, trials_per_device: object) -> None:
    """``hydra.sweeper.n_jobs`` and ``trials_per_device`` checked: a :class:`ConfigError` names what is allowed."""
    if n_jobs != AUTO and not is_whole_number(n_jobs, 1):
        raise ConfigError(
            f"hydra.sweeper.n_jobs is {n_jobs!r}; it must be a positive integer or {AUTO} "
            "(one worker per visible GPU times hydra.sweeper.trials_per_device, 1 without a GPU)"
        )
    if not is_whole_number(trials_per_device, 1):
        raise ConfigError(
            f"hydra.sweeper.trials_per_device is {trials_per_device!r}; it must be a whole number >= 1 "
            "(workers sharing one GPU)"
        )


def parse_visible_devices(value: str | None) -> list[str] | None:
    """The GPUs a ``CUDA_VISIBLE_DEVICES`` value leaves visible, read as CUDA (and torch) read it; None when unset.

    Comma-separated indices (``0,2,3``) or UUIDs (``GPU-...``, ``MIG-...``). The list ends at the first entry
    that is not one (``-1`` is the usual way to hide every GPU), an index is read like ``strtoul`` (``1gpu`` is
    1), and a repeated entry hides them all; ``""``: none.
    """
    if value is None:
        return None
    entries = [entry.strip() for entry in value.split(",")]
    prefix = next((p for p in ("GPU-", "MIG-") if entries[0].startswith(p)), None)
    devices: list[str] = []
    for entry in entries:
        if prefix is not None:
            if not entry.startswith(prefix):
                break
            device = entry
        else:
            digits = re.match(r"\+?(\d+)", entry)
            if digits is None:
                break
            device = str(int(digits.group(1)))
        if device in devices:
            return []
        devices.append(device)
    return devices


def visible_devices() -> list[str]:
    """The GPUs this machine's workers may use: ``CUDA_VISIBLE_DEVICES``'s when set, else every GPU torch counts.

    A set value is a scheduler's (or the user's) choice, which the workers only ever narrow, never widen.
    """
    devices = parse_visible_devices(os.environ.get(CUDA_DEVICES_ENV))
    if devices is not None:
        return devices
    try:  # imported here: search/ imports without torch, and without touching CUDA
        import torch
    except ImportError:
        return []
    # Counted through NVML where it can (torch: "will NOT poison fork"): CUDA stays uninitialised here, so the
    # CUDA_VISIBLE_DEVICES this process sets next still takes effect.
    return [str(index) for index in range(torch.cuda.device_count())]


def device_assignment(devices: list[str], n_jobs: int | str, trials_per_device: int = 1) -> list[str | None]:
    """Each local worker's ``CUDA_VISIBLE_DEVICES`` (worker 0 is this process); its length is the worker count.

    ``n_jobs: auto`` is ``len(devices) * trials_per_device`` workers, or 1 without a GPU. Worker i gets
    ``devices[i % len(devices)]``: with ``auto`` each GPU holds ``trials_per_device`` workers; a number of
    workers spreads over the GPUs in turn (more than ``len(devices) * trials_per_device`` puts more on each).
    None leaves the variable as it is: no GPU, or a single worker (nothing to share).
    """
    check_worker_settings(n_jobs, trials_per_device)
    count = (len(devices) * trials_per_device or 1) if n_jobs == AUTO else n_jobs
    if not devices or count == 1:
        return [None] * count
    return [devices[index % len(devices)] for index in range(count)]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def in_worker_pool() -> bool:
    """Whether this process is one of several local workers."""
    return WORKER_INDEX_ENV in os.environ or workers_per_machine() > 1


def heartbeat_settings(config: DictConfig | None) -> HeartbeatSettings | None:
    """``hydra.sweeper.heartbeat`` checked; None when heartbeats are off (``interval: null``)."""
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


@contextlib.contextmanager
def budget_lock(url: str, study_name: str) -> Iterator[None]:
    """Hold the study's budget lock: one worker at a time counts the budget and asks for a trial."""
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


def ask_within_budget(
    study: optuna.Study,
    url: str,
    n_trials: int,
    distributions: dict[str, BaseDistribution],
    heartbeat: HeartbeatSettings | None,
) -> optuna.Trial | None:
    """A new trial (or a queued re-run) if the study's budget allows one; ``None`` when it is spent.

    Trials of dead workers are failed (and queued again) first, so that their budget goes to their re-runs.
    Counting and asking happen under the budget lock, so workers sharing the study never start more than
    ``n_trials``. The trial records which worker runs it and, with heartbeats on, its first heartbeat.
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
    except KeyboardInterrupt:  # between ask and the first beat: leave no RUNNING trial that nobody watches
        fail_trial(study, trial, INTERRUPTED_REASON, interrupted=True)
        raise
    except Exception as error:
        fail_trial(study, trial, failure_reason(error))
        raise
    return trial


class Heartbeat:
    """Records a running trial's heartbeat every ``settings.interval`` seconds from a thread; inert without."""

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


class LocalWorkers:
    """``n_jobs - 1`` copies of this very command, started as child processes for the duration of a sweep.

    Each child is a worker like this process: it opens the same studies and takes trials from the same budget.
    Children get their own session, so a Ctrl-C in the terminal reaches this process only, which stops them
    with SIGTERM (each stores its running trial as interrupted). Their output goes to
    ``<folder>/worker_<i>.log``.

    Built, it has resolved ``n_jobs: auto`` and each worker's device (:func:`device_assignment`) and has set
    this process's ``CUDA_VISIBLE_DEVICES``: build it before anything (a preflight) may initialise CUDA, which
    reads the variable once. In a child (``HPS_WORKER_INDEX`` set) it does nothing: its parent chose for it.
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
