"""A Hydra sweeper that runs an Optuna study whose trials report, and are pruned, while they train.

``python -m hps.objectives.finetune -m`` (or ``hps-finetune -m``) hands the command line to
:meth:`PruningSweeper.sweep`, which

1. splits the command line: ``interval(...)`` overrides add search parameters, plain values fix keys, and
   comma lists / ``choice`` / ``range`` are *experiments*: one study per combination, named after what
   differs (``finetune-data=sst2``); a fixed or swept key leaves the search space;
2. for each experiment composes the task config, builds and checks its search space (every key must exist),
   runs the objective's preflight check (data, model, bounds), and creates or resumes its study, which
   records what it optimises; all of this for every experiment before the first trial runs;
3. asks Optuna for one trial at a time and launches it as an ordinary Hydra job through the configured
   launcher, with the trial's values as overrides and ``trial={study, number}`` so the job can report to its
   trial (:mod:`hps.search.trial`); the result, a pruning, or an exception is told back to the study.

Trials run one at a time per sweeper process and the budget is counted in the storage; Ctrl-C or SIGTERM
stores the running trial as FAIL marked interrupted, which a resumed study runs again first, and stops the
sweep, also when the trial's own code catches the interrupt (:class:`StopSignals`).
"""

from __future__ import annotations

import itertools
import math
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException, InstantiationException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState
from rich.markup import escape

from hps.search._compat import job_error
from hps.search.errors import ConfigError, exit_on_config_error, failure_reason, first_line, is_whole_number
from hps.search.notes import record_setup, record_trial_note, study_setup
from hps.search.progress import StudyView, console, top_trials_table
from hps.search.samplers import seeded_per_trial
from hps.search.space import (
    SearchSpace,
    override_value,
    parameter_from_override,
    parse_search_space,
    parse_sweeper_params,
)
from hps.search.storage import (
    FAIL_REASON,
    STORAGE_ENV,
    RetryLostTrial,
    default_storage,
    display_url,
    fail_lost_trials,
    has_password,
    open_storage,
)
from hps.search.study import (
    DIRECTIONS,
    INTERRUPTED_REASON,
    RETRY_OF,
    StudySpec,
    budget_spent,
    counted_trials,
    fail_trial,
    open_study,
    repeated_failure,
    requeue_interrupted,
    warm_start,
)
from hps.search.workers import (
    Heartbeat,
    LocalWorkers,
    ask_within_budget,
    budget_lock,
    check_worker_settings,
    heartbeat_settings,
    in_worker_pool,
    quiet_optuna_notices,
    worker_name,
)

EXIT_INTERRUPTED = 130

optuna.logging.set_verbosity(optuna.logging.WARNING)  # the study view replaces Optuna's per-trial log lines


@dataclass(frozen=True)
class Experiment:
    """One combination of the command line's experiment sweeps: its overrides and its study's name."""

    overrides: list[str]
    study_name: str


@dataclass(frozen=True)
class StudyPlan:
    """An experiment checked and ready to run: its study (created or resumed) and its search space."""

    experiment: Experiment
    study: optuna.Study
    space: SearchSpace
    metric: str


