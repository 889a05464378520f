"""Storages from URLs, and what a study stores and checks when it is resumed."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from search.errors import ConfigError
from search.storage import display_url, open_storage
from search.study import INTERRUPTED, RETRY_OF, StudySpec, counted_trials, open_study, requeue_interrupted

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
    interrupted.set_user_attr(INTERRUPTED, True)
    study.tell(interrupted, state=TrialState.FAIL)
    assert counted_trials(study) == 3

    assert requeue_interrupted(study) == [interrupted.number]
    assert requeue_interrupted(study) == []  # already queued
    retry = study.ask(distributions)
    assert retry.params == interrupted.params
    assert retry.user_attrs[RETRY_OF] == interrupted.number
