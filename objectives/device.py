"""Where a run trains and in which precision: ``training.device`` and ``training.precision`` against the hardware.

``device: auto`` takes a CUDA GPU when one is visible (a worker of ``n_jobs`` sees only its own, as ``cuda:0``),
else Apple's MPS, else the CPU. ``precision: auto`` takes bf16 autocast where the hardware runs bf16 natively
(CUDA GPUs from Ampere on; CPUs with AMX or AVX-512 BF16), else fp32: elsewhere bf16 is emulated, many times
slower (benchmarks/RESULTS.md, "Precision"). fp16 autocast (with a gradient scaler) is for GPUs only. Weights
and the optimizer stay fp32 in every precision: autocast runs the matrix products in the lower one. A setting
the hardware cannot run is one line naming what it can.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import resource
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from omegaconf import DictConfig

from hps.search._compat import clear_cublas_workspaces
from hps.search.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = "auto, cpu, cuda, cuda:N, mps"
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Placement:
    """The resolved device and precision of a run."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16

    @property
    def device_name(self) -> str:
        """What the device is, as trials record it: ``cuda:0 (NVIDIA H200)``, ``cpu``, ``mps``."""
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return str(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the run's precision around forward passes (nothing for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_AUTOCAST_DTYPES[self.precision])

    def gradient_scaler(self) -> torch.amp.GradScaler | None:
        """fp16's loss scaler (its gradients underflow without one); None in the other precisions."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None


CPU_FP32 = Placement(torch.device("cpu"), "fp32")


def placement(training: DictConfig) -> Placement:
    """``training.device`` and ``training.precision`` resolved, or one :class:`ConfigError` line.

    Configs exported before these keys existed train as they did then: on the CPU in fp32.
    """
    device = _device(str(training.get("device", "cpu")))
    return Placement(device, _precision(str(training.get("precision", "fp32")), device))


def _available() -> str:
    found = [f"cuda:0..cuda:{torch.cuda.device_count() - 1}"] if torch.cuda.is_available() else []
    if torch.backends.mps.is_available():
        found.append("mps")
    return ", ".join([*found, "cpu"])


def _device(setting: str) -> torch.device:
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"training.device is 'mps' but this machine has no MPS device; available: {_available()}")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", setting)
    if match is None:
        raise ConfigError(f"training.device is {setting!r}; allowed: {DEVICES}")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"training.device is {setting!r} but no CUDA GPU is visible to this process; available: {_available()}"
        )
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"training.device is {setting!r} but it does not exist; available: {_available()}")
    return torch.device("cuda", index)


def _precision(setting: str, device: torch.device) -> str:
    if setting not in PRECISIONS:
        raise ConfigError(f"training.precision is {setting!r}; allowed: {', '.join(PRECISIONS)}")
    native_bf16 = _native_bf16(device)
    if setting == "auto":
        return "bf16" if native_bf16 else "fp32"
    if setting == "fp16" and device.type == "cpu":
        raise ConfigError("training.precision is 'fp16', which needs a GPU; on the CPU: fp32 or bf16")
    if setting == "bf16" and device.type != "cpu" and not native_bf16:
        raise ConfigError(f"training.precision is 'bf16' but {device} does not support it; available: fp32, fp16")
    if setting == "bf16" and not native_bf16:
        log.warning("training.precision bf16 on a CPU without AMX or AVX-512 BF16 is emulated: many times slower")
    return setting


def _native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matrix products in hardware."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_native_bf16()


@cache
def cpu_has_native_bf16() -> bool:
    """Whether the CPU has AMX or AVX-512 BF16 instructions (read from /proc/cpuinfo; False where there is none)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


class OutOfMemory(RuntimeError):
    """A run that did not fit in its device's memory; the message names the settings that size it."""

    def __init__(self, place: Placement, training: DictConfig) -> None:
        super().__init__(
            f"out of memory on {place.device_name} at training.batch_size={training.batch_size}, "
            f"training.max_length={training.max_length} ({place.precision}); lower either, or freeze more layers"
        )


def peak_rss_mb() -> float:
    """The most memory this process has held, in MB (its peak resident set)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # kB on Linux


def rss_mb() -> float | None:
    """The memory this process holds now, in MB (its resident set); None where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def release_memory() -> None:
    """Hand back what a finished run left: cyclic garbage, cuBLAS's workspaces, and the CUDA caching allocator's free
    blocks."""
    gc.collect()
    if torch.cuda.is_available():
        clear_cublas_workspaces()
        torch.cuda.empty_cache()


def peak_cuda_memory_mb(device: torch.device) -> float | None:
    """The most memory the run's tensors took on a CUDA device, in MB; None elsewhere."""
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None
