"""Model maintenance on real tweets: the registry, ``hps check`` (labelled and not) and ``hps retune``.

One lineage is built once for the module from the shipped TweetEval emotion data, split into an *old* folder
(40 training tweets) and a *new* one (600 other training tweets, other test tweets): MiniLM with its encoder
frozen (only the head trains, on cached features: seconds), a 2-trial study on the old data, its best trained
as the production model, then re-tuned on the new data.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import optuna_dashboard
import pytest
from datasets import Dataset
from sqlalchemy import create_engine, text

from hps.objectives.checks import open_model, run_model
from hps.objectives.data import data_fingerprint
from hps.objectives.inference import REFERENCE, load_reference
from hps.search.drift import drift
from hps.search.registry import PRODUCTION, PROVENANCE
from tests.conftest import REPO, SHIPPED_DATA, composed, run_cli, write_csv

STUDY = "tweets"
SHARED_DATA = REPO.parent / "shared" / "data"
# MiniLM with every encoder layer frozen: the head trains on cached features, so a trial takes seconds.
TASK = [
    "search_space=none",
    "+search_space.learning_rate={key:training.learning_rate,type:float,low:3.0e-3,high:3.0e-2,log:true}",
    "training.freeze_layers=6",
    "training.num_epochs=10",
    "training.threads=1",
    "training.precision=fp32",
]


def _rows(name: str) -> tuple[list[str], list[list[str]]]:
    with (SHIPPED_DATA / "tweet_eval_emotion" / name).open(newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def hps(*args: str, studies: Path) -> subprocess.CompletedProcess:
    """The ``hps`` command line, as a user runs it."""
    env = os.environ | {"HPS_STUDIES_DIR": str(studies)}
    command = [str(Path(sys.executable).parent / "hps"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def lineage(tmp_path_factory) -> Path:
    """The studies folder after: a study on the old data, its production model, a re-tune on the new data."""
    root = tmp_path_factory.mktemp("maintenance")
    header, train = _rows("train.csv")
    _, validation = _rows("validation.csv")
    _, test = _rows("test.csv")
    for name, train_rows, test_rows in (("old", train[:40], test[:400]), ("new", train[40:640], test[400:800])):
        for split, rows in (("train", train_rows), ("validation", validation), ("test", test_rows)):
            write_csv(root / name / f"{split}.csv", header, rows)
    write_csv(root / "shifted.csv", header, [row for row in test[800:] if row[1] == "3"])  # sadness only
    write_csv(root / "unlabelled.csv", ["text"], [[row[0]] for row in test[400:800]])
    studies = root / "studies"
    sweep = run_cli("-m", f"data.dir={root / 'old'}", *TASK, "hydra.sweeper.n_trials=2",
                    f"hydra.sweeper.study_name={STUDY}", studies=studies)  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr
    assert hps("export", "--study", STUDY, studies=studies).returncode == 0
    production = run_cli("--config-dir", str(studies / STUDY), "--config-name", "best", studies=studies)
    assert production.returncode == 0, production.stderr
    return studies


def registry(studies: Path, query: str) -> list[dict]:
    with create_engine(f"sqlite:///{studies}/hps.db").connect() as connection:
        return [dict(row._mapping) for row in connection.execute(text(query))]


def test_production_training_registers_its_model_with_lineage_and_promotes_the_first(lineage):
    first = registry(lineage, "SELECT * FROM hps_models WHERE id = 1")[0]
    folder = Path(first["folder"])
    provenance = json.loads((folder / PROVENANCE).read_text())
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{lineage}/hps.db")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert provenance["model"] == 1 and provenance["study"] == STUDY and provenance["trial"] == study.best_trial.number
    assert (first["study"], first["trial"], first["lineage"]) == (STUDY, study.best_trial.number, STUDY)
    data = composed(f"data.dir={lineage.parent / 'old'}").data
    assert first["fingerprint"] == provenance["fingerprint"] == data_fingerprint(data, with_test=True)
    assert json.loads(first["sizes"]) == {"train": 40, "validation": 374, "test": 400}
    assert (first["test"], first["validation"]) == (metrics["test"], metrics["validation"])
    reference = load_reference(folder / REFERENCE)
    assert reference.embeddings.shape == (400, 384) and reference.probabilities.shape == (400, 4)
    assert np.isclose(reference.probabilities.sum(axis=1), 1, atol=1e-4).all()


def test_check_on_fresh_data_of_the_same_distribution_is_within_noise_and_stored(lineage):
    model = lineage / STUDY / PRODUCTION
    labelled = hps("check", str(model), "--data", str(lineage.parent / "new" / "test.csv"), "--json", studies=lineage)
    unlabelled = hps("check", str(model), "--data", str(lineage.parent / "unlabelled.csv"), studies=lineage)
    assert labelled.returncode == 0 and unlabelled.returncode == 0, labelled.stderr + unlabelled.stderr
    stored = json.loads(labelled.stdout)
    assert (stored["kind"], stored["verdict"], stored["examples"]) == ("labelled", "within noise", 400)
    metric = stored["numbers"]["metric"]
    assert metric["difference_low"] < 0 < metric["difference_high"]
    assert "verdict: no drift: no action needed" in unlabelled.stdout
    rows = registry(lineage, f"SELECT * FROM hps_checks WHERE id = {stored['id']}")
    assert rows[0]["verdict"] == "within noise" and json.loads(rows[0]["numbers"])["metric"] == metric


def test_check_flags_a_label_proportion_shift_and_exits_1(lineage):
    """Only sadness tweets: fewer of them are predicted right than of the test split's mix (a real drop), and
    without their labels the batch is told apart from the test split's mix."""
    shifted = lineage.parent / "shifted.csv"
    _, rows = _rows("test.csv")
    sad = [[row[0]] for row in rows[800:] if row[1] == "3"]
    unlabelled = write_csv(lineage.parent / "shifted_unlabelled.csv", ["text"], sad)
    labelled = hps("check", str(lineage / STUDY / PRODUCTION), "--data", str(shifted), "--json", "--report",
                   studies=lineage)  # fmt: skip
    blind = hps("check", str(lineage / STUDY / PRODUCTION), "--data", str(unlabelled), "--json", studies=lineage)
    assert labelled.returncode == 1 and blind.returncode == 1, labelled.stderr + blind.stderr
    stored, drift = json.loads(labelled.stdout), json.loads(blind.stdout)
    assert stored["verdict"] == "degraded" and stored["numbers"]["metric"]["difference_high"] < 0
    assert drift["verdict"] == "drift" and drift["numbers"]["drift"]["flagged"]
    report = Path(stored["report"]).read_text()
    assert "plotly" in report and f"check {stored['id']}" in report  # every stored check of the model is drawn
    note = optuna_dashboard.get_note(optuna.load_study(study_name=STUDY, storage=f"sqlite:///{lineage}/hps.db"))
    assert "Production models" in note and "checks_model_1.html" in note


