"""The incumbent pruner: what it stops on top of the pruner it wraps, in both directions, at steps relative to the
training's length and with a margin relative to the spread of the values."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

import hps
from hps.search.components import build
from hps.search.pruners import IncumbentPruner
from tests.conftest import composed

BEST_CURVE = {4: 0.50, 16: 0.80, 32: 0.90, 52: 0.92}  # a 52-step training: 0.3 and 0.6 of it are steps 16 and 32
# two stopped trials around the best: the values at step 16 have a standard deviation of 0.1, at step 32 of 0.05
OTHERS = ({16: 0.70, 32: 0.85}, {16: 0.90, 32: 0.95})


def study_with_best(
    direction: str = "maximize", curve: dict[int, float] | None = None, scale: float = 1.0, **settings
) -> optuna.Study:
    """A study whose one complete trial reported ``curve``, beside two pruned trials (:data:`OTHERS`), all times
    ``scale``, mirrored for minimize; the pruner compares at 0.3 and 0.6 of the training with a margin of 0.1."""
    sign = scale if direction == "maximize" else -scale
    pruner = IncumbentPruner(optuna.pruners.NopPruner(), **({"steps": [0.3, 0.6], "margin": 0.1} | settings))
    study = optuna.create_study(direction=direction, pruner=pruner)
    for values in OTHERS:
        other = study.ask()
        for step, value in values.items():
            other.report(sign * value, step)
        study.tell(other, state=TrialState.PRUNED)
    best = study.ask()
    for step, value in (curve or BEST_CURVE).items():
        best.report(sign * value, step)
    study.tell(best, sign * 0.92)
    return study


def report_until(study: optuna.Study, values: dict[int, float], scale: float = 1.0) -> bool:
    """A new trial reports ``values`` times ``scale``; whether the study's pruner stops it at the last of them."""
    sign = scale if study.direction == optuna.study.StudyDirection.MAXIMIZE else -scale
    trial = study.ask()
    for step, value in values.items():
        trial.report(sign * value, step)
    return trial.should_prune()


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_trial_more_than_margin_behind_the_best_at_a_checked_step_stops(direction):
    study = study_with_best(direction)
    assert report_until(study, {4: 0.6, 16: 0.785})  # 0.015 behind at step 16, where the margin is 0.1 x 0.1
    assert not report_until(study, {4: 0.6, 16: 0.795})  # 0.005 behind: within the margin
    assert not report_until(study, {4: 0.6, 16: 0.81})  # ahead
    assert report_until(study, {16: 0.8, 32: 0.894})  # 0.006 behind at the second step, where the margin is 0.005
    assert not report_until(study, {16: 0.8, 32: 0.896})


@pytest.mark.parametrize("scale", [100.0, 0.01])
def test_the_margin_follows_the_spread_so_a_metric_in_percent_is_judged_alike(scale):
    study = study_with_best(scale=scale)
    assert report_until(study, {16: 0.785}, scale)
    assert not report_until(study, {16: 0.795}, scale)


@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        (range(1, 53), {16, 32}),  # lcbench: 52 epochs
        (range(1, 9), {3, 5}),  # 2 epochs of 4 evaluations
        (range(1, 25), {8, 15}),  # 6 epochs of 4 evaluations
        (range(100, 1001, 100), {300, 600}),  # every 100 optimisation steps
        ([], set()),
    ],
)
def test_the_steps_compared_are_fractions_of_the_training_the_best_trial_reported(reported, expected):
    assert IncumbentPruner(optuna.pruners.NopPruner(), [0.3, 0.6]).comparison_steps(reported) == expected


def test_the_default_pruner_is_the_sweeps_successive_halving():
    pruner = hps.default_pruner()
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert (pruner._min_resource, pruner._reduction_factor, pruner._min_early_stopping_rate) == (2, 2, 1)


def test_the_shipped_incumbent_pruner_compares_late_in_a_fine_tuning_of_any_length_and_in_lcbench():
    pruner = build("pruner", composed("hydra/sweeper/pruner=incumbent").hydra.sweeper.pruner)
    assert isinstance(pruner, IncumbentPruner)
    assert pruner.comparison_steps(range(1, 9)) == {5}  # 2 epochs of 4 evaluations: where the rank is set
    assert pruner.comparison_steps(range(1, 41)) == {24}  # 10 epochs
    assert pruner.comparison_steps(range(1, 53)) == {32}  # lcbench's 52 epochs


def test_a_short_training_is_compared_at_its_own_fractions():
    curve = {step: 0.1 * step for step in range(1, 9)}
    study = study_with_best(curve=curve, margin=0.0)  # compared at steps 3 and 5; no spread there but the best's
    for value in (0.1, 0.5):
        other = study.ask()
        other.report(value, 3)
        study.tell(other, state=TrialState.PRUNED)
    assert report_until(study, {1: 0.1, 2: 0.2, 3: 0.29})
    assert not report_until(study, {1: 0.1, 2: 0.2})  # step 2 is not compared
    assert not report_until(study, {3: 0.31})


