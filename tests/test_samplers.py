"""Our samplers: the focused TPE (Optuna's TPE until its good group passes a limit), the GP fitted to pruned trials,
and seeded samplers that draw each trial from its own seed."""

from __future__ import annotations

import optuna
import pytest
from hydra.utils import instantiate
from optuna.samplers._tpe.sampler import default_gamma  # Optuna's rule, not public
from optuna.trial import TrialState

from hps.search.components import build_sampler
from hps.search.samplers import FocusedTPESampler, PruningAwareGPSampler, good_group_size, trial_seed
from tests.conftest import composed
from tests.test_configs import options


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


SPACE = {
    "x": optuna.distributions.FloatDistribution(-5, 5),
    "y": optuna.distributions.FloatDistribution(1e-3, 1, log=True),
    "k": optuna.distributions.IntDistribution(1, 64),
}


def parameter_sets(sampler_name: str, build) -> list[tuple]:
    """Two workers sharing a study from its start, then a resumed run; each process builds its own sampler."""
    config = composed(f"hydra/sweeper/sampler={sampler_name}", "hydra.sweeper.sampler.seed=0").hydra.sweeper.sampler
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(storage=storage, study_name="s")
    workers = [optuna.load_study(storage=storage, study_name="s", sampler=build(config)) for _ in range(2)]
    for _ in range(4):  # each asks while the other's trial runs, as two processes do
        running = [(study, study.ask(SPACE)) for study in workers]
        for study, trial in running:
            study.tell(trial, trial.params["x"] ** 2 + trial.params["y"])
    resumed = optuna.load_study(storage=storage, study_name="s", sampler=build(config))
    for _ in range(4):
        trial = resumed.ask(SPACE)
        resumed.tell(trial, trial.params["x"] ** 2 + trial.params["y"])
    return [tuple(sorted(t.params.items())) for t in resumed.trials]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("sampler_name", options("hydra/sweeper/sampler"))
def test_a_seeded_sampler_repeats_no_parameter_set_across_workers_or_on_resume(sampler_name):
    points = parameter_sets(sampler_name, build_sampler)
    assert len(points) == 12 and len(set(points)) == 12


def test_one_seed_per_process_would_repeat_them():  # what the test above guards against
    points = parameter_sets("random", instantiate)
    assert len(set(points)) == 4


def test_a_seeded_study_is_reproducible():
    assert parameter_sets("tpe", build_sampler) == parameter_sets("tpe", build_sampler)


def test_the_trial_seeds_differ_by_trial_and_by_study_seed():
    seeds = {trial_seed(seed, number) for seed in range(3) for number in range(100)}
    assert len(seeds) == 300
