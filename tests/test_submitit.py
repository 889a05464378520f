"""Trials launched as submitit jobs (``hydra/launcher=submitit_local``, the README's SLURM path run locally).

The sweeper asks for each trial and keeps its heartbeat; the trial itself runs in a job process that submitit
starts (a controller process, whose pid is the job id, and under it the task process that runs the pickled Hydra
job) and reports its steps to its trial from there. The sweeps run the real command line (``hps-synthetic -m``)
on SQLite in ``tmp_path``; each job costs a few seconds of process start, so the budgets are small.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hps.search._compat import stale_trial_ids, trial_id
from hps.search.storage import FAIL_REASON, RETRY_OF, HeartbeatSettings, open_storage
from hps.search.study import counted_trials, state_counts
from tests.conftest import composed
from tests.test_workers import _wait_for_running_trial, check_exact_budget, finish, worker

NOT_INSTALLED = "hydra-submitit-launcher is not installed: pip install -e '.[test]' (or '.[slurm]')"
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason=NOT_INSTALLED)
submitit = pytest.importorskip("submitit", reason=NOT_INSTALLED)  # installed with it

STUDY = "submitit"
SUBMITIT = "hydra/launcher=submitit_local"
TASK_MODULE = b"submitit.core._submit"  # the job's task process: python -u -m submitit.core._submit FOLDER


def job_ids(studies: Path) -> set[str]:
    """The ids of the jobs submitit started (its folder ``<sweep dir>/.submitit/<job id>`` per job)."""
    return {folder.name for folder in (studies / ".submitit").iterdir() if folder.name.isdigit()}


def job_id_of(studies: Path, trial: optuna.trial.FrozenTrial) -> str:
    """The submitit job id the trial's Hydra job ran under (``hydra.job.id``, set by the launcher in the job)."""
    run = studies / STUDY / f"trial_{trial.number}" / ".hydra" / "hydra.yaml"
    return str(OmegaConf.load(run).hydra.job.id)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4, after "pid (comm) state"
                found.append(int(entry.name))
    return found


def submitit_sweep(folder: Path, storage: str, n_trials: int, *overrides: str) -> subprocess.Popen:
    """A sweep of the synthetic objective whose trials run as submitit jobs, none of them pruned."""
    return worker(
        folder, storage, STUDY, SUBMITIT, f"hydra.sweeper.n_trials={n_trials}", "hydra/sweeper/pruner=none", *overrides
    )


