"""Pruners of our own, on Optuna's pruner interface.

:class:`IncumbentPruner` is the default's pruner around successive halving (README, "Search quality").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hps.search.errors import is_whole_number


class IncumbentPruner(optuna.pruners.BasePruner):
    """Stop what ``wrapped_pruner`` stops, and at each of ``steps`` a trial behind the best complete trial there.

    Successive halving compares a trial only with the trials that reached the same rung before it. Once the
    sampler has narrowed in on a good region, most new trials are in the top half of that history, pass every
    rung and train to the end without beating the best trial: on lcbench this took 29% of the epochs of a budget
    of 10 full trainings. Late in training a curve ranks its end well (on lcbench, rank correlation with the final
    value 0.83 at step 16 and 0.94 at step 32, against 0.49 at step 4), so at those steps a trial whose value is
    more than ``margin`` worse than the best complete trial's value at the same step stops.

    The comparison says most while the best trial is still ordinary: a trial behind it is then unlikely to be
    the best. Once the best is near the top of the space, trials that end above it are often a little behind it
    halfway, so after ``max_complete_trials`` complete trials (``None``: never) only ``wrapped_pruner`` decides;
    so it does before the first trial completes, at steps the best trial did not report, and for NaN values.
    """

    def __init__(
        self,
        wrapped_pruner: optuna.pruners.BasePruner,
        steps: Sequence[int],
        margin: float = 0.0,
        max_complete_trials: int | None = None,
    ) -> None:
        if not _positive_whole_numbers(steps):
            raise ValueError(f"steps is {steps!r}; allowed: a non-empty list of positive whole numbers")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < math.inf:
            raise ValueError(f"margin is {margin!r}; allowed: a number >= 0, in the objective's units")
        if max_complete_trials is not None and not _positive_whole_numbers([max_complete_trials]):
            allowed = "a positive whole number or null"
            raise ValueError(f"max_complete_trials is {max_complete_trials!r}; allowed: {allowed}")
        self._wrapped_pruner, self._steps, self._margin = wrapped_pruner, frozenset(steps), float(margin)
        self._max_complete_trials = max_complete_trials

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if self._wrapped_pruner.prune(study, trial):  # always asked first: successive halving records rungs
            return True
        step = trial.last_step
        if step not in self._steps:
            return False
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete or (self._max_complete_trials is not None and len(complete) >= self._max_complete_trials):
            return False
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0  # larger sign * value is better
        best = max(complete, key=lambda t: sign * t.value)  # of equal values, the earliest trial
        if step not in best.intermediate_values:
            return False
        return sign * (trial.intermediate_values[step] - best.intermediate_values[step]) < -self._margin


def _positive_whole_numbers(values: object) -> bool:
    """Whether ``values`` is a non-empty sequence (a YAML list too) of whole numbers >= 1."""
    return (
        isinstance(values, Sequence)
        and not isinstance(values, str)
        and len(values) > 0
        and all(is_whole_number(v, 1) for v in values)
    )
