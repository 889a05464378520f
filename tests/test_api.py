"""The Python API: the documented example runs as written, and sweep, objective and imports behave as it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

import hps
from hps.search.artifacts import attached_files
from hps.search.export import exported_config
from hps.search.trial import record
from tests.conftest import REPO

DOC = REPO / "docs" / "python-api.md"


@pytest.fixture(scope="module")
def documented(tmp_path_factory) -> dict:
    """What the documentation's example leaves behind: its code run as written, from the clone's root."""
    code = "\n".join(re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL))
    studies = tmp_path_factory.mktemp("documented") / "studies"
    namespace: dict = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)  # where Hydra finds the sweeper plugin of an editable install
        patch.setenv("HPS_STUDIES_DIR", str(studies))
        for name in ("HPS_DATA_ROOT", "HPS_STORAGE"):
            patch.delenv(name, raising=False)
        exec(compile(code, str(DOC), "exec"), namespace)
    return namespace | {"studies": studies}


def test_the_documented_example_runs_and_writes_what_it_says(documented):
    studies = documented["studies"]
    written = documented["exported"] + documented["pages"] + documented["compared"]
    assert written == [
        studies / "smoke" / "best.yaml",
        studies / "smoke" / "report.html",
        studies / "comparison.csv",
        studies / "comparison.html",
    ]
    assert all(path.is_file() for path in written)


def test_sweep_returns_the_study_it_ran_with_n_trials_trials(documented):
    study = documented["study"]
    assert study.study_name == "smoke"
    assert len(study.trials) == 4
    assert {t.state for t in study.trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    stored = hps.load_study(storage=f"sqlite:///{documented['studies']}/hps.db", study_name="smoke")
    assert [(t.number, t.state, t.value) for t in stored.trials] == [(t.number, t.state, t.value) for t in study.trials]


def test_objective_stores_complete_trials_with_their_curves_records_and_files(documented, tmp_path):
    mine = documented["mine"]
    assert [t.state for t in mine.trials] == [TrialState.COMPLETE] * 3
    for trial in mine.trials:
        assert sorted(trial.intermediate_values) == [1, 2, 3, 4]  # one epoch, 4 evaluations
        assert trial.value == trial.intermediate_values[4]
        assert [e["metric"] for e in record(trial, "curve")] == list(trial.intermediate_values.values())
        assert record(trial, "overrides") == [
            "experiment=smoke",
            f"training.learning_rate={trial.params['learning_rate']!r}",
            f"training.dropout={trial.params['dropout']!r}",
        ]
        assert exported_config(trial, tmp_path)["training"]["dropout"] == trial.params["dropout"]
        folder = documented["studies"] / mine.study_name / f"trial_{trial.number}"
        assert trial.user_attrs["output_dir"] == str(folder) and (folder / "learning_curve.png").is_file()
        assert {"learning_curve.png", "confusion_matrix.png", "config.yaml"} <= set(attached_files(mine, trial))


def test_objective_raises_trial_pruned_when_the_pruner_stops_the_trial(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the shipped data
    monkeypatch.setenv("HPS_STUDIES_DIR", str(tmp_path))
    objective = hps.objective(["experiment=smoke"])
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]  # stopped at its first evaluation
    assert len(record(trial, "curve")) == 1
    with pytest.raises(hps.ConfigError, match="the study should maximize macro_f1"):
        optuna.create_study(direction="minimize").optimize(objective, n_trials=1)


def test_sweep_errors_carry_the_line_the_command_line_prints(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # where Hydra finds the sweeper plugin of an editable install
    monkeypatch.setenv("HPS_STUDIES_DIR", str(tmp_path))
    with pytest.raises(hps.SweepError, match=r"^steps is 0; it must be a whole number >= 1$") as failed:
        hps.sweep(["steps=0", "hydra.sweeper.n_trials=1"], config_name="synthetic")  # found by the task's preflight
    assert failed.value.returncode == 2
    with pytest.raises(hps.ConfigError, match=r"^hydra.sweeper.n_trials is 0; it must be a positive integer$"):
        hps.sweep(["hydra.sweeper.n_trials=0"], config_name="synthetic")  # found before the sweep starts
    with pytest.raises(
        hps.ConfigError, match=r"runs one study; these overrides run 2 \(synthetic-x=0, synthetic-x=1\)"
    ):
        hps.sweep(["x=0,1"], config_name="synthetic")


def test_importing_hps_changes_nothing_in_the_process():
    code = """
import os, pkgutil, sys
import hps
assert "torch" not in sys.modules and "optuna" not in sys.modules, "import hps is not light"
import datasets, transformers
before = transformers.logging.get_verbosity(), datasets.logging.get_verbosity()
bars = transformers.logging.is_progress_bar_enabled(), datasets.utils.are_progress_bars_disabled()
import hps.search, hps.objectives
for package in (hps.search, hps.objectives):
    for module in pkgutil.iter_modules(package.__path__):
        __import__(f"{package.__name__}.{module.name}")
assert "HF_HUB_OFFLINE" not in os.environ
assert (transformers.logging.get_verbosity(), datasets.logging.get_verbosity()) == before
assert (transformers.logging.is_progress_bar_enabled(), datasets.utils.are_progress_bars_disabled()) == bars
"""
    environment = {name: value for name, value in os.environ.items() if name != "HF_HUB_OFFLINE"}
    ran = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
