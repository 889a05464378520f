"""Several workers on one study: the budget across workers, SQLite under load, lost workers retried.

Workers run the real command line (``hps-synthetic -m``, the synthetic objective: same sweeper, pruner and
storage as fine-tuning, milliseconds per trial) as separate processes, on PostgreSQL (the server on this
machine and in CI; skipped with the reason when none answers) and on SQLite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hps.search import workers
from hps.search.errors import ConfigError
from hps.search.reruns import requeue_interrupted
from hps.search.storage import LOST_WORKER, RETRY_OF, HeartbeatSettings, open_storage
from hps.search.study import FAIL_REASON, INTERRUPTED, counted_trials, state_counts
from hps.search.workers import WORKER
from tests.conftest import REPO
from tests.test_storage_and_study import damaged_study, digest

POSTGRES = os.environ.get("HPS_TEST_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432/test")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _postgres_reason() -> str | None:
    try:
        with sqlalchemy.create_engine(POSTGRES, connect_args={"connect_timeout": 3}).connect():
            return None
    except Exception as error:  # any failure to connect is a reason to skip, named in the skip
        return f"no PostgreSQL at {POSTGRES} (set HPS_TEST_POSTGRES): {str(error).splitlines()[0]}"


@pytest.fixture(scope="module")
def postgres() -> str:
    reason = _postgres_reason()
    if reason:
        pytest.skip(reason)
    return POSTGRES


def worker(studies: Path, storage: str, study: str, *overrides: str) -> subprocess.Popen:
    """One worker: ``hps-synthetic -m`` on ``study`` in ``storage``, as a user would start it."""
    command = [
        str(Path(sys.executable).parent / "hps-synthetic"),
        "-m",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={study}",
        "hydra/sweeper/sampler=random",
        *overrides,
    ]
    env = os.environ | {"HPS_STUDIES_DIR": str(studies), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: int = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def check_exact_budget(study: optuna.Study, n_trials: int) -> None:
    """Exactly ``n_trials`` trials, all finished, numbered 0..n-1, each sampled once."""
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(n_trials))
    assert all(t.state in FINISHED for t in trials), Counter(t.state.name for t in trials)
    assert len({(t.params["x"], t.params["y"]) for t in trials}) == n_trials  # no point run twice
    assert counted_trials(study) == n_trials


@pytest.fixture
def study_name() -> str:
    return f"workers-{uuid.uuid4().hex[:8]}"


def test_four_workers_on_postgres_share_the_budget_exactly(postgres, study_name, tmp_path):
    workers = [worker(tmp_path, postgres, study_name, "hydra.sweeper.n_trials=30") for _ in range(4)]
    outputs = [finish(w) for w in workers]
    study = optuna.load_study(study_name=study_name, storage=postgres)
    try:
        check_exact_budget(study, 30)
        by_worker = Counter(t.user_attrs[WORKER] for t in study.trials)
        assert len(by_worker) == 4, by_worker  # every worker took a share
        assert not any("database is locked" in output or "Traceback" in output for output in outputs)
    finally:
        optuna.delete_study(study_name=study_name, storage=postgres)


def test_n_jobs_runs_local_workers_on_sqlite_without_lock_errors(study_name, tmp_path):
    storage = f"sqlite:///{tmp_path}/hps.db"
    output = finish(worker(tmp_path, storage, study_name, "hydra.sweeper.n_trials=40", "hydra.sweeper.n_jobs=4"))
    assert "4 workers on this machine" in output
    study = optuna.load_study(study_name=study_name, storage=storage)
    check_exact_budget(study, 40)
    assert len({t.user_attrs[WORKER] for t in study.trials}) == 4
    logs = sorted((tmp_path / "workers").glob("worker_*.log"))
    assert len(logs) == 3
    for log in logs:
        text = log.read_text()
        assert "database is locked" not in text and "Traceback" not in text, text


def _wait_for_running_trial(storage: str, study_name: str, pid: int, timeout: float = 120) -> int:
    """The number of the trial worker ``pid`` is running, once it has reported at least one step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:  # not created yet
            time.sleep(0.2)
            continue
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.user_attrs.get(WORKER, "").endswith(f":{pid}") and trial.intermediate_values:
                return trial.number
        time.sleep(0.2)
    raise AssertionError(f"worker {pid} ran no trial within {timeout} s")


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_killed_worker_s_trial_fails_and_runs_again_and_the_study_completes(backend, study_name, tmp_path, request):
    storage = request.getfixturevalue("postgres") if backend == "postgresql" else f"sqlite:///{tmp_path}/hps.db"
    settings = [
        "hydra.sweeper.n_trials=8",
        "step_seconds=0.25",  # 2 s per trial: time to be killed in the middle
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.heartbeat.interval=1",
        "hydra.sweeper.heartbeat.grace_period=3",
    ]
    doomed = worker(tmp_path, storage, study_name, *settings)
    number = _wait_for_running_trial(storage, study_name, doomed.pid)
    survivor = worker(tmp_path, storage, study_name, *settings)
    doomed.send_signal(signal.SIGKILL)  # no handler runs: the trial stays RUNNING until its heartbeat is stale
    doomed.wait()
    finish(survivor)
    study = optuna.load_study(study_name=study_name, storage=storage)
    try:
        trials = study.get_trials()
        lost = trials[number]
        assert lost.state == TrialState.FAIL
        assert (
            lost.user_attrs[FAIL_REASON] == "lost: its worker stopped beating for 3 s (killed, or its machine was lost)"
        )
        (rerun,) = [t for t in trials if t.user_attrs.get(RETRY_OF) == number]
        assert rerun.params == lost.params and rerun.state == TrialState.COMPLETE
        assert rerun.system_attrs[LOST_WORKER] and rerun.system_attrs["failed_trial"] == number
        assert rerun.user_attrs[WORKER] != lost.user_attrs[WORKER]
        assert counted_trials(study) == 8  # the lost trial does not spend the budget; its re-run does
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        assert [t.state for t in trials].count(TrialState.FAIL) == 1
        assert state_counts(study) == {"complete": 8, "pruned": 0, "failed": 0, "interrupted": 1}
    finally:
        if backend == "postgresql":
            optuna.delete_study(study_name=study_name, storage=storage)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("hydra.sweeper.n_jobs=0", "error: hydra.sweeper.n_jobs is 0; it must be a positive integer"),
        ("hydra.sweeper.heartbeat.grace_period=10", "error: hydra.sweeper.heartbeat.grace_period (10) must be longer"),
        (
            "hydra.sweeper.heartbeat.max_retry=-1",
            "error: hydra.sweeper.heartbeat.max_retry is -1; it must be a whole number >= 0",
        ),
    ],
)
def test_bad_worker_settings_are_one_line(override, message, tmp_path):
    storage = f"sqlite:///{tmp_path}/hps.db"
    extra = ["hydra.sweeper.heartbeat.interval=30"] if "grace" in override else []
    process = worker(tmp_path, storage, "bad", override, *extra)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2
    assert output.strip() == output.strip().splitlines()[0] and output.startswith(message), output


