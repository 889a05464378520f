"""Workers and devices: ``n_jobs: auto``, ``trials_per_device`` and each local worker's ``CUDA_VISIBLE_DEVICES``.

CPU-only: the GPUs are a list of names (the assignment is pure) or a faked ``CUDA_VISIBLE_DEVICES`` that the
synthetic objective never hands to CUDA.
"""

from __future__ import annotations

import os
from collections import defaultdict

import optuna
import pytest
import torch

from hps.search import workers
from hps.search.devices import CUDA_DEVICES_ENV, device_assignment, parse_visible_devices, visible_devices
from hps.search.errors import ConfigError
from hps.search.workers import DEVICES, WORKER, WORKER_INDEX_ENV, LocalWorkers
from tests.test_workers import check_exact_budget, finish, worker

FOUR = ["0", "1", "2", "3"]


@pytest.mark.parametrize(
    ("value", "devices"),
    [
        (None, None),  # unset: torch counts
        ("", []),
        ("0,2,3", ["0", "2", "3"]),
        (" 1, 3 ", ["1", "3"]),
        ("3", ["3"]),
        ("-1", []),  # the usual way to hide every GPU
        ("0,-1,2", ["0"]),  # CUDA stops at the first entry it cannot read
        ("1,1", []),  # a repeated entry hides them all
        ("1gpu,2", ["1", "2"]),  # indices are read like strtoul
        ("GPU-8a1e2f3c-0000-1111-2222-333344445555,GPU-77aa", ["GPU-8a1e2f3c-0000-1111-2222-333344445555", "GPU-77aa"]),
        ("GPU-aa,0", ["GPU-aa"]),
        ("MIG-5c3e,MIG-7d1f", ["MIG-5c3e", "MIG-7d1f"]),
    ],
)
def test_cuda_visible_devices_is_read_as_cuda_reads_it(value, devices):
    assert parse_visible_devices(value) == devices


def test_visible_devices_honour_the_variable_else_count_with_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setenv(CUDA_DEVICES_ENV, "5,7")
    assert visible_devices() == ["5", "7"]  # a scheduler's choice: torch is not asked
    monkeypatch.setenv(CUDA_DEVICES_ENV, "")
    assert visible_devices() == []
    monkeypatch.delenv(CUDA_DEVICES_ENV)
    assert visible_devices() == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("devices", "n_jobs", "per_device", "assignment"),
    [
        ([], "auto", 1, [None]),  # CPU only: one worker, CUDA_VISIBLE_DEVICES untouched
        ([], "auto", 2, [None]),
        ([], 3, 1, [None, None, None]),
        (["0"], "auto", 1, [None]),  # one worker: nothing to share, nothing changed
        (["0"], "auto", 2, ["0", "0"]),
        (["5"], 3, 1, ["5", "5", "5"]),  # an integer n_jobs keeps its meaning: they share the GPU
        (FOUR, "auto", 1, FOUR),
        (FOUR, "auto", 2, ["0", "1", "2", "3", "0", "1", "2", "3"]),
        (FOUR, 2, 1, ["0", "1"]),  # fewer workers than GPUs: one each, in order
        (FOUR, 6, 2, ["0", "1", "2", "3", "0", "1"]),
        (FOUR, 1, 1, [None]),
        (["GPU-aa", "GPU-bb"], "auto", 1, ["GPU-aa", "GPU-bb"]),
    ],
)
def test_each_worker_gets_one_visible_device(devices, n_jobs, per_device, assignment):
    assert device_assignment(devices, n_jobs, per_device) == assignment


@pytest.mark.parametrize("gpus", [1, 4])
@pytest.mark.parametrize("per_device", [1, 2, 3])
def test_auto_packs_trials_per_device_workers_on_every_gpu(gpus, per_device):
    devices = [f"GPU-{index}" for index in range(gpus)]
    assignment = device_assignment(devices, "auto", per_device)
    assert len(assignment) == gpus * per_device
    if len(assignment) > 1:
        assert all(assignment.count(device) == per_device for device in devices)
        assert assignment[0] == devices[0]  # this process: cuda:0 of its unnarrowed view too


