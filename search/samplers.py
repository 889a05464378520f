"""Samplers of our own, on Optuna's sampler interface.

:class:`PruningAwareGPSampler` is the default's sampler and :class:`FocusedTPESampler` the ``tpe`` sampler; why each
is set as it is, measured: benchmarks/RESULTS.md, "Search quality".
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hps.search._compat import StudyWithTrials
from hps.search.errors import is_whole_number


class FocusedTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE with at most ``max_good_trials`` trials in its good group (Optuna's limit is 25).

    TPE splits the finished trials into a good group (the best 10%) and the rest, and samples where the good
    group is dense and the rest is not. Pruned trials count as finished, so under a pruner the group grows faster
    than the complete trials and fills with trials that never finished; a lower limit keeps TPE sampling around
    the best few once a study is long (benchmarks/RESULTS.md, "A limit on TPE's good group"). Up to
    ``10 * max_good_trials`` finished trials it samples exactly as Optuna's TPE (for a single objective, as the
    platform's studies have, and a limit of at most 25).

    Example:

        .. code-block:: python

            import optuna
            from hps.search.samplers import FocusedTPESampler

            study = optuna.create_study(sampler=FocusedTPESampler(max_good_trials=10, seed=0))
            study.optimize(lambda trial: (trial.suggest_float("x", -3, 3) - 1) ** 2, n_trials=20)

    Args:
        max_good_trials: The most trials TPE's good group holds; lower focuses a long study on its best few.
        tpe_arguments: Any other argument of ``TPESampler``, but ``gamma``, which ``max_good_trials`` sets.
    """

    def __init__(self, *, max_good_trials: int = 25, **tpe_arguments: Any) -> None:
        if not is_whole_number(max_good_trials, 1):
            raise ValueError(f"max_good_trials is {max_good_trials!r}; allowed: a whole number >= 1")
        if "gamma" in tpe_arguments:
            raise ValueError("gamma is not an argument of FocusedTPESampler; allowed: max_good_trials, its limit")
        with warnings.catch_warnings():
            # Optuna 4.9 deprecated `gamma` for removal in 6.0 (pyproject: optuna<6); once removed, this raises.
            warnings.filterwarnings("ignore", message="`gamma` has been deprecated", category=FutureWarning)
            super().__init__(gamma=functools.partial(good_group_size, limit=max_good_trials), **tpe_arguments)


def good_group_size(finished_trials: int, limit: int) -> int:
    """Optuna's size of TPE's good group, 10% of the finished trials rounded up, but at most ``limit``.

    Args:
        finished_trials: The trials TPE splits (complete and pruned).
        limit: ``max_good_trials`` of :class:`FocusedTPESampler`.
    """
    return min(math.ceil(0.1 * finished_trials), limit)


class PruningAwareGPSampler(optuna.samplers.GPSampler):
    """Optuna's Gaussian-process sampler, fitted also to pruned trials, each at the last value it reported.

    ``GPSampler`` fits only complete trials. Under a pruner most trials end pruned, so it learns nothing from them:
    it samples at random until ``n_startup_trials`` trials have completed, and afterwards proposes again the region
    the pruner keeps stopping. Here a pruned trial is an observation of its last reported value, which understates
    where its curve would have ended, much as TPE ranks pruned trials below complete ones. Without pruned trials it
    samples exactly as ``GPSampler``. Chosen as the default on learning-curve benchmarks: benchmarks/RESULTS.md,
    "The default: a Gaussian process that learns from pruned trials".

    Example:

        .. code-block:: python

            import optuna
            from hps.search.samplers import PruningAwareGPSampler


            def objective(trial):
                x = trial.suggest_float("x", -3, 3)
                for step in range(4):
                    trial.report((x - 1) ** 2 + 1 / (step + 1), step)
                    if trial.should_prune():
                        raise optuna.TrialPruned()
                return (x - 1) ** 2


            study = optuna.create_study(sampler=PruningAwareGPSampler(seed=0), pruner=optuna.pruners.MedianPruner())
            study.optimize(objective, n_trials=15)

    Args are ``GPSampler``'s (``n_startup_trials``, ``seed``, ...).
    """

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, optuna.distributions.BaseDistribution]
    ) -> dict[str, Any]:
        return super().sample_relative(StudyWithTrials(study, _pruned_as_complete), trial, search_space)  # type: ignore[arg-type]


def _pruned_as_complete(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Pruned trials as complete at their last value; those that reported nothing finite left out."""
    seen = [_completed_at_last_value(t) if t.state == TrialState.PRUNED else t for t in trials]
    return [t for t in seen if t is not None]


def _completed_at_last_value(trial: FrozenTrial) -> FrozenTrial | None:
    last = trial.intermediate_values.get(trial.last_step) if trial.last_step is not None else None
    if last is None or not math.isfinite(last):
        return None
    return optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=last, params=trial.params, distributions=trial.distributions
    )


def seeded_per_trial(build: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> optuna.samplers.BaseSampler:
    """The sampler ``build(seed)``, made to draw each trial from a seed derived from ``seed`` and the trial's number.

    A seeded sampler starts every process from the same random state, so each worker, and each resumed run of a
    study, proposes the same parameter sets again. Seeded per trial, trial n is drawn the same way in whichever
    process runs it and no two trials share a random stream: a seeded study is reproducible, not repetitive.
    Optuna's QMC sampler is returned as it is: its seed scrambles one sequence that every process must share, and
    it numbers its points in the study.

    Example:

        .. code-block:: python

            import optuna
            from hps.search.samplers import seeded_per_trial

            sampler = seeded_per_trial(lambda seed: optuna.samplers.RandomSampler(seed=seed), seed=0)
            study = optuna.create_study(sampler=sampler)
            study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=5)

    Args:
        build: Makes the sampler from a seed; called again before each trial with that trial's seed.
        seed: The study's seed, from which each trial's is derived (:func:`trial_seed`).
    """
    sampler = build(seed)
    return sampler if isinstance(sampler, optuna.samplers.QMCSampler) else _SeededPerTrial(build, seed)


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number`` in a study seeded with ``seed``: independent streams for every pair.

    Args:
        seed: The study's seed.
        number: The trial's number in its study, the same in whichever worker runs it.
    """
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class _SeededPerTrial(optuna.samplers.BaseSampler):
    """Delegates to a sampler rebuilt before each trial with :func:`trial_seed` (see :func:`seeded_per_trial`).

    Optuna's samplers keep what they learn in the study, not in the sampler, so a rebuilt one loses nothing but
    caches; CMA-ES restores its state from the study's trials.
    """

    def __init__(self, build: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._build, self._seed = build, seed
        self._sampler = build(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._sampler = self._build(trial_seed(self._seed, trial.number))
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, optuna.distributions.BaseDistribution]
    ) -> dict[str, Any]:
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: list[float] | None
    ) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()