def test_a_sweep_on_a_damaged_database_stops_in_one_line_and_leaves_it_as_it_is(tmp_path):
    database = tmp_path / "hps.db"
    url = damaged_study(database)
    before = digest(database)
    process = worker(tmp_path, url, "damaged", "hydra.sweeper.n_trials=200")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2, output
    assert output.startswith(f"error: storage '{url}': the database file is damaged (SQLite's integrity check: Page ")
    assert output.count("\n") == 1 and "restore it from a backup, or use another database file" in output
    assert digest(database) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"database": "no_such_db"}, "database 'no_such_db' does not exist on {server}; create it"),
        ({"username": "no_such_role"}, "authentication failed for user 'no_such_role' at {server} (role "),
    ],
)
def test_a_postgres_refusal_says_what_failed_without_the_url_hint(postgres, change, message):
    parsed = sqlalchemy.make_url(postgres)
    url = parsed.set(**change).render_as_string(hide_password=False)
    with pytest.raises(ConfigError) as error:
        open_storage(url)
    server = f"{parsed.host}:{parsed.port or 5432}"
    assert str(error.value).startswith(f"cannot open storage '{url}': {message.format(server=server)}")
    assert "expected" not in str(error.value) and "\n" not in str(error.value)


def test_storage_from_the_environment_with_its_password_masked(postgres, study_name, tmp_path):
    url = postgres.replace("://root@", "://root:s3cret@")  # trust auth: any password is accepted
    env = os.environ | {"HPS_STUDIES_DIR": str(tmp_path), "HPS_STORAGE": url}
    command = [str(Path(sys.executable).parent / "hps-synthetic"), "-m", f"hydra.sweeper.study_name={study_name}"]
    result = subprocess.run([*command, "hydra.sweeper.n_trials=2"], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr and "root:***@" in result.stderr
    assert "password is written" not in result.stderr  # given through the environment: nothing to warn about
    hydra_yaml = (tmp_path / study_name / "trial_0" / ".hydra" / "hydra.yaml").read_text()
    assert "s3cret" not in hydra_yaml and "oc.env:HPS_STORAGE" in hydra_yaml
    study = optuna.load_study(study_name=study_name, storage=postgres)
    try:
        assert len(study.trials) == 2 and "s3cret" not in str(study.user_attrs)
        literal = subprocess.run(
            [*command, "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={url}"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        assert literal.returncode == 0 and "warning: the storage URL's password is written" in literal.stderr
    finally:
        optuna.delete_study(study_name=study_name, storage=postgres)


def test_ctrl_c_right_after_ask_leaves_no_running_trial(tmp_path, monkeypatch):
    url, heartbeat = f"sqlite:///{tmp_path / 's.db'}", HeartbeatSettings(interval=30, grace_period=120, max_retry=1)
    study = optuna.create_study(storage=open_storage(url, heartbeat=heartbeat))
    monkeypatch.setattr(workers, "worker_name", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        workers.ask_within_budget(study, url, 5, {}, heartbeat)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.FAIL and trial.user_attrs[INTERRUPTED]
    assert requeue_interrupted(study, room=5) == [trial.number]  # a resumed study runs it again
