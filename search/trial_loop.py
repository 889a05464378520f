"""A prepared study's trials, run one at a time: ask, launch as a Hydra job, tell how it ended.

Each trial is an ordinary Hydra job, launched through the configured launcher with the trial's values as
overrides and ``trial={study, number}``, so that the job reports to its trial (:mod:`hps.search.trial`). Its
result, a pruning, or an exception is told back to the study. The loop ends when the budget, counted in the
storage, is spent; stops early when the first trials all fail alike (``fail_fast``); and, with other workers'
trials still running, waits in case one is lost and must run again here.
"""

from __future__ import annotations

import math
import shlex
import time
from pathlib import Path

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from optuna.trial import FrozenTrial, TrialState
from rich.markup import escape

from hps.search._compat import job_error
from hps.search.errors import ConfigError, failure_reason
from hps.search.heartbeats import Heartbeat
from hps.search.locks import budget_lock
from hps.search.notes import record_trial_note
from hps.search.preparation import StudyPlan
from hps.search.progress import StudyView, console, top_trials_table
from hps.search.reruns import requeue_interrupted
from hps.search.settings import SweeperSettings
from hps.search.signals import StopSignals
from hps.search.space import override_value
from hps.search.storage import FAIL_REASON, RetryLostTrial, default_storage, display_url, fail_lost_trials
from hps.search.study import (
    INTERRUPTED_REASON,
    RETRY_OF,
    budget_spent,
    counted_trials,
    fail_trial,
    repeated_failure,
)
from hps.search.workers import ask_within_budget, in_worker_pool, worker_name


