"""The incumbent pruner: what it stops on top of the pruner it wraps, in both directions."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hps.search.pruners import IncumbentPruner

BEST_CURVE = {4: 0.50, 16: 0.80, 32: 0.90, 52: 0.92}


def study_with_best(direction: str = "maximize", curve: dict[int, float] | None = None) -> optuna.Study:
    """A study whose one complete trial reported ``curve`` (maximize) or its mirror image (minimize)."""
    sign = 1 if direction == "maximize" else -1
    pruner = IncumbentPruner(optuna.pruners.NopPruner(), steps=[16, 32], margin=0.01)
    study = optuna.create_study(direction=direction, pruner=pruner)
    best = study.ask()
    for step, value in (curve or BEST_CURVE).items():
        best.report(sign * value, step)
    study.tell(best, sign * 0.92)
    return study


def report_until(study: optuna.Study, values: dict[int, float]) -> bool:
    """A new trial reports ``values``; whether the study's pruner stops it at the last of them."""
    sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
    trial = study.ask()
    for step, value in values.items():
        trial.report(sign * value, step)
    return trial.should_prune()


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_trial_more_than_margin_behind_the_best_at_a_checked_step_stops(direction):
    study = study_with_best(direction)
    assert report_until(study, {4: 0.6, 16: 0.785})  # 0.015 behind at step 16
    assert not report_until(study, {4: 0.6, 16: 0.795})  # 0.005 behind: within the margin
    assert not report_until(study, {4: 0.6, 16: 0.81})  # ahead
    assert report_until(study, {16: 0.8, 32: 0.85})  # behind at the second checked step


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_the_best_is_the_best_complete_trial_wherever_it_stands(direction):
    sign = 1 if direction == "maximize" else -1
    study = optuna.create_study(direction=direction, pruner=IncumbentPruner(optuna.pruners.NopPruner(), [16]))
    for at_16, final in ((0.5, 0.6), (0.9, 0.95), (0.7, 0.8)):  # the best is the middle one
        trial = study.ask()
        trial.report(sign * at_16, 16)
        study.tell(trial, sign * final)
    assert report_until(study, {16: 0.85})  # ahead of the first and last, behind the best
    assert not report_until(study, {16: 0.9})


def test_the_wrapped_pruner_is_asked_even_when_the_trial_is_behind():
    asked: list[int] = []

    class Recording(optuna.pruners.NopPruner):
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            asked.append(trial.last_step)  # successive halving records its rungs when asked
            return False

    study = optuna.create_study(direction="maximize", pruner=IncumbentPruner(Recording(), [16]))
    best = study.ask()
    best.report(0.9, 16)
    study.tell(best, 0.9)
    asked.clear()
    assert report_until(study, {16: 0.1})
    assert asked == [16]


def test_steps_not_listed_and_steps_the_best_did_not_report_are_left_to_the_wrapped_pruner():
    study = study_with_best()
    assert not report_until(study, {4: 0.1})  # far behind, but step 4 is not checked
    assert not report_until(study, {17: 0.1})
    study = study_with_best(curve={4: 0.5, 52: 0.92})  # the best trial reported no step 16
    assert not report_until(study, {16: 0.1})


def test_before_any_trial_completes_nothing_is_stopped():
    study = optuna.create_study(direction="maximize", pruner=IncumbentPruner(optuna.pruners.NopPruner(), [16]))
    pruned = study.ask()
    pruned.report(0.9, 16)
    study.tell(pruned, state=TrialState.PRUNED)  # a pruned trial is not an incumbent
    assert not report_until(study, {16: 0.1})


def test_once_max_complete_trials_have_completed_only_the_wrapped_pruner_decides():
    study = optuna.create_study(
        direction="maximize", pruner=IncumbentPruner(optuna.pruners.NopPruner(), [16], max_complete_trials=2)
    )
    assert not report_until(study, {16: 0.8})  # nothing has completed
    study.tell(study.trials[-1].number, 0.8)
    assert report_until(study, {16: 0.7})  # behind the first
    study.tell(study.trials[-1].number, 0.7)  # completed anyway
    assert not report_until(study, {16: 0.1})  # two have completed: far behind, but no longer stopped


def test_what_the_wrapped_pruner_stops_stays_stopped():
    always = optuna.pruners.ThresholdPruner(lower=2.0)  # every value is below 2
    study = optuna.create_study(direction="maximize", pruner=IncumbentPruner(always, [16], margin=0.5))
    assert report_until(study, {3: 0.9})


@pytest.mark.parametrize(
    ("steps", "margin", "message"),
    [
        ([], 0.0, "steps is []; allowed: a non-empty list of positive whole numbers"),
        ([16, 0], 0.0, "steps is [16, 0]; allowed"),
        ([16.5], 0.0, "steps is [16.5]; allowed"),
        ([16], -0.1, "margin is -0.1; allowed: a number >= 0"),
        ([16], float("nan"), "margin is nan; allowed"),
        (16, 0.0, "steps is 16; allowed"),
        ("16", 0.0, "steps is '16'; allowed"),
        ([16], None, "margin is None; allowed"),
        ([16], "abc", "margin is 'abc'; allowed"),
    ],
)
def test_bad_settings_are_refused_with_what_is_allowed(steps, margin, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        IncumbentPruner(optuna.pruners.NopPruner(), steps, margin)


@pytest.mark.parametrize("max_complete_trials", [0, -1, 2.5, "10", True])
def test_a_bad_limit_on_complete_trials_is_refused_with_what_is_allowed(max_complete_trials):
    with pytest.raises(ValueError, match=r"max_complete_trials is .*; allowed: a positive whole number or null"):
        IncumbentPruner(optuna.pruners.NopPruner(), [16], max_complete_trials=max_complete_trials)
