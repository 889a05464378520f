"""Pruners of our own, on Optuna's pruner interface.

:class:`IncumbentPruner` is the default's pruner, around successive halving; why it is set as it is, measured:
benchmarks/RESULTS.md, "Appendix: how the pruner and TPE's settings were chosen".
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
    rung and train to the end without beating the best trial. Late in training a curve ranks its end well, so at
    ``steps`` a trial whose value is more than ``margin`` worse than the best complete trial's value at the same
    step stops. Measured on learning-curve benchmarks: benchmarks/RESULTS.md, "Why the pruner and TPE are set as
    they are".

    The comparison says most while the best trial is still ordinary: a trial behind it is then unlikely to be
    the best. Once the best is near the top of the space, trials that end above it are often a little behind it
    halfway, so after ``max_complete_trials`` complete trials only ``wrapped_pruner`` decides; so it does before
    the first trial completes, at steps the best trial did not report, and for NaN values.

    Example:

        .. code-block:: python

            import optuna
            from hps.search.pruners import IncumbentPruner


            def objective(trial):
                x = trial.suggest_float("x", 0, 1)
                for step in range(1, 9):
                    trial.report(x * step / 8, step)
                    if trial.should_prune():
                        raise optuna.TrialPruned()
                return x


            pruner = IncumbentPruner(optuna.pruners.SuccessiveHalvingPruner(), steps=[4, 8], margin=0.05)
            study = optuna.create_study(direction="maximize", pruner=pruner)
            study.optimize(objective, n_trials=20)

    Args:
        wrapped_pruner: The pruner asked first (successive halving in the default); what it stops, stops.
        steps: The steps at which a trial is also compared with the best complete trial: late ones, where a curve
            already ranks its end well.
        margin: How far behind the best trial, in the objective's units, a trial may be and go on; noise room.
        max_complete_trials: After this many complete trials only ``wrapped_pruner`` decides (``None``: never),
            since trials that end above a near-best trial are often a little behind it halfway.
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
        """Whether to stop ``trial`` at its last reported step (Optuna's pruner interface)."""
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