class TrialLoop:
    """Runs the trials of prepared studies until each one's budget is spent.

    Args:
        settings: The sweeper's settings: budget, storage, heartbeats, ``fail_fast``, ``top_k``.
        launcher: The Hydra launcher that runs each trial's job.
        stop_signals: Ctrl-C and SIGTERM, checked after each job in case its code swallowed one.
        sweep_dir: ``hydra.sweep.dir``, under which each trial's job gets its own folder.
    """

    def __init__(
        self, settings: SweeperSettings, launcher: Launcher, stop_signals: StopSignals, sweep_dir: Path
    ) -> None:
        self.settings, self.launcher, self.stop_signals, self.sweep_dir = settings, launcher, stop_signals, sweep_dir

    def run(self, plan: StudyPlan) -> None:
        """Run the study's missing trials (interrupted ones again first), then show its best trials."""
        study, n_trials = plan.study, self.settings.n_trials
        with budget_lock(self.settings.storage, study.study_name):  # one worker requeues, not each
            requeued = requeue_interrupted(study, room=n_trials - budget_spent(study))
        done = counted_trials(study)
        console.print(
            f"study [bold]{escape(study.study_name)}[/] in {display_url(self.settings.storage)}: "
            f"{done} of {n_trials} trials done"
            + (f", re-running interrupted trial(s) {requeued}" if requeued else "")
            + (f" ({worker_name()})" if in_worker_pool() else ""),
            highlight=False,
        )
        first_number = len(study.get_trials(deepcopy=False))
        with StudyView(study, n_trials, done, plan.metric) as view:
            while True:
                self._stop_on_repeated_failure(study, first_number)
                trial = ask_within_budget(
                    study,
                    self.settings.storage,
                    n_trials,
                    plan.space.independent_distributions,
                    self.settings.heartbeat,
                    plan.space.suggest_dependent,
                )
                if trial is not None:
                    self._run_trial(plan, view, trial)
                elif not self._wait_for_other_workers(study, view):
                    break
        self._show_results(plan)

    def _show_results(self, plan: StudyPlan) -> None:
        """The table of the best trials, and the commands that look closer."""
        study, storage = plan.study, self.settings.storage
        console.print(top_trials_table(study, plan.metric, self.settings.top_k))
        name = shlex.quote(study.study_name)
        console.print(
            f"look closer: hps dashboard · hps report --study {name} · hps export --study {name}"
            + ("" if storage == default_storage() else f" (each with --storage {display_url(storage)})"),
            highlight=False,
            markup=False,
        )

    def _stop_on_repeated_failure(self, study: optuna.Study, first_number: int) -> None:
        """Stop the sweep when the first ``fail_fast`` trials it ran all failed with one reason: the rest would too."""
        fail_fast = self.settings.fail_fast
        reason = repeated_failure(study, first_number, fail_fast) if fail_fast else None
        if reason is not None:
            raise ConfigError(
                f"the first {fail_fast} trials of study {study.study_name!r} all failed alike ({reason}); "
                "the sweep stopped instead of spending its budget on it (each trial's log is in its folder; "
                "hydra.sweeper.fail_fast=null runs on)"
            )

    def _wait_for_other_workers(self, study: optuna.Study, view: StudyView) -> bool:
        """With the budget spent, wait while other workers' trials run, in case one is lost and must run again.

        Returns True when a trial may be waiting to run here (a re-run was queued), False when this worker is
        done: nothing runs elsewhere, or heartbeats are off (a lost trial would never be noticed). A trial whose
        worker died stops beating and is failed after ``grace_period``, so the wait always ends.
        """
        heartbeat = self.settings.heartbeat
        if heartbeat is None:
            return False
        while True:
            fail_lost_trials(study)
            if budget_spent(study) < self.settings.n_trials:
                return True
            running = [t.number for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
            if not running:
                return False
            view.waiting(running)
            time.sleep(min(heartbeat.interval, 5))

    def _run_trial(self, plan: StudyPlan, view: StudyView, trial: optuna.Trial) -> None:
        """Run the trial as a Hydra job while its heartbeat beats; tell the study how it ended."""
        study, heartbeat = plan.study, self.settings.heartbeat
        overrides = [
            *plan.experiment.overrides,
            *plan.space.overrides(trial.params),
            f"++trial={{study:{override_value(study.study_name)},number:{trial.number}}}",
            f"hydra.sweep.subdir={override_value(self._trial_subdir(study.study_name, trial.number))}",
        ]
        try:
            with Heartbeat(trial, heartbeat):
                (result,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
            self.stop_signals.raise_if_received()  # the job caught the interrupt, or raised another error in its place
            frozen, note = _tell(study, trial, result)
        except KeyboardInterrupt:
            fail_trial(study, trial, INTERRUPTED_REASON, interrupted=True)
            view.progress.stop()
            console.print(f"trial {trial.number} stored as FAIL (interrupted); a resumed study re-runs it first")
            raise
        except Exception as error:
            reason = lost_job_reason(error)
            if reason is None:  # the launcher itself broke: no trial is left RUNNING
                fail_trial(study, trial, failure_reason(error))
                raise
            # The job's process died (killed, out of memory or time, its node lost): like a lost worker's trial,
            # it is failed and queued again with the same parameters (max_retry times), and the sweep goes on.
            frozen, note = fail_trial(study, trial, reason), reason
            if frozen.user_attrs.get(FAIL_REASON) == reason:  # not failed (and re-queued) by another worker first
                RetryLostTrial(heartbeat.max_retry if heartbeat is not None else 1)(study, frozen)
        retry_of = frozen.user_attrs.get(RETRY_OF)
        if retry_of is not None:
            note = f"(re-run of trial {retry_of}) {note}"
        record_trial_note(study, frozen, plan.metric)
        view.trial_finished(frozen, counted_trials(study), note)

    def _trial_subdir(self, study_name: str, number: int) -> str:
        """``<study>/trial_<n>``, suffixed if a folder of that name is left from an earlier database."""
        candidate = f"{study_name}/trial_{number}"
        suffix = 1
        while (self.sweep_dir / candidate).exists():
            suffix += 1
            candidate = f"{study_name}/trial_{number}.{suffix}"
        return candidate


def _tell(study: optuna.Study, trial: optuna.Trial, result: JobReturn) -> tuple[FrozenTrial, str]:
    """Store the job's outcome (a finite value, a pruning, or a failure and why); returns the finished trial and a
    note for its progress line."""
    if result.status != JobStatus.COMPLETED:
        error = job_error(result)
        if isinstance(error, optuna.TrialPruned):
            return study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True), str(error)
        reason = failure_reason(error)
        return fail_trial(study, trial, reason), reason
    value = result.return_value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        reason = f"the task returned {value!r}, not a finite number"
        return fail_trial(study, trial, reason), reason
    return study.tell(trial, float(value), skip_if_finished=True), ""


def lost_job_reason(error: Exception) -> str | None:
    """The fail reason when the launcher says the job ended without a result; None for any other error.

    Submitit (``hydra/launcher=submitit_local`` / ``submitit_slurm``) raises ``UncompletedJobError`` for a job
    that wrote no result: its process was killed (``kill -9``, out of memory, a scheduler's cancel or time
    limit) or its node was lost. ``FailedJobError``, its subclass, is the job's own code raising: not lost.

    Args:
        error: What the launcher raised.
    """
    try:
        from submitit.core.utils import FailedJobError, UncompletedJobError
    except ImportError:
        return None
    if not isinstance(error, UncompletedJobError) or isinstance(error, FailedJobError):
        return None
    said = " ".join(str(error).splitlines()[:2])  # Job <id> (task: 0) with path <result> has not produced ...
    return f"lost: its job ended without a result (killed, out of memory or time, or its node lost): {said}"
