"""The lcbench surrogate objective: the same predictions as YAHPO Gym, and pruned studies through the sweeper.

``lcbench_reference.json`` holds 9 configurations (3 tasks, epochs 1, 10 and 52) evaluated by the
``yahpo-gym==1.0.2`` package itself (``BenchmarkSet("lcbench", instance=task).objective_function``), which
needs numpy<2 and so lives outside this project. The surrogate's data (``../shared/benchmarks/yahpo_gym``, or
``$HPS_YAHPO_DATA``) is not part of a fresh clone: without it these tests are skipped, saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hps.objectives.lcbench import EPOCHS, HYPERPARAMETERS, Surrogate
from tests.conftest import REPO

DATA = Path(os.environ.get("HPS_YAHPO_DATA") or REPO.parent / "shared" / "benchmarks" / "yahpo_gym")
pytestmark = pytest.mark.skipif(
    not (DATA / "lcbench" / "model.onnx").is_file(), reason=f"no YAHPO Gym data at {DATA} (set HPS_YAHPO_DATA)"
)
REFERENCE = json.loads((Path(__file__).parent / "lcbench_reference.json").read_text())


@pytest.fixture(scope="module")
def surrogate() -> Surrogate:
    return Surrogate(DATA)


def test_predictions_equal_yahpo_gym_s(surrogate):
    for case in REFERENCE:
        curve = surrogate.curve(case["task"], case["config"])
        for epoch, expected in zip(case["epochs"], case["targets"], strict=True):
            for target, value in expected.items():
                assert curve[target][epoch - 1] == pytest.approx(value, rel=1e-5), (case["task"], epoch, target)


def test_tasks_and_normalised_regret(surrogate):
    assert len(surrogate.tasks) == 34 and "3945" in surrogate.tasks
    low, high = surrogate.ranges["3945"]["val_balanced_accuracy"]
    assert surrogate.normalised_regret("3945", "val_balanced_accuracy", high) == 0
    assert surrogate.normalised_regret("3945", "val_balanced_accuracy", low) == 1
    low, high = surrogate.ranges["3945"]["val_cross_entropy"]
    assert surrogate.normalised_regret("3945", "val_cross_entropy", low) == 0  # lower is better


def hps_lcbench(tmp_path: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "hps-lcbench"), *(["-m"] * multirun), f"lcbench.data_path={DATA}"]
    command += overrides
    env = os.environ | {"HPS_STUDIES_DIR": str(tmp_path)}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_a_pruned_study_stores_each_trial_s_surrogate_curve(tmp_path, surrogate):
    done = hps_lcbench(
        tmp_path,
        "lcbench.task=189909",
        "hydra.sweeper.n_trials=12",
        "hydra.sweeper.sampler.seed=0",
        multirun=True,
    )
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="lcbench_189909", storage=f"sqlite:///{tmp_path}/hps.db")
    trials = study.get_trials()
    assert len(trials) == 12 and {t.state for t in trials} == {TrialState.COMPLETE, TrialState.PRUNED}
    for trial in trials:
        config = {name: trial.params[name] for name in HYPERPARAMETERS}
        curve = surrogate.curve("189909", config)
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(1, len(steps) + 1))  # one report per epoch, from the first
        assert [trial.intermediate_values[s] for s in steps] == pytest.approx(
            curve["val_balanced_accuracy"][: len(steps)]
        )
        assert trial.user_attrs["epochs_trained"] == len(steps)
        if trial.state == TrialState.COMPLETE:
            assert len(steps) == EPOCHS and trial.value == pytest.approx(curve["val_balanced_accuracy"][-1])
            assert trial.user_attrs["test_balanced_accuracy"] == pytest.approx(curve["test_balanced_accuracy"][-1])
        else:  # the default pruner stops trials only at successive halving's rungs
            assert len(steps) in (4, 8, 16, 32)


@pytest.mark.parametrize(
    ("overrides", "message", "multirun"),
    [
        (["lcbench.task=1"], "lcbench.task '1' is not an lcbench task; allowed: 3945,", False),
        (["lcbench.metric=time"], "lcbench.metric is 'time'; allowed: val_accuracy,", False),
        (
            ["lcbench.metric=val_cross_entropy"],
            "objective.direction is 'maximize' but val_cross_entropy must be minimized",
            False,
        ),
        (["lcbench.epochs=60"], "lcbench.epochs is 60; allowed: 1 to 52", False),
        (["lcbench.data_path=/nowhere"], "lcbench.data_path '/nowhere' is not a YAHPO Gym data folder", False),
        (["lcbench.task=1"], "lcbench.task '1' is not an lcbench task", True),
    ],
)
def test_bad_settings_are_one_line(tmp_path, overrides, message, multirun):
    done = hps_lcbench(tmp_path, *overrides, multirun=multirun)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