def test_with_fewer_than_two_other_values_at_the_step_nothing_is_stopped():
    study = optuna.create_study(direction="maximize", pruner=IncumbentPruner(optuna.pruners.NopPruner(), [0.5]))
    best = study.ask()
    best.report(0.9, 2)
    best.report(0.95, 4)
    study.tell(best, 0.95)
    assert not report_until(study, {2: 0.1})  # one other value: no spread to measure the margin in
    assert report_until(study, {2: 0.1})  # the trial before it is the second


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_the_best_is_the_best_complete_trial_wherever_it_stands(direction):
    sign = 1 if direction == "maximize" else -1
    study = optuna.create_study(direction=direction, pruner=IncumbentPruner(optuna.pruners.NopPruner(), [0.5]))
    for at_16, final in ((0.5, 0.6), (0.9, 0.95), (0.7, 0.8)):  # the best is the middle one
        trial = study.ask()
        trial.report(sign * at_16, 16)
        trial.report(sign * final, 32)
        study.tell(trial, sign * final)
    assert report_until(study, {16: 0.85})  # ahead of the first and last, behind the best
    assert not report_until(study, {16: 0.9})


def test_the_wrapped_pruner_is_asked_even_when_the_trial_is_behind():
    asked: list[int] = []

    class Recording(optuna.pruners.NopPruner):
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            asked.append(trial.last_step)  # successive halving records its rungs when asked
            return False

    study = study_with_best()
    study.pruner._wrapped_pruner = Recording()
    asked.clear()
    assert report_until(study, {16: 0.1})
    assert asked == [16]


def test_steps_not_listed_and_steps_the_best_did_not_report_are_left_to_the_wrapped_pruner():
    study = study_with_best()
    assert not report_until(study, {4: 0.1})  # far behind, but step 4 is not checked
    assert not report_until(study, {17: 0.1})
    study = study_with_best(curve={4: 0.5, 20: 0.85, 52: 0.92})  # the best trial reported no step 16: compared at 20
    assert not report_until(study, {16: 0.1})


def test_before_any_trial_completes_nothing_is_stopped():
    study = optuna.create_study(direction="maximize", pruner=IncumbentPruner(optuna.pruners.NopPruner(), [0.5]))
    for value in (0.9, 0.8):
        pruned = study.ask()
        pruned.report(value, 16)
        study.tell(pruned, state=TrialState.PRUNED)  # a pruned trial is not an incumbent
    assert not report_until(study, {16: 0.1})


def test_once_max_complete_trials_have_completed_only_the_wrapped_pruner_decides():
    study = study_with_best(max_complete_trials=2)  # one complete trial
    assert report_until(study, {16: 0.7})  # behind it
    study.tell(study.trials[-1].number, 0.7)  # completed anyway
    assert not report_until(study, {16: 0.1})  # two have completed: far behind, but no longer stopped


def test_what_the_wrapped_pruner_stops_stays_stopped():
    always = optuna.pruners.ThresholdPruner(lower=2.0)  # every value is below 2
    study = optuna.create_study(direction="maximize", pruner=IncumbentPruner(always, [0.5], margin=0.5))
    assert report_until(study, {3: 0.9})


@pytest.mark.parametrize(
    ("steps", "margin", "message"),
    [
        ([], 0.0, "steps is []; allowed: a non-empty list of fractions of the training, each above 0 and below 1"),
        ([16, 32], 0.0, "steps is [16, 32]; allowed"),  # lcbench's epochs, before steps were fractions
        ([0.5, 0], 0.0, "steps is [0.5, 0]; allowed"),
        ([1], 0.0, "steps is [1]; allowed"),
        ([True], 0.0, "steps is [True]; allowed"),
        (0.5, 0.0, "steps is 0.5; allowed"),
        ("0.5", 0.0, "steps is '0.5'; allowed"),
        ([0.5], -0.1, "margin is -0.1; allowed: a number >= 0, in standard deviations"),
        ([0.5], float("nan"), "margin is nan; allowed"),
        ([0.5], None, "margin is None; allowed"),
        ([0.5], "abc", "margin is 'abc'; allowed"),
    ],
)
def test_bad_settings_are_refused_with_what_is_allowed(steps, margin, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        IncumbentPruner(optuna.pruners.NopPruner(), steps, margin)


@pytest.mark.parametrize("max_complete_trials", [0, -1, 2.5, "10", True])
def test_a_bad_limit_on_complete_trials_is_refused_with_what_is_allowed(max_complete_trials):
    with pytest.raises(ValueError, match=r"max_complete_trials is .*; allowed: a positive whole number or null"):
        IncumbentPruner(optuna.pruners.NopPruner(), [0.5], max_complete_trials=max_complete_trials)
