"""Export, reproduction, production training and warm start, on one small study shared by the tests."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from hps.objectives.data import load_splits, tokenize
from hps.objectives.inference import predict
from hps.objectives.metrics import metric_function
from hps.search.cli import main as hps
from hps.search.reruns import WARM_START_FROM
from hps.search.trial import record
from tests.conftest import composed, run_cli

# A tiny model that learns something in 2 epochs, so that curves differ; nothing pruned (100 start-up trials).
SWEEP = [
    "-m",
    "experiment=smoke",
    "training.num_epochs=2",
    "hydra.sweeper.n_trials=3",
    "hydra.sweeper.pruner.n_startup_trials=100",
]


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    studies = tmp_path_factory.mktemp("export") / "studies"
    result = run_cli(*SWEEP, studies=studies)
    assert result.returncode == 0, result.stderr
    return studies


def study(studies: Path, name: str = "smoke") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{studies}/hps.db")


def export(studies: Path, monkeypatch, *args: str) -> None:
    """``hps export ARGS`` with the studies folder at ``studies``."""
    monkeypatch.setenv("HPS_STUDIES_DIR", str(studies))
    hps(["export", *args])


def test_export_writes_the_best_trial_with_its_provenance(swept, monkeypatch, capsys):
    export(swept, monkeypatch)
    assert capsys.readouterr().out.strip() == str(swept / "smoke" / "best.yaml")
    text = (swept / "smoke" / "best.yaml").read_text()
    comments = [line.removeprefix("# ") for line in text.splitlines() if line.startswith("#")]
    assert comments[0].endswith(f"hps-finetune --config-dir {swept / 'smoke'} --config-name best")
    header = yaml.safe_load("\n".join(comments[1:]))["provenance"]
    best = study(swept).best_trial
    assert header["trial"] == best.number and header["value"] == best.value
    assert header["metric"] == "macro_f1" and header["direction"] == "maximize"
    assert header["trials"] == {"complete": 3, "pruned": 0, "failed": 0, "interrupted": 0}
    assert header["storage"] == f"sqlite:///{swept}/hps.db"
    assert set(header["trial_versions"]) >= {"torch", "transformers", "optuna"}
    config = yaml.safe_load(text)
    assert config["training"]["learning_rate"] == best.params["learning_rate"]
    assert config["production"]["enabled"] is True
    assert config["trial"] is None
    # the trial ran with precision auto; production training reproduces it in the precision auto chose then
    assert config["training"]["device"] == "auto" and config["training"]["precision"] == best.user_attrs["precision"]


def test_exported_config_reproduces_the_trial_bit_for_bit(swept, monkeypatch, tmp_path):
    export(swept, monkeypatch)
    best = study(swept).best_trial
    result = run_cli(
        *("--config-dir", str(swept / "smoke"), "--config-name", "best"),
        *("production.enabled=false", f"hydra.run.dir={tmp_path}"),
        studies=swept,
    )
    assert result.returncode == 0, result.stderr
    assert f"macro_f1 on validation: {best.value!r}" in result.stderr
    logged = re.findall(r"evaluation (\d+): macro_f1 (\S+), train loss (\S+)", (tmp_path / "finetune.log").read_text())
    stored = [(str(p["step"]), repr(p["metric"]), repr(p["train_loss"])) for p in record(best, "curve")]
    assert logged == stored


def test_production_training_saves_a_model_that_predicts_as_evaluated(swept, monkeypatch, tmp_path):
    export(swept, monkeypatch)
    result = run_cli(
        "--config-dir",
        str(swept / "smoke"),
        "--config-name",
        "best",
        "production.merge_validation=true",
        "production.num_epochs=1",
        f"hydra.run.dir={tmp_path}/production",
        studies=swept,
    )
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "production"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["metric"] == "macro_f1" and metrics["validation"] is None and metrics["num_epochs"] == 1
    assert metrics["test_examples"] == 1421
    used = yaml.safe_load((folder / "config.yaml").read_text())
    assert used["production"]["merge_validation"] is True

    model = AutoModelForSequenceClassification.from_pretrained(folder / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    data = composed("experiment=smoke").data
    with_test = load_splits(data, with_test=True)
    test_set = tokenize(with_test.test, tokenizer, ["text"], used["training"]["max_length"])
    labels, predictions = predict(model, test_set, DataCollatorWithPadding(tokenizer))
    assert metric_function("macro_f1")(labels, predictions) == metrics["test"]


def test_top_k_trial_and_json(swept, monkeypatch):
    export(swept, monkeypatch, "--top-k", "2", "--format", "json")
    ranked = sorted((t for t in study(swept).trials), key=lambda t: t.value, reverse=True)
    for rank in (1, 2):
        exported = json.loads((swept / "smoke" / f"top_{rank}.json").read_text())
        assert exported["provenance"]["trial"] == ranked[rank - 1].number
        assert exported["config"]["training"]["batch_size"] == ranked[rank - 1].params["batch_size"]
    export(swept, monkeypatch, "--trial", "1")
    assert (
        yaml.safe_load((swept / "smoke" / "trial_1.yaml").read_text())["training"]["learning_rate"]
        == (study(swept).trials[1].params["learning_rate"])
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "nope"], "no study 'nope' in sqlite:///"),
        (["--storage", "not-a-url"], "storage 'not-a-url' is not a database URL"),
        (["--top-k", "0"], "--top-k is 0; it must be a positive integer"),
        (["--trial", "99"], "trial 99 of study 'smoke' does not exist"),
    ],
)
def test_export_errors_are_one_line(swept, monkeypatch, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        export(swept, monkeypatch, *args)
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error


def test_a_study_without_complete_trials_cannot_be_exported(tmp_path, monkeypatch, capsys):
    failed = optuna.create_study(study_name="failed", storage=f"sqlite:///{tmp_path}/hps.db")
    failed.tell(failed.ask(), state=TrialState.FAIL)
    with pytest.raises(SystemExit):
        export(tmp_path, monkeypatch)
    assert "study 'failed' has no COMPLETE trial to export yet" in capsys.readouterr().err


def test_warm_start_queues_the_previous_best_configs_first(swept):
    result = run_cli(
        *SWEEP,
        "hydra.sweeper.study_name=retune",
        "hydra.sweeper.warm_start={study:smoke,top_k:2}",
        studies=swept,
    )
    assert result.returncode == 0, result.stderr
    ranked = sorted(study(swept).trials, key=lambda t: t.value, reverse=True)
    retune = study(swept, "retune").trials
    assert len(retune) == 3
    for trial, origin in zip(retune[:2], ranked[:2], strict=True):
        assert trial.params == origin.params
        assert trial.user_attrs[WARM_START_FROM] == f"smoke#{origin.number}"
    assert WARM_START_FROM not in retune[2].user_attrs
    assert "warm start: the first trials re-run" in result.stderr
