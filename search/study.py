"""Creating and resuming studies: what a study promises, and how much of its budget is spent.

A study is created once and resumed by running the same command again. What it optimises is stored with it
(direction, metric name and the objective's identity, such as dataset and model) and a resume that would mix
in trials of another objective is refused. ``n_trials`` is the total the study should hold, not the number
to add, so a resumed sweep runs only what is missing. A trial stopped by Ctrl-C is stored as FAIL marked
``interrupted``, does not count against the budget, and is queued again with the same parameters on resume;
so is a trial whose worker died (:class:`hps.search.storage.RetryLostTrial`); :mod:`hps.search.reruns` queues
the trials that run again.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from hps.search._compat import study_id
from hps.search.distributions import describe_json
from hps.search.errors import ConfigError
from hps.search.storage import FAIL_REASON, RETRY_OF, display_url, open_storage

INTERRUPTED = "interrupted"
INTERRUPTED_REASON = "interrupted (Ctrl-C or SIGTERM)"
IDENTITY = "objective_identity"
SEARCH_SPACE = "search_space"  # user attribute: {parameter name: {key, distribution as Optuna's JSON}}
DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class StudySpec:
    """What a study optimises: stored at creation, checked on every resume.

    Args:
        name: The study's name in its storage.
        direction: ``maximize`` or ``minimize``: a resume the other way would rank its trials backwards.
        metric: The metric's name, shown by the dashboard and checked on resume.
        identity: What must stay the same across resumes (dataset, model), so that trials stay comparable.
        space: The search space as :meth:`SearchSpace.as_json` gives it, checked on resume.
    """

    name: str
    direction: str
    metric: str
    identity: Mapping[str, str] = field(default_factory=dict)
    space: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # SearchSpace.as_json()

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"objective.direction is {self.direction!r}; allowed: {', '.join(DIRECTIONS)}")


def open_study(
    storage: optuna.storages.BaseStorage,
    url: str,
    spec: StudySpec,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    allow_space_change: bool = False,
) -> optuna.Study:
    """Create the study, or load it and check that it optimises what ``spec`` says, over the same search space.

    A study whose trials mix two search spaces is no longer a fair sample of either, so a changed space (a
    parameter added, dropped, or with other bounds, choices or key) is refused unless ``allow_space_change``,
    which stores the new space.

    Args:
        storage: The opened storage (:func:`hps.search.storage.open_storage`).
        url: Its URL, as the messages name it (the password masked).
        spec: What the study optimises, stored at creation and checked on resume.
        sampler: The sampler the study asks; not stored, so a resume may change it.
        pruner: The pruner the study's trials ask; not stored either.
        allow_space_change: Whether a resume may change the search space, mixing trials of two spaces.
    """
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
        study.set_user_attr(SEARCH_SPACE, dict(spec.space))
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
    stored_space = study.user_attrs.get(SEARCH_SPACE)
    change = None if stored_space is None else space_change(stored_space, spec.space)
    if change is not None and not allow_space_change:
        raise ConfigError(
            f"{where}: {change}; resume it with the same search space, start a new study with "
            "hydra.sweeper.study_name=NEW_NAME, or mix both spaces in it with hydra.sweeper.allow_space_change=true"
        )
    if stored_space != spec.space:  # changed on purpose, or a study stored before spaces were
        study.set_user_attr(SEARCH_SPACE, dict(spec.space))
    return study


def space_change(stored: Mapping[str, Mapping[str, str]], new: Mapping[str, Mapping[str, str]]) -> str | None:
    """The first difference between two :meth:`SearchSpace.as_json` spaces, in words; None when they are equal.

    Args:
        stored: The space the study's trials searched.
        new: The space a resume would search.
    """
    for name in [*stored, *(name for name in new if name not in stored)]:
        before, after = stored.get(name), new.get(name)
        if before == after:
            continue
        if after is None:
            return f"its trials searched parameter {name!r} ({describe_json(before)}), which the space now lacks"
        if before is None:
            return f"its trials did not search parameter {name!r} ({describe_json(after)}), which the space now adds"
        return f"its trials searched parameter {name!r} as {describe_json(before)}, not {describe_json(after)}"
    return None


def study_names(url: str) -> list[str]:
    """The names of the studies in the storage at ``url``, oldest first; refuses an empty storage."""
    studies = sorted(open_storage(url, create=False).get_all_studies(), key=study_id)
    if not studies:
        raise ConfigError(f"storage {display_url(url)!r} holds no study yet; run a sweep first (-m)")
    return [s.study_name for s in studies]


def load_study(url: str, study_name: str | None) -> optuna.Study:
    """The named study, or the newest one in the storage when ``study_name`` is None.

    Args:
        url: The storage's URL; a missing SQLite file is an error, not a new database.
        study_name: The study's name; None: the newest study, which is usually the one just run.
    """
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
    return len(_spending(trials))


def _spending(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The finished trials among ``trials`` that spend the budget (see :func:`counted_trials`)."""
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    return [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED) and t.number not in retried)
    ]


def fail_trial(
    study: optuna.Study, trial: optuna.Trial, reason: str, *, interrupted: bool = False
) -> optuna.trial.FrozenTrial:
    """Store ``trial`` as FAIL with its reason, and whether it was interrupted (a resumed study re-runs it).

    A trial that already finished is left as it is: a worker whose heartbeat came late (a suspended laptop)
    finds its trial failed as lost and re-run elsewhere.

    Args:
        study: The trial's study.
        trial: The running trial.
        reason: One line on why, stored as ``user_attrs.fail_reason`` and shown by reports and the dashboard.
        interrupted: Whether Ctrl-C or SIGTERM stopped it: such a trial spends no budget and runs again.
    """
    try:
        trial.set_user_attr(FAIL_REASON, reason)
        if interrupted:
            trial.set_user_attr(INTERRUPTED, True)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
    return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def state_counts(study: optuna.Study) -> dict[str, int]:
    """How many trials are complete, pruned, failed, and interrupted.

    Interrupted trials are stored as FAIL but did not fail of themselves: stopped by Ctrl-C or SIGTERM, or lost
    with their worker and run again. They spend no budget (:func:`counted_trials`), so "failed" is what does.
    """
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    complete, pruned = states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED)
    failed = _counted(trials) - complete - pruned
    interrupted = states.count(TrialState.FAIL) - failed
    return {"complete": complete, "pruned": pruned, "failed": failed, "interrupted": interrupted}


def ranked_complete_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The complete trials of a single-objective study, best first."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    return sorted(complete, key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)


def repeated_failure(study: optuna.Study, first_number: int, count: int) -> str | None:
    """The first reason, when the first ``count`` trials that ended from trial ``first_number`` on all failed alike.

    Alike: with the same reason but for its numbers (``loss became nan at step 4``, ``... at step 3``). Such a study
    would spend its whole budget on the same error (a bug in the task, a setting every trial shares). Interrupted
    trials and those whose worker was lost (run again) are no failures of their own.

    Args:
        study: The running study.
        first_number: The first trial this sweep ran: earlier runs' failures may have been fixed since.
        count: How many trials must have failed alike (``hydra.sweeper.fail_fast``).
    """
    ended = [t for t in _spending(study.get_trials(deepcopy=False)) if t.number >= first_number][:count]
    reasons = [t.user_attrs.get(FAIL_REASON) if t.state == TrialState.FAIL else None for t in ended]
    if len(ended) < count or reasons[0] is None:
        return None
    alike = {re.sub(r"\d+(\.\d+)?", "N", reason or "") for reason in reasons}
    return reasons[0] if len(alike) == 1 else None