@pytest.mark.parametrize(
    ("n_jobs", "per_device", "message"),
    [
        (0, 1, "hydra.sweeper.n_jobs is 0; it must be a positive integer or auto"),
        (-2, 1, "hydra.sweeper.n_jobs is -2; it must be a positive integer or auto"),
        ("all", 1, "hydra.sweeper.n_jobs is 'all'; it must be a positive integer or auto"),
        ("AUTO", 1, "hydra.sweeper.n_jobs is 'AUTO'; it must be a positive integer or auto"),
        (True, 1, "hydra.sweeper.n_jobs is True; it must be a positive integer or auto"),
        (1.5, 1, "hydra.sweeper.n_jobs is 1.5; it must be a positive integer or auto"),
        ("auto", 0, "hydra.sweeper.trials_per_device is 0; it must be a whole number >= 1"),
        (2, "2", "hydra.sweeper.trials_per_device is '2'; it must be a whole number >= 1"),
        ("auto", None, "hydra.sweeper.trials_per_device is None; it must be a whole number >= 1"),
    ],
)
def test_bad_values_are_refused_naming_what_is_allowed(n_jobs, per_device, message):
    with pytest.raises(ConfigError) as error:
        device_assignment(["0"], n_jobs, per_device)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_local_workers_set_this_process_s_device_and_leave_a_cpu_machine_alone(monkeypatch, tmp_path):
    monkeypatch.delenv(WORKER_INDEX_ENV, raising=False)
    monkeypatch.setenv(CUDA_DEVICES_ENV, "5,7")
    pool = LocalWorkers("auto", tmp_path, trials_per_device=2)
    assert pool.n_jobs == 4 and pool.assignment == ["5", "7", "5", "7"]
    assert os.environ[CUDA_DEVICES_ENV] == "5"  # set at once: before a preflight may initialise CUDA

    monkeypatch.delenv(CUDA_DEVICES_ENV)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    pool = LocalWorkers(3, tmp_path)
    assert pool.n_jobs == 3 and pool.assignment == [None, None, None]
    assert CUDA_DEVICES_ENV not in os.environ

    monkeypatch.setattr(workers, "visible_devices", lambda: pytest.fail("one worker counts no GPUs"))
    assert LocalWorkers(1, tmp_path).assignment == [None]
    monkeypatch.setenv(WORKER_INDEX_ENV, "1")  # a child: its parent chose its device
    assert LocalWorkers("auto", tmp_path).n_jobs == 1


def test_two_local_workers_run_on_their_own_gpus_and_share_the_budget_exactly(monkeypatch, tmp_path):
    monkeypatch.setenv(CUDA_DEVICES_ENV, "5,7")  # faked: the synthetic objective never touches CUDA
    storage = f"sqlite:///{tmp_path}/hps.db"
    settings = ["hydra.sweeper.n_trials=10", "hydra.sweeper.n_jobs=2", "hydra/sweeper/pruner=none", "step_seconds=0.1"]
    output = finish(worker(tmp_path, storage, "gpus", *settings))
    assert "2 workers on this machine" in output
    line = " ".join(output.split())  # as rich wrapped it to the terminal's width
    assert "1 per GPU (CUDA_VISIBLE_DEVICES): this one 5, worker_1 7" in line, output
    study = optuna.load_study(study_name="gpus", storage=storage)
    check_exact_budget(study, 10)
    devices = defaultdict(set)
    for trial in study.trials:
        devices[trial.user_attrs[WORKER]].add(trial.user_attrs[DEVICES])
    assert sorted(devices.values()) == [{"5"}, {"7"}], devices  # each worker on its own, both took trials


def test_auto_without_a_gpu_runs_one_worker(monkeypatch, tmp_path):
    monkeypatch.setenv(CUDA_DEVICES_ENV, "")
    storage = f"sqlite:///{tmp_path}/hps.db"
    output = finish(worker(tmp_path, storage, "cpu", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=auto"))
    assert "1 worker on this machine (n_jobs auto: no GPU visible)" in " ".join(output.split()), output
    assert not (tmp_path / "workers").exists()
    study = optuna.load_study(study_name="cpu", storage=storage)
    check_exact_budget(study, 3)
    assert len({t.user_attrs[WORKER] for t in study.trials}) == 1
    assert {t.user_attrs[DEVICES] for t in study.trials} == {""}  # the variable is left as it was


def test_a_bad_trials_per_device_is_one_line(tmp_path):
    process = worker(tmp_path, f"sqlite:///{tmp_path}/hps.db", "bad", "hydra.sweeper.trials_per_device=0")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2
    assert output.count("\n") == 1, output
    assert output.startswith("error: hydra.sweeper.trials_per_device is 0; it must be a whole number >= 1"), output
