"""Creating and resuming studies: what a study promises, and how much of its budget is spent.

A study is created once and resumed by running the same command again. What it optimises is stored with it
(direction, metric name and the objective's identity, such as dataset and model) and a resume that would mix
in trials of another objective is refused. ``n_trials`` is the total the study should hold, not the number
to add, so a resumed sweep runs only what is missing. A trial stopped by Ctrl-C is stored as FAIL marked
``interrupted``, does not count against the budget, and is queued again with the same parameters on resume;
so is a trial whose worker died (:class:`search.storage.RetryLostTrial`).
A new study can be warm-started from the best trials of an earlier one (:func:`warm_start`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from search.errors import ConfigError
from search.space import SearchSpace
from search.storage import RETRY_OF, display_url, open_storage

FAIL_REASON = "fail_reason"
INTERRUPTED = "interrupted"
INTERRUPTED_REASON = "interrupted (Ctrl-C or SIGTERM)"
WARM_START_FROM = "warm_start_from"
IDENTITY = "objective_identity"
DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class StudySpec:
    """What a study optimises: stored at creation, checked on every resume."""

    name: str
    direction: str
    metric: str
    identity: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"objective.direction is {self.direction!r}; allowed: {', '.join(DIRECTIONS)}")


def open_study(
    storage: optuna.storages.BaseStorage,
    url: str,
    spec: StudySpec,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Create the study, or load it and check that it optimises what ``spec`` says."""
    exists = spec.name in optuna.get_all_study_names(storage)
    study = optuna.create_study(
        storage=storage,
        study_name=spec.name,
        sampler=sampler,
        pruner=pruner,
        direction=spec.direction,
        load_if_exists=True,
    )
    if not exists:
        with warnings.catch_warnings():  # metric names are experimental in Optuna, and what the dashboard shows
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([spec.metric])
        study.set_user_attr(IDENTITY, dict(spec.identity))
        return study
    where = f"study {spec.name!r} in {display_url(url)}"
    hint = "run it with the same settings, or start a new study with hydra.sweeper.study_name=NEW_NAME"
    stored_direction = study.direction.name.lower()
    if stored_direction != spec.direction:
        raise ConfigError(f"{where} has direction {stored_direction}, not {spec.direction}; {hint}")
    stored_metric = (study.metric_names or [None])[0]
    if stored_metric != spec.metric:
        raise ConfigError(f"{where} optimises metric {stored_metric!r}, not {spec.metric!r}; {hint}")
    stored_identity = study.user_attrs.get(IDENTITY, {})
    for key, value in spec.identity.items():
        if key in stored_identity and stored_identity[key] != value:
            raise ConfigError(f"{where} was created for {key}={stored_identity[key]!r}, not {value!r}; {hint}")
    return study


def study_names(url: str) -> list[str]:
    """The names of the studies in the storage at ``url``, oldest first; refuses an empty storage."""
    studies = sorted(open_storage(url, create=False).get_all_studies(), key=lambda s: s._study_id)
    if not studies:
        raise ConfigError(f"storage {display_url(url)!r} holds no study yet; run a sweep first (-m)")
    return [s.study_name for s in studies]


def load_study(url: str, study_name: str | None) -> optuna.Study:
    """The named study, or the newest one in the storage when ``study_name`` is None."""
    names = study_names(url)
    if study_name is None:
        study_name = names[-1]
    elif study_name not in names:
        raise ConfigError(f"no study {study_name!r} in {display_url(url)}; it holds: {', '.join(names)}")
    return optuna.load_study(study_name=study_name, storage=open_storage(url, create=False))


def counted_trials(study: optuna.Study) -> int:
    """Finished trials that spend the budget: complete, pruned and failed, except failed trials that are run
    again (interrupted by Ctrl-C, or lost with their worker and retried)."""
    return _counted(study.get_trials(deepcopy=False))


def budget_spent(study: optuna.Study) -> int:
    """Trials that spend the budget, finished (:func:`counted_trials`) or running now in any worker."""
    trials = study.get_trials(deepcopy=False)
    return _counted(trials) + sum(t.state == TrialState.RUNNING for t in trials)


def _counted(trials: list[optuna.trial.FrozenTrial]) -> int:
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED) and t.number not in retried)
        for t in trials
    )


def requeue_interrupted(study: optuna.Study, room: int) -> list[int]:
    """Queue each interrupted trial's parameters again (once), as far as ``room`` (the trials the budget still
    allows, less those already queued) goes; returns the numbers requeued.

    Other workers may have spent the budget while a trial stood interrupted: a re-run queued then would wait
    forever, so it is not queued.
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


def fail_trial(
    study: optuna.Study, trial: optuna.Trial, reason: str, *, interrupted: bool = False
) -> optuna.trial.FrozenTrial:
    """Store ``trial`` as FAIL with its reason, and whether it was interrupted (a resumed study re-runs it).

    A trial that already finished is left as it is: a worker whose heartbeat came late (a suspended laptop)
    finds its trial failed as lost and re-run elsewhere.
    """
    try:
        trial.set_user_attr(FAIL_REASON, reason)
        if interrupted:
            trial.set_user_attr(INTERRUPTED, True)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
    return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def state_counts(study: optuna.Study) -> dict[str, int]:
    """How many trials are complete, pruned and failed."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
    }


def ranked_complete_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The complete trials of a single-objective study, best first."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    return sorted(complete, key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)


def warm_start(study: optuna.Study, source: optuna.Study, top_k: int, space: SearchSpace) -> list[str]:
    """Queue the ``top_k`` best complete trials of ``source`` as the first trials of a new ``study``.

    Each keeps the values that fit ``space`` (the sampler fills in the rest) and records where it came from in
    ``user_attrs.warm_start_from`` (``study#trial``). A study that already has trials is left alone, so a
    resumed warm-started study is not seeded twice. Returns the origins queued.
    """
    if study.get_trials(deepcopy=False):
        return []
    origins = []
    for trial in ranked_complete_trials(source)[:top_k]:
        origin = f"{source.study_name}#{trial.number}"
        params = {name: value for name, value in trial.params.items() if space.admits(name, value)}
        study.enqueue_trial(params, user_attrs={WARM_START_FROM: origin})
        origins.append(origin)
    return origins
