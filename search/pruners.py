"""Pruners of our own, on Optuna's pruner interface.

:class:`IncumbentPruner` wraps a pruner (successive halving in ``conf/hydra/sweeper/pruner/incumbent.yaml``) and
adds a stop behind the best complete trial late in training. It was the default until real fine-tuning curves showed
the stop costing regret; why it is set as it is, and why it is no longer the default, measured: benchmarks/RESULTS.md,
"Pruner settings relative to the training, chosen on both benchmarks" and "Fifty seeds".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hps.search.errors import is_whole_number


class IncumbentPruner(optuna.pruners.BasePruner):
    """Stop what ``wrapped_pruner`` stops, and, late in training, a trial well behind the best complete trial.

    Successive halving compares a trial only with the trials that reached the same rung before it. Once the
    sampler has narrowed in on a good region, most new trials are in the top half of that history, pass every
    rung and train to the end without beating the best trial. Late in training a curve ranks its end well, so at
    each fraction in ``steps`` of the training a trial whose value is more than ``margin`` behind the best
    complete trial's value at the same step stops.

    Both settings are relative, so that one setting fits a 2-epoch fine-tuning and a 50-epoch training, a metric
    in 0..1 and one in percent: the training's length is the last step the best complete trial reported (a
    fraction f stops at the first step it reported at or past f times that), and the margin is counted in
    standard deviations of the values that the other trials reported at that step. Measured on learning-curve
    benchmarks and real fine-tuning curves: benchmarks/RESULTS.md, "Search quality".

    The comparison says most while the best trial is still ordinary: a trial behind it is then unlikely to be
    the best. Once the best is near the top of the space, trials that end above it are often a little behind it
    halfway, so after ``max_complete_trials`` complete trials only ``wrapped_pruner`` decides; so it does before
    the first trial completes, while fewer than two other trials reported the step, and for NaN values.

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


            pruner = IncumbentPruner(optuna.pruners.SuccessiveHalvingPruner(), steps=[0.5, 0.75], margin=0.25)
            study = optuna.create_study(direction="maximize", pruner=pruner)
            study.optimize(objective, n_trials=20)

    Args:
        wrapped_pruner: The pruner asked first (successive halving in the default); what it stops, stops.
        steps: Fractions of the training, each above 0 and below 1, at which a trial is also compared with the best
            complete trial: late ones, where a curve already ranks its end well.
        margin: How far behind the best trial a trial may be and go on, in standard deviations of the other
            trials' values at that step; noise room.
        max_complete_trials: After this many complete trials only ``wrapped_pruner`` decides (``None``: never),
            since trials that end above a near-best trial are often a little behind it halfway.
    """

    def __init__(
        self,
        wrapped_pruner: optuna.pruners.BasePruner,
        steps: Sequence[float],
        margin: float = 0.0,
        max_complete_trials: int | None = None,
    ) -> None:
        if not _fractions(steps):
            allowed = "a non-empty list of fractions of the training, each above 0 and below 1"
            raise ValueError(f"steps is {steps!r}; allowed: {allowed}")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < math.inf:
            allowed = "a number >= 0, in standard deviations of the trials' values at a step"
            raise ValueError(f"margin is {margin!r}; allowed: {allowed}")
        if max_complete_trials is not None and not is_whole_number(max_complete_trials, 1):
            allowed = "a positive whole number or null"
            raise ValueError(f"max_complete_trials is {max_complete_trials!r}; allowed: {allowed}")
        self._wrapped_pruner, self._fractions, self._margin = wrapped_pruner, sorted(steps), float(margin)
        self._max_complete_trials = max_complete_trials

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """Whether to stop ``trial`` at its last reported step (Optuna's pruner interface)."""
        if self._wrapped_pruner.prune(study, trial):  # always asked first: successive halving records rungs
            return True
        step = trial.last_step
        if step is None or not math.isfinite(value := trial.intermediate_values[step]):
            return False
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete or (self._max_complete_trials is not None and len(complete) >= self._max_complete_trials):
            return False
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0  # larger sign * value is better
        best = max(complete, key=lambda t: sign * t.value)  # of equal values, the earliest trial
        if step not in self.comparison_steps(best.intermediate_values):
            return False
        others = [
            t.intermediate_values[step]
            for t in study.get_trials(deepcopy=False)
            if t.number != trial.number and math.isfinite(t.intermediate_values.get(step, math.nan))
        ]
        if len(others) < 2:
            return False
        return sign * (value - best.intermediate_values[step]) < -self._margin * statistics.stdev(others)

    def comparison_steps(self, reported: Iterable[int]) -> set[int]:
        """The steps at which trials are compared, given the steps a complete training ``reported``: for each
        fraction, the first of them at or past that fraction of the last."""
        ordered = sorted(reported)
        if not ordered:
            return set()
        return {next(s for s in ordered if s >= fraction * ordered[-1]) for fraction in self._fractions}


def _fractions(values: object) -> bool:
    """Whether ``values`` is a non-empty sequence (a YAML list too) of numbers above 0 and below 1."""
    return (
        isinstance(values, Sequence)
        and not isinstance(values, str)
        and len(values) > 0
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1 for v in values)
    )