def test_retune_promotes_a_better_model_refuses_a_worse_one_and_resumes(lineage):
    new = lineage.parent / "new"
    better = hps("retune", str(lineage / STUDY / PRODUCTION), "--data", str(new), "--n-trials", "2", studies=lineage)
    assert better.returncode == 0, better.stderr
    assert better.stdout.strip().splitlines()[-1].startswith("model 2 promoted: macro_f1")
    assert (lineage / STUDY / PRODUCTION).resolve() == Path(
        registry(lineage, "SELECT folder FROM hps_models WHERE id = 2")[0]["folder"]
    )

    # 8 training tweets: the re-tuned model is worse, and the promoted one stays
    worse = [
        "retune",
        str(lineage / STUDY / PRODUCTION),
        "--data",
        str(new),
        "--n-trials",
        "1",
        "--",
        "data.max_train_examples=8",
    ]
    refused = hps(*worse, studies=lineage)
    assert refused.returncode == 0, refused.stderr
    assert "model 3 not promoted, model 2 stays" in refused.stdout
    models = registry(lineage, "SELECT id, parent, study, promoted FROM hps_models ORDER BY id")
    assert [(m["id"], m["parent"], m["promoted"]) for m in models] == [(1, None, 0), (2, 1, 1), (3, 2, 0)]

    again = hps(*worse, studies=lineage)  # everything done: nothing trained again
    assert again.returncode == 0 and "model 3 not promoted" in again.stdout
    assert len(registry(lineage, "SELECT id FROM hps_models")) == 3
    names = {m["id"]: m["study"] for m in models}
    assert names[2].startswith(f"{STUDY}-retune-1-") and names[3].startswith(f"{STUDY}-retune-2-")
    study = optuna.load_study(study_name=names[3], storage=f"sqlite:///{lineage}/hps.db")
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 1  # its warm start left one queued
    retunes = registry(lineage, "SELECT model, verdict FROM hps_checks WHERE kind = 'retune' ORDER BY id")
    # the promoted model's page shows its re-tune comparison beside its checks
    checked = hps("check", str(lineage / STUDY / PRODUCTION), "--data", str(new / "test.csv"), "--report", "--json",
                  studies=lineage)  # fmt: skip
    assert checked.returncode == 0 and "promoted" in Path(json.loads(checked.stdout)["report"]).read_text()
    refusal = {"model": 3, "verdict": "refused"}
    assert retunes == [{"model": 2, "verdict": "promoted"}, refusal, refusal]
    listing = hps("models", studies=lineage)
    assert "re-tune of 1" in listing.stdout and "re-tune of 2" in listing.stdout
    compared = hps("compare", studies=lineage)  # lineage in the comparison: each study's models
    assert compared.returncode == 0 and "2* (trial" in compared.stdout and "3 (trial" in compared.stdout
    assert hps("report", "--study", names[2], studies=lineage).returncode == 0
    page = (lineage / names[2] / "report.html").read_text()
    fingerprint = registry(lineage, "SELECT fingerprint FROM hps_models WHERE id = 2")[0]["fingerprint"]
    assert "<h2>production models</h2>" in page and f"tweet_eval_emotion ({fingerprint[:8]}; 600 train" in page


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,label\nhello,9\n" + "more,0\n" * 30, "label 9 in column 'label'; labels must be integers 0..3"),
        ("text,label\n", "has no rows"),
        ("words\n" + "hello\n" * 30, "column 'text' not in"),
        ("text\n" + "hello\n" * 5, "has 5 examples; a check needs at least 20"),
    ],
)
def test_a_bad_batch_is_one_line(lineage, tmp_path, content, message):
    batch = tmp_path / "batch.csv"
    batch.write_text(content)
    result = hps("check", str(lineage / STUDY / PRODUCTION), "--data", str(batch), studies=lineage)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_a_folder_without_provenance_is_one_line(lineage, tmp_path):
    result = hps("check", str(tmp_path), "--data", str(lineage.parent / "unlabelled.csv"), studies=lineage)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "has no provenance.json: not a production model saved by hps" in result.stderr


