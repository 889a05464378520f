"""Storages from URLs, and what a study stores and checks when it is resumed."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState
from sqlalchemy import text

from hps.search._compat import study_id, trial_id
from hps.search.errors import ConfigError, failure_reason
from hps.search.locks import budget_lock
from hps.search.progress import StudyView, top_trials_table
from hps.search.reruns import requeue_interrupted
from hps.search.storage import LOST_WORKER, HeartbeatSettings, display_url, fail_lost_trials, open_storage
from hps.search.study import (
    FAIL_REASON,
    INTERRUPTED_REASON,
    RETRY_OF,
    StudySpec,
    budget_spent,
    counted_trials,
    fail_trial,
    open_study,
    state_counts,
)
from hps.search.workers import ask_within_budget

SPEC = StudySpec(name="s", direction="maximize", metric="accuracy", identity={"data": "sst2"})
LOST_REASON = "lost: its worker stopped beating for 2 s (killed, or its machine was lost)"


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path}/nested/folder/hps.db"


def make_study(url: str, spec: StudySpec = SPEC) -> optuna.Study:
    return open_study(open_storage(url), url, spec, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner())


def damage(database: Path) -> None:
    """Overwrite two pages in the middle of an SQLite file, as a disk error or a stray write would."""
    middle = database.stat().st_size // 2 // 4096 * 4096
    with database.open("r+b") as handle:
        handle.seek(middle)
        handle.write(b"\xff" * 8192)


def add_trials(study: optuna.Study, n_trials: int) -> None:
    space = {"x": FloatDistribution(0, 1)}
    study.add_trials(
        [optuna.trial.create_trial(params={"x": i / n_trials}, distributions=space, value=i) for i in range(n_trials)]
    )


def damaged_study(database: Path) -> str:
    """An SQLite study of 100 complete trials, damaged in the middle; returns its URL."""
    url = f"sqlite:///{database}"
    add_trials(optuna.create_study(study_name="damaged", storage=url), 100)
    damage(database)
    return url


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sqlite_file_and_its_folder_are_created(sqlite_url, tmp_path):
    study = make_study(sqlite_url)
    assert (tmp_path / "nested" / "folder" / "hps.db").is_file()
    assert study.metric_names == ["accuracy"]
    assert study.user_attrs["objective_identity"] == {"data": "sst2"}


EXPECTED = "expected an SQLAlchemy URL such as"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", f"storage 'not a url' is not a database URL; {EXPECTED}"),
        ("nosuchdb://user@host/db", "cannot open storage 'nosuchdb://user@host/db': Can't load plugin: sqlalchemy"),
        ("mysql://user@host/db", "cannot open storage 'mysql://user@host/db': its driver is not installed (No module"),
        ("sqlite://", f"storage 'sqlite://' names no file; {EXPECTED}"),
    ],
)
def test_urls_that_do_not_parse_or_name_no_known_driver_are_one_line_with_what_is_expected(url, message):
    with pytest.raises(ConfigError) as error:
        open_storage(url)
    assert str(error.value).startswith(message)
    assert EXPECTED in str(error.value) and "\n" not in str(error.value)


def test_a_server_that_does_not_answer_is_named_with_its_address_and_the_password_masked():
    with pytest.raises(ConfigError) as error:
        open_storage("postgresql+psycopg://user:secret@127.0.0.1:1/db")
    assert str(error.value) == (
        "cannot open storage 'postgresql+psycopg://user:***@127.0.0.1:1/db': server unreachable at 127.0.0.1:1 "
        "(Connection refused); is it running, and are host and port right?"
    )


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
    assert state_counts(study) == {"complete": 1, "pruned": 1, "failed": 1, "interrupted": 1}
    assert top_trials_table(study, "accuracy").title.endswith("(1 pruned, 1 failed, 1 interrupted)")
    info = StudyView(study, n_trials=5, done=3, metric="accuracy").progress.tasks[0].fields["info"]
    assert info == "best accuracy 0.5000 (trial 0) · 1 pruned · 1 failed · 1 interrupted"

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
    fail_lost_trials(study)
    trials = study.get_trials()
    assert trials[lost.number].state == TrialState.FAIL
    assert trials[lost.number].user_attrs[FAIL_REASON] == LOST_REASON
    assert trials[-1].state == TrialState.WAITING and trials[-1].params == lost.params
    assert trials[-1].user_attrs == {RETRY_OF: lost.number} and trials[-1].system_attrs[LOST_WORKER]
    assert budget_spent(study) == 1  # the lost trial no longer counts; its re-run will
    assert state_counts(study) == {"complete": 1, "pruned": 0, "failed": 0, "interrupted": 1}
    fail_lost_trials(study)  # another worker looking a moment later finds nothing more to fail or queue
    assert len(study.get_trials()) == 3

    rerun = ask_within_budget(study, sqlite_url, 3, space, heartbeat)
    assert rerun.number == trials[-1].number and rerun.params == lost.params
    time.sleep(3)  # lost again: max_retry is 1, so no third run, and this failure counts
    fail_lost_trials(study)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert trials[-1].user_attrs[FAIL_REASON] == LOST_REASON
    assert counted_trials(study) == 2
    assert state_counts(study) == {"complete": 1, "pruned": 0, "failed": 1, "interrupted": 1}


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
        trials = storage.get_all_trials(study_id(study))
        assert len(trials) == 4
        storage.set_trial_user_attr(trial_id(trials[-1]), "attempt", attempt)
    assert storage.get_all_trials(study_id(study))[-1].user_attrs == {"attempt": 7}


def test_a_failed_commit_is_stored_with_the_reason_the_database_gave():
    error = optuna.exceptions.StorageInternalError("An exception is raised during the commit.\nThis typically ...")
    error.__cause__ = sqlite3.OperationalError("database is locked")
    assert failure_reason(error) == (
        "StorageInternalError: An exception is raised during the commit. (from OperationalError: database is locked)"
    )
    assert failure_reason(ValueError("bad\nvalue")) == "ValueError: bad"


def test_a_damaged_sqlite_file_is_refused_in_one_line_and_left_as_it_is(tmp_path):
    database = tmp_path / "hps.db"
    url = damaged_study(database)
    before = digest(database)
    with pytest.raises(ConfigError) as error:
        open_storage(url)
    message = str(error.value)
    assert message.startswith(f"storage '{url}': the database file is damaged (SQLite's integrity check: Page ")
    assert "btreeInitPage() returns error code 11" in message and "\n" not in message
    assert message.endswith("); restore it from a backup, or use another database file")
    assert digest(database) == before  # nothing wrote to it


def test_a_file_that_is_no_database_is_refused_in_one_line(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("not a database\n" * 1000)
    with pytest.raises(ConfigError, match=r"the database file is damaged \(SQLite's integrity check: file is not a da"):
        open_storage(f"sqlite:///{text}", create=False)
    assert text.read_text() == "not a database\n" * 1000


def test_damage_met_after_opening_is_the_same_one_line(tmp_path):
    database = tmp_path / "hps.db"
    storage = open_storage(f"sqlite:///{database}")
    study = optuna.create_study(study_name="s", storage=storage)
    add_trials(study, 100)
    with storage.engine.connect() as connection:  # the trials into the file itself, out of the write-ahead log
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    damage(database)  # while the storage is open: a disk error, a copy over the file
    storage.engine.dispose()  # fresh connections read the file, as another process would
    with pytest.raises(ConfigError) as error:
        study.get_trials()
    assert str(error.value).startswith(
        f"storage 'sqlite:///{database}': the database file is damaged (SQLite's integrity check: Page "
    )
