"""Storages from URLs, and what a study stores and checks when it is resumed."""

from __future__ import annotations

import sqlite3
import threading
import time

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState
from sqlalchemy import text

from search.errors import ConfigError, failure_reason
from search.storage import LOST_WORKER, HeartbeatSettings, display_url, open_storage
from search.study import (
    INTERRUPTED_REASON,
    RETRY_OF,
    StudySpec,
    budget_spent,
    counted_trials,
    fail_trial,
    open_study,
    requeue_interrupted,
)
from search.workers import ask_within_budget, budget_lock

SPEC = StudySpec(name="s", direction="maximize", metric="accuracy", identity={"data": "sst2"})


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path}/nested/folder/hps.db"


def make_study(url: str, spec: StudySpec = SPEC) -> optuna.Study:
    return open_study(open_storage(url), url, spec, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner())


def test_sqlite_file_and_its_folder_are_created(sqlite_url, tmp_path):
    study = make_study(sqlite_url)
    assert (tmp_path / "nested" / "folder" / "hps.db").is_file()
    assert study.metric_names == ["accuracy"]
    assert study.user_attrs["objective_identity"] == {"data": "sst2"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "is not a database URL"),
        ("nosuchdb://user@host/db", "cannot open storage 'nosuchdb://user@host/db'"),
        ("sqlite://", "names no file"),
        (
            "postgresql+psycopg://user:secret@127.0.0.1:1/db",
            "cannot open storage 'postgresql+psycopg://user:***@",
        ),
    ],
)
def test_bad_storage_urls_are_one_line(url, message):
    with pytest.raises(ConfigError) as error:
        open_storage(url)
    assert message in str(error.value)
    assert "secret" not in str(error.value)
    assert "\n" not in str(error.value)


def test_display_url_masks_the_password():
    assert display_url("postgresql://me:hunter2@db/x") == "postgresql://me:***@db/x"


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        (StudySpec("s", "minimize", "accuracy", {"data": "sst2"}), "has direction maximize, not minimize"),
        (StudySpec("s", "maximize", "mcc", {"data": "sst2"}), "optimises metric 'accuracy', not 'mcc'"),
        (StudySpec("s", "maximize", "accuracy", {"data": "trec"}), "was created for data='sst2', not 'trec'"),
    ],
)
def test_resuming_with_another_objective_is_refused(sqlite_url, changed, message):
    make_study(sqlite_url)
    with pytest.raises(ConfigError, match=message):
        make_study(sqlite_url, changed)


def test_unknown_direction_is_refused():
    with pytest.raises(ConfigError, match="allowed: maximize, minimize"):
        StudySpec("s", "up", "accuracy")


def test_interrupted_trials_do_not_spend_the_budget_and_are_requeued_once(sqlite_url):
    study = make_study(sqlite_url)
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        trial = study.ask(distributions)
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    interrupted = study.ask(distributions)
    fail_trial(study, interrupted, INTERRUPTED_REASON, interrupted=True)
    assert counted_trials(study) == 3

    assert requeue_interrupted(study, room=0) == []  # other workers spent the budget meanwhile
    assert requeue_interrupted(study, room=1) == [interrupted.number]
    assert requeue_interrupted(study, room=1) == []  # already queued
    retry = study.ask(distributions)
    assert retry.params == interrupted.params
    assert retry.user_attrs[RETRY_OF] == interrupted.number


def test_a_lost_trial_is_failed_and_queued_again_once_and_the_budget_follows(sqlite_url):
    heartbeat = HeartbeatSettings(interval=1, grace_period=2, max_retry=1)
    storage = open_storage(sqlite_url, heartbeat=heartbeat)
    study = open_study(storage, sqlite_url, SPEC, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner())
    space = {"x": FloatDistribution(0, 1)}
    finished = study.ask(space)
    study.tell(finished, 0.5)
    lost = ask_within_budget(study, sqlite_url, 3, space, heartbeat)
    assert budget_spent(study) == 2 and counted_trials(study) == 1  # running trials spend the budget
    time.sleep(3)  # no heartbeat: its worker is gone
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    assert trials[lost.number].state == TrialState.FAIL
    assert trials[-1].state == TrialState.WAITING and trials[-1].params == lost.params
    assert trials[-1].user_attrs == {RETRY_OF: lost.number} and trials[-1].system_attrs[LOST_WORKER]
    assert budget_spent(study) == 1  # the lost trial no longer counts; its re-run will

    rerun = ask_within_budget(study, sqlite_url, 3, space, heartbeat)
    assert rerun.number == trials[-1].number and rerun.params == lost.params
    time.sleep(3)  # lost again: max_retry is 1, so no third run, and this failure counts
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert counted_trials(study) == 2


def test_the_budget_lock_serialises_workers_on_sqlite(sqlite_url):
    make_study(sqlite_url)
    order: list[str] = []

    def hold(name: str) -> None:
        with budget_lock(sqlite_url, "s"):
            order.append(f"{name} in")
            time.sleep(0.3)
            order.append(f"{name} out")

    threads = [threading.Thread(target=hold, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])


def test_failing_a_trial_that_already_finished_leaves_it_as_it_is(sqlite_url):
    study = make_study(sqlite_url)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, state=TrialState.FAIL)  # failed as lost by another worker, say
    frozen = fail_trial(study, trial, "late", interrupted=True)
    assert frozen.state == TrialState.FAIL and frozen.user_attrs == {}


def test_a_connection_left_half_read_by_ctrl_c_is_not_reused(sqlite_url):
    storage = open_storage(sqlite_url)
    study = make_study(sqlite_url)
    for value in range(3):
        study.add_trial(optuna.trial.create_trial(value=float(value)))
    half_read = []  # kept, as a traceback keeps the frame that was reading
    with pytest.raises(KeyboardInterrupt), _create_scoped_session(storage.scoped_session) as session:
        half_read.append(session.execute(text("SELECT trial_id FROM trials")))
        half_read[0].fetchone()
        raise KeyboardInterrupt  # Ctrl-C between two rows of Optuna reading the trials
    elsewhere = optuna.load_study(study_name=SPEC.name, storage=sqlite_url)  # another worker's connection
    elsewhere.ask()  # a new running trial
    # Each of the pool's connections in turn: the half-read one would see 3 trials and fail to write at once.
    for attempt in range(8):
        trials = storage.get_all_trials(study._study_id)
        assert len(trials) == 4
        storage.set_trial_user_attr(trials[-1]._trial_id, "attempt", attempt)
    assert storage.get_all_trials(study._study_id)[-1].user_attrs == {"attempt": 7}


def test_a_failed_commit_is_stored_with_the_reason_the_database_gave():
    error = optuna.exceptions.StorageInternalError("An exception is raised during the commit.\nThis typically ...")
    error.__cause__ = sqlite3.OperationalError("database is locked")
    assert failure_reason(error) == (
        "StorageInternalError: An exception is raised during the commit. (from OperationalError: database is locked)"
    )
    assert failure_reason(ValueError("bad\nvalue")) == "ValueError: bad"