class PruningSweeper(Sweeper):
    """Runs pruned Optuna studies over Hydra jobs. Configured by ``conf/hydra/sweeper/hps.yaml``.

    ``direction`` and ``n_jobs`` keep their Hydra Optuna sweeper meaning: a direction overrides
    ``objective.direction``; ``n_jobs`` is the number of workers on this machine (this process and
    ``n_jobs - 1`` copies of the same command, :mod:`hps.search.workers`), each running one trial at a time;
    ``auto`` is one per visible GPU times ``trials_per_device`` (1 without a GPU), each on its own GPU.
    """

    def __init__(
        self,
        storage: str | None,
        n_trials: int,
        sampler: DictConfig,
        pruner: DictConfig,
        study_name: str | None = None,
        params: DictConfig | None = None,
        preflight: str | None = None,
        top_k: int = 10,
        direction: str | None = None,
        n_jobs: int | str = 1,
        trials_per_device: int = 1,
        warm_start: DictConfig | None = None,
        artifact_dir: str | None = None,
        heartbeat: DictConfig | None = None,
        fail_fast: int | None = 3,
        allow_space_change: bool = False,
    ) -> None:
        self.storage = storage
        self.artifact_dir = artifact_dir  # read by each trial's TrialLink
        self.heartbeat_config = heartbeat
        self.n_trials = n_trials
        self.sampler_config = sampler
        self.pruner_config = pruner
        self.study_name = study_name
        self.params = params
        self.preflight = preflight
        self.top_k = top_k
        self.direction = direction
        self.n_jobs = n_jobs
        self.trials_per_device = trials_per_device
        self.warm_start_config = warm_start
        self.fail_fast = fail_fast
        self.allow_space_change = allow_space_change

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        quiet_optuna_notices()  # here, not at import: Hydra imports plugins inside warnings.catch_warnings
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        try:
            with StopSignals() as self.stop_signals, exit_on_config_error():
                if not self.storage:
                    raise ConfigError(
                        "hydra.sweeper.storage is null; every study lives in a database: drop `storage: null` "
                        "for the default sqlite:///studies/hps.db, or give an SQLAlchemy URL"
                    )
                if not isinstance(self.n_trials, int) or self.n_trials < 1:
                    raise ConfigError(f"hydra.sweeper.n_trials is {self.n_trials!r}; it must be a positive integer")
                check_worker_settings(self.n_jobs, self.trials_per_device)
                if self.fail_fast is not None and not is_whole_number(self.fail_fast, 1):
                    raise ConfigError(
                        f"hydra.sweeper.fail_fast is {self.fail_fast!r}; allowed: a whole number >= 1, or null"
                    )
                if self.direction is not None and self.direction not in DIRECTIONS:
                    raise ConfigError(
                        f"hydra.sweeper.direction is {self.direction!r}; allowed: {', '.join(DIRECTIONS)} "
                        "(one objective: a study optimises one metric)"
                    )
                self.heartbeat = heartbeat_settings(self.heartbeat_config)
                written = OmegaConf.to_container(self.config.hydra.sweeper, resolve=False).get("storage")
                if has_password(str(written)):
                    console.print(
                        "warning: the storage URL's password is written to each trial's .hydra/ folder; put the "
                        f"URL in ${STORAGE_ENV}, or write hydra.sweeper.storage='${{oc.env:MY_VARIABLE}}'",
                        highlight=False,
                        markup=False,
                    )
                # Resolves n_jobs (auto) and sets this worker's CUDA_VISIBLE_DEVICES before a preflight may
                # initialise CUDA; the children start only once every experiment is checked (below).
                local_workers = LocalWorkers(
                    self.n_jobs, Path(str(self.config.hydra.sweep.dir)) / "workers", self.trials_per_device
                )
                experiments, command_line_space, fixed_keys = self._plan(arguments)
                # Check every experiment and its study before the first trial, so that bad input never waits
                # behind hours of work.
                plans = [self._prepare(experiment, command_line_space, fixed_keys) for experiment in experiments]
                with local_workers as workers:
                    for plan in plans:
                        self._run_study(plan)
                    workers.wait()
        except KeyboardInterrupt:
            console.print("interrupted: run the same command again to resume")
            raise SystemExit(EXIT_INTERRUPTED) from None

    def _plan(self, arguments: list[str]) -> tuple[list[Experiment], SearchSpace, set[str]]:
        """Split the command line into fixed overrides, search parameters and experiment combinations.

        A key that is fixed or swept as an experiment leaves the search space.
        """
        params_space, params_fixed = parse_sweeper_params(self.params)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        try:
            parsed = parser.parse_overrides(arguments)
        except HydraException as error:
            raise ConfigError(first_line(error)) from None
        fixed = [f"{key}={value}" for key, value in params_fixed.items()]
        fixed_keys, parameters, dimensions = set(params_fixed), [], []
        for override in parsed:
            key = override.get_key_element()
            if isinstance(override.value(), IntervalSweep):
                parameters.append(parameter_from_override(override))
                continue
            fixed_keys.add(key)
            if override.is_discrete_sweep():
                dimensions.append([f"{key}={value}" for value in override.sweep_string_iterator()])
            else:
                fixed.append(override.input_line)
        base_name = self.study_name or str(self.config.hydra.job.name)
        experiments = [
            Experiment(fixed + list(combination), "-".join([base_name, *combination]))
            for combination in itertools.product(*dimensions)
        ]
        return experiments, params_space.merged(SearchSpace(parameters)), fixed_keys

    def _compose(self, overrides: list[str]) -> DictConfig:
        try:
            return self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        except HydraException as error:
            raise ConfigError(first_line(error)) from None

    def _prepare(self, experiment: Experiment, command_line_space: SearchSpace, fixed_keys: set[str]) -> StudyPlan:
        """Compose the experiment, check its search space and input, then create or resume (and check) its study."""
        config = self._compose(experiment.overrides)
        space = parse_search_space(OmegaConf.to_container(config.get("search_space") or {}, resolve=True))
        space = space.merged(command_line_space).without_keys(fixed_keys)
        if not len(space):
            raise ConfigError("the search space is empty; choose one with search_space=NAME or hydra.sweeper.params")
        space.check_against(config)
        objective = config.get("objective")
        if objective is None or "metric" not in objective or "direction" not in objective:
            raise ConfigError("the task config needs an 'objective' node with 'metric' and 'direction'")
        spec = StudySpec(
            name=experiment.study_name,
            direction=str(self.direction or objective.direction),
            metric=str(objective.metric),
            identity={k: str(v) for k, v in (objective.get("identity") or {}).items()},
            space=space.as_json(),
        )
        if self.preflight:
            get_method(self.preflight)(config, space)
        sampler, pruner = build_sampler(self.sampler_config), _build("pruner", self.pruner_config)
        storage = open_storage(self.storage, heartbeat=self.heartbeat)
        study = open_study(storage, self.storage, spec, sampler, pruner, self.allow_space_change)
        setup = study_setup(
            spec, space, self.sampler_config, self.pruner_config, self.n_trials, display_url(self.storage)
        )
        record_setup(study, setup)
        if self.warm_start_config:
            self._warm_start(study, space)
        return StudyPlan(experiment, study, space, spec.metric)

    def _warm_start(self, study: optuna.Study, space: SearchSpace) -> None:
        """Seed a new study with the best trials of ``hydra.sweeper.warm_start.study``."""
        url = self.warm_start_config.get("storage") or self.storage
        name = self.warm_start_config.study
        if name not in optuna.get_all_study_names(open_storage(url)):
            raise ConfigError(f"hydra.sweeper.warm_start.study: no study {name!r} in {display_url(url)}")
        source = optuna.load_study(study_name=name, storage=open_storage(url))
        with budget_lock(self.storage, study.study_name):  # workers starting together seed the study once
            origins = warm_start(study, source, int(self.warm_start_config.get("top_k", 3)), space)
        if origins:
            console.print(f"warm start: the first trials re-run {', '.join(origins)}", highlight=False)

    def _run_study(self, plan: StudyPlan) -> None:
        study = plan.study
        with budget_lock(self.storage, study.study_name):  # one worker requeues, not each
            requeued = requeue_interrupted(study, room=self.n_trials - budget_spent(study))
        done = counted_trials(study)
        console.print(
            f"study [bold]{escape(study.study_name)}[/] in {display_url(self.storage)}: "
            f"{done} of {self.n_trials} trials done"
            + (f", re-running interrupted trial(s) {requeued}" if requeued else "")
            + (f" ({worker_name()})" if in_worker_pool() else ""),
            highlight=False,
        )
        first_number = len(study.get_trials(deepcopy=False))
        with StudyView(study, self.n_trials, done, plan.metric) as view:
            while True:
                self._stop_on_repeated_failure(study, first_number)
                trial = ask_within_budget(
                    plan.study, self.storage, self.n_trials, plan.space.distributions, self.heartbeat
                )
                if trial is not None:
                    self._run_trial(plan, view, trial)
                elif not self._wait_for_other_workers(study, view):
                    break
        console.print(top_trials_table(study, plan.metric, self.top_k))
        name = shlex.quote(study.study_name)
        console.print(
            f"look closer: hps dashboard · hps report --study {name} · hps export --study {name}"
            + ("" if self.storage == default_storage() else f" (each with --storage {display_url(self.storage)})"),
            highlight=False,
            markup=False,
        )

    def _stop_on_repeated_failure(self, study: optuna.Study, first_number: int) -> None:
        """Stop the sweep when the first ``fail_fast`` trials it ran all failed with one reason: the rest would too."""
        reason = repeated_failure(study, first_number, self.fail_fast) if self.fail_fast else None
        if reason is not None:
            raise ConfigError(
                f"the first {self.fail_fast} trials of study {study.study_name!r} all failed alike ({reason}); "
                "the sweep stopped instead of spending its budget on it (each trial's log is in its folder; "
                "hydra.sweeper.fail_fast=null runs on)"
            )

    def _wait_for_other_workers(self, study: optuna.Study, view: StudyView) -> bool:
        """With the budget spent, wait while other workers' trials run, in case one is lost and must run again.

        Returns True when a trial may be waiting to run here (a re-run was queued), False when this worker is
        done: nothing runs elsewhere, or heartbeats are off (a lost trial would never be noticed). A trial whose
        worker died stops beating and is failed after ``grace_period``, so the wait always ends.
        """
        if self.heartbeat is None:
            return False
        while True:
            fail_lost_trials(study)
            if budget_spent(study) < self.n_trials:
                return True
            running = [t.number for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
            if not running:
                return False
            view.waiting(running)
            time.sleep(min(self.heartbeat.interval, 5))

    def _run_trial(self, plan: StudyPlan, view: StudyView, trial: optuna.Trial) -> None:
        """Run the trial as a Hydra job while its heartbeat beats; tell the study how it ended."""
        study = plan.study
        overrides = [
            *plan.experiment.overrides,
            *plan.space.overrides(trial.params),
            f"++trial={{study:{override_value(study.study_name)},number:{trial.number}}}",
            f"hydra.sweep.subdir={override_value(self._trial_subdir(study.study_name, trial.number))}",
        ]
        try:
            with Heartbeat(trial, self.heartbeat):
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
                RetryLostTrial(self.heartbeat.max_retry if self.heartbeat is not None else 1)(study, frozen)
        retry_of = frozen.user_attrs.get(RETRY_OF)
        if retry_of is not None:
            note = f"(re-run of trial {retry_of}) {note}"
        record_trial_note(study, frozen, plan.metric)
        view.trial_finished(frozen, counted_trials(study), note)

    def _trial_subdir(self, study_name: str, number: int) -> str:
        """``<study>/trial_<n>``, suffixed if a folder of that name is left from an earlier database."""
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        candidate = f"{study_name}/trial_{number}"
        suffix = 1
        while (sweep_dir / candidate).exists():
            suffix += 1
            candidate = f"{study_name}/trial_{number}.{suffix}"
        return candidate


def _tell(study: optuna.Study, trial: optuna.Trial, result: JobReturn) -> tuple[optuna.trial.FrozenTrial, str]:
    """Store the job's outcome; returns the finished trial and a note for the progress line."""
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
    """
    try:
        from submitit.core.utils import FailedJobError, UncompletedJobError
    except ImportError:
        return None
    if not isinstance(error, UncompletedJobError) or isinstance(error, FailedJobError):
        return None
    said = " ".join(str(error).splitlines()[:2])  # Job <id> (task: 0) with path <result> has not produced ...
    return f"lost: its job ended without a result (killed, out of memory or time, or its node lost): {said}"


def build_sampler(config: DictConfig) -> optuna.samplers.BaseSampler:
    """The sampler of ``hydra.sweeper.sampler``.

    A seeded one draws each trial from its own seed (:func:`~search.samplers.seeded_per_trial`); with one seed per
    process, every worker and every resumed run would propose the same parameters again.
    """
    seed = config.get("seed")
    if seed is None:
        return _build("sampler", config)
    if not is_whole_number(seed, 0):
        raise ConfigError(f"hydra.sweeper.sampler.seed is {seed!r}; allowed: a whole number >= 0, or null")
    return seeded_per_trial(lambda trial_seed: _build("sampler", config, seed=trial_seed), seed)


def _build(what: str, config: DictConfig, **changes: Any) -> Any:
    """Instantiate a sampler or pruner config with ``changes``, or say in one line why it cannot be."""
    try:
        return instantiate(config, **changes)
    except (InstantiationException, ImportError) as error:
        reason = first_line(error.__cause__ or error)
        raise ConfigError(f"cannot build the {what} {config.get('_target_')!r}: {reason}") from None


class StopSignals:
    """While entered, Ctrl-C (SIGINT) and SIGTERM (a scheduler's stop) raise KeyboardInterrupt and are remembered.

    Remembered because the trial's own code runs when they arrive: a training loop that catches the interrupt
    to save a checkpoint and returns, or a clean-up that fails and raises another error instead, would
    otherwise turn a stop into an ordinary finished trial and go on to the next. A SIGINT that the process
    ignores (started in the background by a shell) stays ignored.
    """

    def __init__(self) -> None:
        self.received = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signum == signal.SIGINT and signal.getsignal(signum) is not signal.default_int_handler:
                continue
            self._previous[signum] = signal.signal(signum, self._stop)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _stop(self, signum: int, frame: object) -> None:
        self.received = True
        raise KeyboardInterrupt

    def raise_if_received(self) -> None:
        """Raise KeyboardInterrupt if a stop arrived, also one the code it interrupted swallowed."""
        if self.received:
            raise KeyboardInterrupt
