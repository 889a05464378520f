"""The model registry (hps.search.registry) in SQLite and, where a server answers, PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from hps.search.errors import ConfigError
from hps.search.registry import (
    CheckEntry,
    ModelEntry,
    checks,
    checks_by_model,
    model,
    models,
    promote,
    promoted,
    record_check,
    register,
)
from hps.search.storage import open_storage

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_answers() -> bool:
    try:
        open_storage(POSTGRES)
    except ConfigError:
        return False
    return True


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/hps.db"
    if not _postgres_answers():
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    return POSTGRES


def _entry(lineage: str, folder: Path, **changes) -> ModelEntry:
    folder.mkdir(parents=True, exist_ok=True)
    values = {
        "lineage": lineage,
        "folder": str(folder),
        "data": "tweets",
        "fingerprint": "0123456789abcdef",
        "sizes": {"train": 600, "validation": 374, "test": 1421},
        "metric": "macro_f1",
        "validation": 0.5,
        "test": 0.52,
        "versions": {"torch": "2.13.0"},
        "study": "s",
        "trial": 3,
    }
    return ModelEntry(**(values | changes))


def test_models_register_with_lineage_and_one_is_promoted_at_a_time(url, tmp_path):
    lineage = f"l-{uuid.uuid4().hex[:8]}"  # the PostgreSQL database is shared with other runs
    first = register(url, _entry(lineage, tmp_path / "runs" / "a"))
    second = register(url, _entry(lineage, tmp_path / "runs" / "b", parent=first, study="s-retune", test=None))
    assert [(m.id, m.parent, m.test) for m in models(url, lineage)] == [(first, None, 0.52), (second, first, None)]
    assert model(url, second).sizes == {"train": 600, "validation": 374, "test": 1421}
    assert promoted(url, lineage) is None

    link = promote(url, first, tmp_path / "studies")
    assert link.resolve() == tmp_path / "runs" / "a" and promoted(url, lineage).id == first
    promote(url, second, tmp_path / "studies")  # the link moves; the flag moves with it
    assert link.resolve() == tmp_path / "runs" / "b"
    assert [m.promoted for m in models(url, lineage)] == [False, True]


def test_checks_are_rows_with_their_numbers(url, tmp_path):
    lineage = f"l-{uuid.uuid4().hex[:8]}"
    model_id = register(url, _entry(lineage, tmp_path / "run"))
    numbers = {"metric": {"value": 0.41, "difference_high": -0.02}, "drift": {"flagged": ["embeddings"]}}
    entry = CheckEntry(model_id, "labelled", "/data/new.csv", "fedcba9876543210", 200, "degraded", True, numbers)
    check_id = record_check(url, entry)
    stored = checks(url, model_id)
    assert [(c.id, c.verdict, c.action_needed, c.numbers) for c in stored] == [(check_id, "degraded", True, numbers)]
    assert checks_by_model(url)[model_id] == stored  # the listing's one query groups the same rows


def test_reading_a_database_without_a_registry_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path}/hps.db"
    with pytest.raises(ConfigError, match="no such database file"):  # a mistyped path is not a new database
        models(url)
    open_storage(url)  # a study database without the registry's tables
    assert models(url) == [] and checks(url) == []
    assert not inspect(create_engine(url)).has_table("hps_models")  # a read (hps report, compare) creates no table
    with pytest.raises(ConfigError, match="model 7 is not in the registry of sqlite:///"):
        model(url, 7)
