"""Our samplers: the focused TPE (Optuna's TPE until its good group passes a limit), the GP fitted to pruned trials."""

from __future__ import annotations

import optuna
import pytest
from optuna.samplers._tpe.sampler import default_gamma  # Optuna's rule, not public
from optuna.trial import TrialState

from search.samplers import FocusedTPESampler, PruningAwareGPSampler, good_group_size


def sampled_points(sampler: optuna.samplers.BaseSampler, n_trials: int) -> list[float]:
    """The points a study samples, one trial after another, minimising a function with two valleys."""
    study = optuna.create_study(sampler=sampler)
    study.optimize(
        lambda trial: min(abs(trial.suggest_float("x", -10, 10) - 3), 0.5 + abs(trial.params["x"] + 6)),
        n_trials=n_trials,
    )
    return [trial.params["x"] for trial in study.trials]


def test_it_samples_as_optunas_tpe_until_ten_percent_of_the_finished_trials_passes_the_limit():
    optunas = sampled_points(optuna.samplers.TPESampler(n_startup_trials=3, seed=1), 45)
    focused = sampled_points(FocusedTPESampler(max_good_trials=3, n_startup_trials=3, seed=1), 45)
    # trial n is sampled from n finished trials: up to 30 the good group is 10% of them, from 31 on 3, not 4
    assert focused[:31] == optunas[:31]
    assert all(focused[n] != optunas[n] for n in range(31, 45))


def test_with_a_limit_of_25_the_good_group_is_optunas():
    assert [good_group_size(n, limit=25) for n in range(1000)] == [default_gamma(n) for n in range(1000)]


def test_the_good_group_is_ten_percent_rounded_up_at_most_the_limit():
    assert [good_group_size(n, limit=10) for n in (0, 1, 10, 11, 99, 100, 101, 280)] == [0, 1, 1, 2, 10, 10, 10, 10]


@pytest.mark.parametrize("max_good_trials", [0, -3, 2.5, "5", True, None])
def test_a_bad_limit_is_refused_with_what_is_allowed(max_good_trials):
    with pytest.raises(ValueError, match=r"max_good_trials is .*; allowed: a whole number >= 1"):
        FocusedTPESampler(max_good_trials=max_good_trials)


def test_gamma_is_refused_in_favour_of_the_limit():
    with pytest.raises(ValueError, match="gamma is not an argument of FocusedTPESampler; allowed: max_good_trials"):
        FocusedTPESampler(max_good_trials=10, gamma=lambda n: n)


X = optuna.distributions.FloatDistribution(0, 1)


def gp_proposals(sampler_class: type[optuna.samplers.GPSampler], seeds: range) -> list[float]:
    """The next x each seed's sampler proposes after one good complete trial at 0.2 and pruned trials from 0.5 up."""
    proposals = []
    for seed in seeds:
        study = optuna.create_study(direction="maximize", sampler=sampler_class(n_startup_trials=3, seed=seed))
        study.add_trial(optuna.trial.create_trial(params={"x": 0.2}, distributions={"x": X}, value=0.9))
        for x in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
            study.add_trial(
                optuna.trial.create_trial(
                    params={"x": x}, distributions={"x": X}, state=TrialState.PRUNED, intermediate_values={4: 0.1}
                )
            )
        proposals.append(study.ask({"x": X}).params["x"])
    return proposals


def test_the_gp_learns_from_pruned_trials_and_stays_away_from_where_they_were():
    # Optuna's GPSampler has one complete trial, below its 3 start-up trials, so it samples at random
    assert any(x > 0.45 for x in gp_proposals(optuna.samplers.GPSampler, range(8)))
    # ours fits the 6 pruned trials at their last value, 0.1, and proposes near the good trial
    assert all(x < 0.45 for x in gp_proposals(PruningAwareGPSampler, range(8)))


def test_without_pruned_trials_the_gp_samples_as_optunas():
    ours = sampled_points(PruningAwareGPSampler(n_startup_trials=3, seed=2), 8)
    assert ours == sampled_points(optuna.samplers.GPSampler(n_startup_trials=3, seed=2), 8)


def test_a_pruned_trial_that_reported_nan_is_left_out_of_the_fit():
    study = optuna.create_study(sampler=PruningAwareGPSampler(n_startup_trials=3, seed=0))
    for x, value in ((0.1, 1.0), (0.5, 0.2), (0.9, 0.7)):
        study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions={"x": X}, value=value))
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 0.3}, distributions={"x": X}, state=TrialState.PRUNED, intermediate_values={4: float("nan")}
        )
    )
    assert 0 <= study.ask({"x": X}).params["x"] <= 1  # fitted, a NaN value would raise