def task_process(sweeper: int, timeout: float = 30) -> int:
    """The pid of the submitit task process running a trial for the sweeper ``sweeper`` (one of its descendants)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = [sweeper]
        while pending:
            pid = pending.pop()
            try:
                command = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if TASK_MODULE in command:
                return pid
            pending.extend(_children(pid))
        time.sleep(0.1)
    raise AssertionError(f"no submitit task process under pid {sweeper} within {timeout} s")


def test_submitit_jobs_report_to_their_trials_and_spend_the_budget_exactly(tmp_path):
    storage = f"sqlite:///{tmp_path}/hps.db"
    sweep = submitit_sweep(tmp_path, storage, 3)
    output = finish(sweep, timeout=120)
    assert "Traceback" not in output, output
    study = optuna.load_study(study_name=STUDY, storage=storage)
    check_exact_budget(study, 3)
    jobs = job_ids(tmp_path)
    assert len(jobs) == 3 and str(sweep.pid) not in jobs  # one job per trial, none in the sweeper's process
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        assert sorted(trial.intermediate_values) == list(range(1, 9))  # every step reported from the job
        assert trial.value == trial.intermediate_values[8]  # and the job's return value came back to the sweeper
        job = job_id_of(tmp_path, trial)
        assert job in jobs and (tmp_path / ".submitit" / job / f"{job}_0_result.pkl").is_file()
    assert len({job_id_of(tmp_path, trial) for trial in study.trials}) == 3


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # Optuna's heartbeats, on purpose
def test_the_sweeper_beats_for_its_trial_while_the_submitit_job_runs(tmp_path):
    storage = f"sqlite:///{tmp_path}/hps.db"
    heartbeat = HeartbeatSettings(interval=1, grace_period=2, max_retry=1)
    sweep = submitit_sweep(
        tmp_path,
        storage,
        2,
        "step_seconds=0.5",  # 4 s of steps, plus the job's start: each trial lasts well past the grace period
        f"hydra.sweeper.heartbeat.interval={heartbeat.interval}",
        f"hydra.sweeper.heartbeat.grace_period={heartbeat.grace_period}",
    )
    beats: dict[int, set[str]] = {}  # trial id: the heartbeat times seen while it ran
    stale_seen = []
    while sweep.poll() is None:
        try:  # Optuna's table of heartbeats, as another worker would check it
            with sqlite3.connect(f"file:{tmp_path}/hps.db?mode=ro", uri=True, timeout=10) as connection:
                rows = connection.execute("SELECT trial_id, heartbeat FROM trial_heartbeats").fetchall()
            study = optuna.load_study(study_name=STUDY, storage=open_storage(storage, heartbeat=heartbeat))
            stale_seen += stale_trial_ids(study)
        except (sqlite3.OperationalError, KeyError):  # the database, its tables or the study not created yet
            rows = []
        for beating_trial, beat in rows:
            beats.setdefault(beating_trial, set()).add(beat)
        time.sleep(0.25)
    finish(sweep, timeout=10)
    assert not stale_seen  # no other worker would have taken a trial for lost
    study = optuna.load_study(study_name=STUDY, storage=storage)
    check_exact_budget(study, 2)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2  # none failed as lost
    for trial in study.trials:
        seconds = trial.duration.total_seconds()
        assert seconds > 2 * heartbeat.grace_period  # stale twice over, had the sweeper not beaten for it
        assert len(beats[trial_id(trial)]) >= seconds / heartbeat.interval / 2, (seconds, beats)


def test_a_killed_submitit_job_s_trial_fails_as_lost_and_runs_again(tmp_path):
    storage = f"sqlite:///{tmp_path}/hps.db"
    sweep = submitit_sweep(tmp_path, storage, 2, "step_seconds=0.3")  # 2.4 s of steps: time to be killed midway
    number = _wait_for_running_trial(storage, STUDY, sweep.pid, timeout=60)
    task = task_process(sweep.pid)
    os.kill(task, signal.SIGKILL)  # the job's process, not the sweeper: no handler runs, no result is written
    output = finish(sweep, timeout=120)  # submitit waits 15 s for the missing result before it says so
    study = optuna.load_study(study_name=STUDY, storage=storage)
    trials = study.get_trials()
    lost = trials[number]
    assert lost.state == TrialState.FAIL, Counter(t.state.name for t in trials)
    assert 0 < len(lost.intermediate_values) < 8  # killed in the middle of its steps
    assert lost.user_attrs[FAIL_REASON].startswith("lost: its job ended without a result"), lost.user_attrs
    assert "has not produced any output" in lost.user_attrs[FAIL_REASON]
    (rerun,) = [t for t in trials if t.user_attrs.get(RETRY_OF) == number]
    assert rerun.params == lost.params and rerun.state == TrialState.COMPLETE
    assert rerun.system_attrs["failed_trial"] == number
    assert job_id_of(tmp_path, rerun) != job_id_of(tmp_path, lost)  # a new job
    assert counted_trials(study) == 2  # the lost trial does not spend the budget; its re-run does
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert state_counts(study) == {"complete": 2, "pruned": 0, "failed": 0, "interrupted": 1}
    assert f"trial {number}" in output and "lost: its job ended without a result" in output


def test_the_slurm_launcher_config_submits_each_trial_with_its_resources(tmp_path, monkeypatch):
    """``hydra/launcher=slurm`` (conf/hydra/launcher/slurm.yaml, the README's example): the sbatch script of a trial.

    Run through the launcher's own ``launch``; only the submission itself is caught (no SLURM here).
    """
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")  # submitit's test for a SLURM cluster
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    config = composed("hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}/studies")
    launcher = instantiate(config.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=config)
    submitted = []

    def map_array(executor, function, *arguments):
        submitted.append((executor, arguments))
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    launcher.launch([["training.learning_rate=0.001", "++trial={study:s,number:3}"]], initial_job_idx=3)
    ((executor, (overrides, _, numbers, *_)),) = submitted
    assert overrides == (["training.learning_rate=0.001", "++trial={study:s,number:3}"],) and numbers == (3,)
    lines = executor._executor._make_submission_file_text("python -u -m submitit.core._submit FOLDER", "u").splitlines()
    expected = ["--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB", "--time=120"]
    assert {f"#SBATCH {flag}" for flag in expected} <= set(lines), lines
    srun = next(i for i, line in enumerate(lines) if line.startswith("srun "))
    assert lines.index("export HPS_WORKERS_PER_MACHINE=1") < srun, lines  # not the login node's n_jobs
    assert f"{tmp_path}/studies/.submitit/" in lines[srun]