@pytest.mark.skipif(not (SHARED_DATA / "sst2").is_dir(), reason="needs ../shared/data (SST-2 and TREC text)")
def test_the_unlabelled_check_flags_a_domain_shift_and_rarely_a_fresh_sample(lineage, tmp_path):
    first = Path(registry(lineage, "SELECT folder FROM hps_models WHERE id = 1")[0]["folder"])
    for other in ("sst2", "trec"):  # the tweet model shown movie reviews and questions as its own text
        with (SHARED_DATA / other / "test.csv").open(newline="") as handle:
            texts = [[row["text"]] for row in itertools.islice(csv.DictReader(handle), 150)]
        batch = write_csv(tmp_path / f"{other}.csv", ["text"], texts)
        result = hps("check", str(first), "--data", str(batch), "--json", studies=lineage)
        assert result.returncode == 1, result.stderr
        stored = json.loads(result.stdout)
        assert stored["verdict"] == "drift" and "embeddings" in stored["numbers"]["drift"]["flagged"]

    # False alarms: 20 batches of 100 fresh tweets (test tweets the reference does not hold), each against it.
    production = open_model(first)
    _, rows = _rows("test.csv")
    pool = run_model(production, Dataset.from_dict({"text": [row[0] for row in rows[800:]]}))
    reference = load_reference(first / REFERENCE)
    rng = np.random.default_rng(0)
    verdicts = []
    for seed in range(20):
        batch = rng.choice(len(pool.predictions), 100, replace=False)
        verdicts.append(
            drift(
                reference.predictions, reference.confidence, reference.embeddings, pool.predictions[batch],
                pool.confidence[batch], pool.embeddings[batch], classes=4, seed=seed,
            )["verdict"]
        )  # fmt: skip
    assert verdicts.count("drift") <= 2  # alpha 0.01: 0.2 expected of 20
