"""Each private name hps.search._compat reaches into still exists and means what we use it for.

An upgrade of Optuna, Hydra or datasets that moves one fails here, naming it, rather than somewhere in a sweep.
"""

from __future__ import annotations

import time

import optuna
import pytest
from datasets import Dataset
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from hps.search import _compat


@pytest.fixture
def study(tmp_path) -> optuna.Study:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/compat.db", heartbeat_interval=1, grace_period=2)
    return optuna.create_study(study_name="compat", storage=storage)


def test_study_and_trial_ids_are_the_storage_s(study):
    storage = _compat.study_storage(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert _compat.study_id(study) == storage.get_study_id_from_name("compat")
    (stored,) = storage.get_all_studies()
    assert _compat.study_id(stored) == _compat.study_id(study)
    trial = study.ask()
    assert storage.get_trial(_compat.trial_id(trial)).number == trial.number
    assert _compat.trial_id(study.trials[0]) == _compat.trial_id(trial)


def test_heartbeats_and_stale_trials(study):
    storage = _compat.study_storage(study)
    assert _compat.is_heartbeat_enabled(storage)
    assert not _compat.is_heartbeat_enabled(optuna.storages.InMemoryStorage())
    assert _compat.grace_period(storage) == 2
    trial = study.ask()
    storage.record_heartbeat(_compat.trial_id(trial))
    assert _compat.stale_trial_ids(study) == []
    time.sleep(3.5)  # SQLite keeps whole seconds; stale means more than the grace period behind
    assert _compat.stale_trial_ids(study) == [_compat.trial_id(trial)]


def test_a_failed_job_s_exception_without_re_raising_it():
    error = ValueError("the task failed")
    result = JobReturn(status=JobStatus.FAILED, _return_value=error)
    assert _compat.job_error(result) is error


def test_a_dataset_s_fingerprint_follows_its_content():
    first = Dataset.from_dict({"text": ["a", "b"]})
    assert _compat.dataset_fingerprint(first) == _compat.dataset_fingerprint(Dataset.from_dict({"text": ["a", "b"]}))
    assert _compat.dataset_fingerprint(first) != _compat.dataset_fingerprint(first.map(lambda row: {"n": 1}))


def test_samplers_read_the_trials_through_the_view():
    study = optuna.create_study()
    for value in (1.0, 2.0):
        study.add_trial(
            optuna.trial.create_trial(
                value=value, params={"x": value}, distributions={"x": optuna.distributions.FloatDistribution(0, 3)}
            )
        )
    seen: list[int] = []

    def count(trials):
        seen.append(len(trials))
        return [t for t in trials if t.value == 1.0]

    view = _compat.StudyWithTrials(study, count)
    assert [t.value for t in view._get_trials(states=(TrialState.COMPLETE,))] == [1.0]
    assert view.direction == study.direction  # the rest is the study's own
    # GPSampler reads the trials through the view, so a transform there changes what it fits.
    sampler = optuna.samplers.GPSampler(seed=0, n_startup_trials=1)
    frozen = study.ask()
    space = {"x": optuna.distributions.FloatDistribution(0, 3)}
    sampler.sample_relative(view, study.trials[frozen.number], space)
    assert seen[-1] == 3  # the two complete trials and the running one


@pytest.mark.gpu
def test_cublas_workspaces_are_handed_back():
    import torch

    _compat.clear_cublas_workspaces()  # any an earlier test left
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    a = torch.ones(256, 256, device="cuda")
    (a @ a).sum().item()  # creates the stream's cuBLAS workspace
    del a
    assert torch.cuda.memory_allocated() > before  # the workspace, held after the tensors are gone
    _compat.clear_cublas_workspaces()
    assert torch.cuda.memory_allocated() == before
