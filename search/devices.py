"""Which GPUs a machine's workers may use, and which one each worker gets.

``n_jobs: auto`` is one worker per visible GPU times ``trials_per_device`` (1 without a GPU). With several
workers, each gets one entry of the visible list as its own ``CUDA_VISIBLE_DEVICES`` (:func:`device_assignment`),
so a trial's ``device: auto`` is "its" GPU as ``cuda:0``. A value the scheduler or the user set is only ever
narrowed, never widened, and read as CUDA reads it (:func:`parse_visible_devices`).
"""

from __future__ import annotations

import os
import re

from hps.search.errors import ConfigError, is_whole_number

CUDA_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"
AUTO = "auto"  # n_jobs: one worker per visible GPU times trials_per_device


def check_worker_settings(n_jobs: object, trials_per_device: object) -> None:
    """``hydra.sweeper.n_jobs`` and ``trials_per_device`` checked: a :class:`ConfigError` names what is allowed.

    Args:
        n_jobs: ``hydra.sweeper.n_jobs``: a whole number >= 1, or ``auto``.
        trials_per_device: ``hydra.sweeper.trials_per_device``: a whole number >= 1.
    """
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

    Args:
        value: The variable's value, or None when it is unset (then torch counts the GPUs).
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

    Args:
        devices: The visible GPUs (:func:`visible_devices`).
        n_jobs: Workers on this machine, or ``auto``.
        trials_per_device: Workers per GPU under ``auto``.
    """
    check_worker_settings(n_jobs, trials_per_device)
    count = (len(devices) * trials_per_device or 1) if n_jobs == AUTO else n_jobs
    if not devices or count == 1:
        return [None] * count
    return [devices[index % len(devices)] for index in range(count)]
