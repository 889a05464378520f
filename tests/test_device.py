"""Device and precision: what ``auto`` picks on each kind of machine, every refusal, and bf16 training on the CPU.

GPUs are faked where a test needs one (``torch.cuda`` answers as a machine with them would); the ``gpu`` marker
runs the same code on a real one (benchmarks/gpu_check.sh)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from hps.objectives import device as devices
from hps.objectives.device import Placement, placement
from hps.objectives.finetune import fine_tune
from hps.search.errors import ConfigError
from hps.search.trial import TrialLink
from tests.conftest import run_cli


def machine(monkeypatch, gpus: int = 0, bf16_gpu: bool = True, mps: bool = False, bf16_cpu: bool = True) -> None:
    """Make this process see ``gpus`` CUDA GPUs, MPS or not, and a CPU with or without native bf16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16_gpu)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: bf16_cpu)


def resolved(device: str = "auto", precision: str = "auto") -> tuple[str, str]:
    place = placement(OmegaConf.create({"device": device, "precision": precision}))
    return str(place.device), place.precision


@pytest.mark.parametrize(
    ("gpus", "bf16_gpu", "mps", "bf16_cpu", "expected"),
    [
        (0, False, False, True, ("cpu", "bf16")),  # AMX or AVX-512 BF16
        (0, False, False, False, ("cpu", "fp32")),
        (0, False, True, True, ("mps", "fp32")),
        (2, True, False, True, ("cuda:0", "bf16")),  # a worker sees its own GPU as cuda:0
        (1, False, False, True, ("cuda:0", "fp32")),  # a GPU before Ampere
    ],
)
def test_auto_picks_the_best_device_and_a_precision_it_runs_natively(
    monkeypatch, gpus, bf16_gpu, mps, bf16_cpu, expected
):
    machine(monkeypatch, gpus=gpus, bf16_gpu=bf16_gpu, mps=mps, bf16_cpu=bf16_cpu)
    assert resolved() == expected


def test_explicit_choices_are_kept(monkeypatch):
    machine(monkeypatch, gpus=2)
    assert resolved("cuda:1", "fp16") == ("cuda:1", "fp16")
    assert resolved("cpu", "fp32") == ("cpu", "fp32")
    assert resolved("cpu", "bf16") == ("cpu", "bf16")
    machine(monkeypatch, bf16_cpu=False)
    assert resolved("cpu", "bf16") == ("cpu", "bf16")  # runs, emulated and slow: the user asked for it


@pytest.mark.parametrize(
    ("gpus", "bf16_gpu", "setting", "message"),
    [
        (
            0,
            True,
            ("cuda", "auto"),
            "training.device is 'cuda' but no CUDA GPU is visible to this process; available: cpu",
        ),
        (
            2,
            True,
            ("cuda:2", "auto"),
            "training.device is 'cuda:2' but it does not exist; available: cuda:0..cuda:1, cpu",
        ),
        (0, True, ("mps", "auto"), "training.device is 'mps' but this machine has no MPS device; available: cpu"),
        (0, True, ("gpu", "auto"), "training.device is 'gpu'; allowed: auto, cpu, cuda, cuda:N, mps"),
        (0, True, ("cpu", "fp16"), "training.precision is 'fp16', which needs a GPU; on the CPU: fp32 or bf16"),
        (
            1,
            False,
            ("cuda", "bf16"),
            "training.precision is 'bf16' but cuda:0 does not support it; available: fp32, fp16",
        ),
        (0, True, ("cpu", "half"), "training.precision is 'half'; allowed: auto, fp32, bf16, fp16"),
    ],
)
def test_what_the_machine_cannot_run_is_one_line_naming_what_it_can(monkeypatch, gpus, bf16_gpu, setting, message):
    machine(monkeypatch, gpus=gpus, bf16_gpu=bf16_gpu)
    with pytest.raises(ConfigError) as refused:
        resolved(*setting)
    assert str(refused.value) == message


def test_a_config_exported_before_the_settings_existed_trains_as_it_did():
    assert placement(OmegaConf.create({})) == Placement(torch.device("cpu"), "fp32")


def test_bf16_on_the_cpu_trains_and_scores_within_noise_of_fp32(run_config):
    results = {}
    for precision in ("fp32", "bf16"):
        run_config.training.precision = precision
        results[precision] = fine_tune(run_config, TrialLink())
    fp32, bf16 = results["fp32"].curve, results["bf16"].curve
    assert [e.step for e in bf16] == [e.step for e in fp32]
    assert bf16[-1].train_loss < bf16[0].train_loss  # it learns
    assert abs(bf16[-1].train_loss - fp32[-1].train_loss) < 0.05
    assert abs(bf16[-1].metric - fp32[-1].metric) <= 0.1  # 60 validation examples: one or two answers
    assert all(p.dtype == torch.float32 for p in results["bf16"].model.parameters())  # weights stay fp32


@pytest.mark.gpu
def test_a_run_trains_on_the_gpu_in_bf16_and_leaves_no_gpu_memory_behind(run_config):
    run_config.training.device, run_config.training.precision = "cuda", "auto"
    before = torch.cuda.memory_allocated()
    result = fine_tune(run_config, TrialLink())
    assert next(result.model.parameters()).device.type == "cuda"
    assert result.curve[-1].train_loss < result.curve[0].train_loss
    del result
    devices.release_memory()
    assert torch.cuda.memory_allocated() == before


@pytest.mark.parametrize(
    "error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError()]
)
def test_out_of_memory_is_one_line_naming_the_settings_that_size_a_run(run_config, monkeypatch, error):
    def train(*args, **kwargs):
        raise error

    monkeypatch.setattr("hps.objectives.finetune.train", train)
    with pytest.raises(devices.OutOfMemory) as failed:
        fine_tune(run_config, TrialLink())
    assert str(failed.value).startswith(
        "out of memory on cpu at training.batch_size=16, training.max_length=128 ("
    ) and str(failed.value).endswith("); lower either, or freeze more layers")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_training_on_cuda_without_a_gpu_is_one_line(studies):
    result = run_cli("experiment=smoke", "training.device=cuda", studies=studies)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: training.device is 'cuda' but no CUDA GPU is visible to this process; available: cpu"
    ]
