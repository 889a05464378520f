"""What a resumed or shared study must not do: repeat its parameter sets, mix two search spaces, or spend its
budget on one error. Through the real command line (``hps-synthetic -m``, milliseconds per trial) and in process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hps.search.errors import ConfigError
from hps.search.space import parse_search_space
from hps.search.study import FAIL_REASON, INTERRUPTED, SEARCH_SPACE, StudySpec, open_study, repeated_failure
from tests.conftest import REPO

SEEDED = ["hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0", "hydra.sweeper.study_name=s"]


def synthetic(studies: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = os.environ | {"HPS_STUDIES_DIR": str(studies), "PYTHONUNBUFFERED": "1"}
    command = [str(Path(sys.executable).parent / "hps-synthetic"), "-m", *overrides]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def parameter_sets(studies: Path) -> list[tuple[float, float]]:
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{studies}/hps.db")
    return [(t.params["x"], t.params["y"]) for t in study.trials]


def test_a_seeded_study_resumed_or_shared_by_two_workers_repeats_no_parameter_set(tmp_path):
    resumed, shared, again = tmp_path / "resumed", tmp_path / "shared", tmp_path / "again"
    for studies, budgets in ((resumed, (3, 6)), (again, (3, 6))):
        for n_trials in budgets:
            assert synthetic(studies, *SEEDED, f"hydra.sweeper.n_trials={n_trials}").returncode == 0
    assert synthetic(shared, *SEEDED, "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2").returncode == 0
    assert len(set(parameter_sets(resumed))) == 6
    assert len(set(parameter_sets(shared))) == 6
    assert parameter_sets(again) == parameter_sets(resumed)  # the seed still makes the study reproducible


def test_resuming_with_another_search_space_is_refused_unless_allowed(tmp_path):
    assert synthetic(tmp_path, "hydra.sweeper.study_name=s", "hydra.sweeper.n_trials=2").returncode == 0
    wider = synthetic(tmp_path, "hydra.sweeper.study_name=s", "hydra.sweeper.n_trials=4", "search_space.x.high=9")
    assert wider.returncode == 2
    assert wider.stderr.strip().splitlines() == [
        f"error: study 's' in sqlite:///{tmp_path}/hps.db: its trials searched parameter 'x' as x: float in [-5, 5], "
        "not x: float in [-5, 9]; resume it with the same search space, start a new study with "
        "hydra.sweeper.study_name=NEW_NAME, or mix both spaces in it with hydra.sweeper.allow_space_change=true"
    ]
    added = synthetic(
        tmp_path, "hydra.sweeper.study_name=s", "+search_space.noise={key:noise,type:float,low:0,high:0.1}"
    )
    assert added.returncode == 2 and "did not search parameter 'noise' (noise: float in [0, 0.1])" in added.stderr
    assert len(parameter_sets(tmp_path)) == 2  # nothing ran
    allowed = synthetic(
        tmp_path,
        "hydra.sweeper.study_name=s",
        "hydra.sweeper.n_trials=4",
        "search_space.x.high=9",
        "hydra.sweeper.allow_space_change=true",
    )
    assert allowed.returncode == 0, allowed.stderr
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/hps.db")
    assert len(study.trials) == 4
    assert study.user_attrs[SEARCH_SPACE]["x"]["distribution"] == optuna.distributions.distribution_to_json(
        optuna.distributions.FloatDistribution(-5, 9)
    )


SPACE = parse_search_space({"x": {"key": "x", "type": "float", "low": 0, "high": 1}})


def test_a_study_stored_before_spaces_were_takes_the_space_it_is_resumed_with(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db")
    optuna.create_study(storage=storage, study_name="s", direction="maximize").set_metric_names(["m"])
    spec = StudySpec("s", "maximize", "m", space=SPACE.as_json())
    sampler, pruner = optuna.samplers.RandomSampler(), optuna.pruners.NopPruner()
    assert open_study(storage, "sqlite://", spec, sampler, pruner).user_attrs[SEARCH_SPACE] == SPACE.as_json()
    other = StudySpec("s", "maximize", "m", space={})
    with pytest.raises(ConfigError, match=r"its trials searched parameter 'x' .*, which the space now lacks"):
        open_study(storage, "sqlite://", other, sampler, pruner)


def failed(reason: str, **attrs: object) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={FAIL_REASON: reason, **attrs})


def study_of(*trials: optuna.trial.FrozenTrial) -> optuna.Study:
    study = optuna.create_study()
    for trial in trials:
        study.add_trial(trial)
    return study


NAN = "FloatingPointError: training loss became nan at step {}"


def test_three_failures_alike_but_for_their_numbers_are_a_repeated_failure():
    study = study_of(*(failed(NAN.format(step)) for step in (4, 3, 12)), optuna.trial.create_trial(value=1.0))
    assert repeated_failure(study, first_number=0, count=3) == NAN.format(4)
    assert repeated_failure(study, first_number=0, count=4) is None  # the fourth completed


@pytest.mark.parametrize(
    "trials",
    [
        [failed(NAN.format(1)), failed("ValueError: bad"), failed(NAN.format(2))],  # two reasons
        [failed(NAN.format(1)), optuna.trial.create_trial(value=1.0), failed(NAN.format(2))],  # one completed
        [failed(NAN.format(1)), failed(NAN.format(2))],  # only two ended
    ],
)
def test_other_starts_are_not(trials):
    assert repeated_failure(study_of(*trials), first_number=0, count=3) is None


def test_only_trials_of_this_sweep_count_and_interrupted_ones_do_not():
    old = [failed(NAN.format(1)) for _ in range(3)]  # an earlier sweep's, before the user fixed the cause
    interrupted = failed("interrupted (Ctrl-C or SIGTERM)", **{INTERRUPTED: True})
    study = study_of(*old, interrupted, failed(NAN.format(1)), failed(NAN.format(2)))
    assert repeated_failure(study, first_number=0, count=3) == NAN.format(1)
    assert repeated_failure(study, first_number=3, count=3) is None  # 2 failures of its own, not 3
    study.add_trial(failed(NAN.format(3)))
    assert repeated_failure(study, first_number=3, count=3) == NAN.format(1)
