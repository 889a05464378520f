"""Trials that run again with parameters already known: interrupted ones on resume, and an earlier study's best.

A trial stopped by Ctrl-C or SIGTERM spends no budget and runs first when its study is resumed
(:func:`requeue_interrupted`); a new study can start from the best trials of an earlier one (:func:`warm_start`).
Both queue parameters with Optuna's ``enqueue_trial`` and mark the re-run with where it came from.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from hps.search.space import SearchSpace
from hps.search.study import INTERRUPTED, RETRY_OF, ranked_complete_trials

WARM_START_FROM = "warm_start_from"  # user attribute of a warm-start trial: study#trial it re-runs


def requeue_interrupted(study: optuna.Study, room: int) -> list[int]:
    """Queue each interrupted trial's parameters again (once), as far as ``room`` (the trials the budget still
    allows, less those already queued) goes; returns the numbers requeued.

    Other workers may have spent the budget while a trial stood interrupted: a re-run queued then would wait
    forever, so it is not queued.

    Args:
        study: The resumed study.
        room: The trials its budget still allows, so that no re-run is queued that would never run.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    room -= sum(t.state == TrialState.WAITING for t in trials)
    requeued = []
    for trial in trials:
        if len(requeued) >= room:
            break
        if trial.state == TrialState.FAIL and trial.user_attrs.get(INTERRUPTED) and trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
            requeued.append(trial.number)
    return requeued


def warm_start(study: optuna.Study, source: optuna.Study, top_k: int, space: SearchSpace) -> list[str]:
    """Queue the ``top_k`` best complete trials of ``source`` as the first trials of a new ``study``.

    Each keeps the values that fit ``space`` (the sampler fills in the rest) and records where it came from in
    ``user_attrs.warm_start_from`` (``study#trial``). A study that already has trials is left alone, so a
    resumed warm-started study is not seeded twice. Returns the origins queued.

    Args:
        study: The new study to seed.
        source: The earlier study whose best trials it re-runs first.
        top_k: How many of those trials.
        space: The new study's space: values outside it are left to the sampler.
    """
    if study.get_trials(deepcopy=False):
        return []
    origins = []
    for trial in ranked_complete_trials(source)[:top_k]:
        origin = f"{source.study_name}#{trial.number}"
        params = {name: value for name, value in trial.params.items() if space.admits(name, value, trial.params)}
        study.enqueue_trial(params, user_attrs={WARM_START_FROM: origin})
        origins.append(origin)
    return origins
