"""A Hydra sweeper that runs an Optuna study whose trials report, and are pruned, while they train.

``python -m hps.objectives.finetune -m`` (or ``hps-finetune -m``) hands the command line to
:meth:`PruningSweeper.sweep`, which

1. reads its settings, ``hydra.sweeper`` (:mod:`hps.search.settings`; a Hydra Optuna sweeper config works too);
2. splits the command line into experiments (one study each), search parameters and fixed keys
   (:mod:`hps.search.planning`);
3. for each experiment composes the task config, checks its search space and input, and creates or resumes its
   study (:mod:`hps.search.preparation`), all of it before the first trial runs;
4. runs each study's trials as Hydra jobs through the configured launcher, one at a time per worker
   (:mod:`hps.search.trial_loop`), with ``n_jobs - 1`` more workers on this machine (:mod:`hps.search.workers`).

The budget is counted in the storage; Ctrl-C or SIGTERM stores the running trial as FAIL marked interrupted,
which a resumed study runs again first, and stops the sweep, also when the trial's own code catches the
interrupt (:class:`~hps.search.signals.StopSignals`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hps.search.errors import exit_on_config_error
from hps.search.planning import plan_sweep
from hps.search.preparation import prepare_study
from hps.search.progress import console
from hps.search.settings import sweeper_settings, warn_if_password_written
from hps.search.signals import StopSignals
from hps.search.trial_loop import TrialLoop
from hps.search.workers import LocalWorkers, quiet_optuna_notices

EXIT_INTERRUPTED = 130


class PruningSweeper(Sweeper):
    """Runs pruned Optuna studies over Hydra jobs. Configured by ``conf/hydra/sweeper/hps.yaml``.

    ``direction`` and ``n_jobs`` keep their Hydra Optuna sweeper meaning: a direction overrides
    ``objective.direction``; ``n_jobs`` is the number of workers on this machine (this process and
    ``n_jobs - 1`` copies of the same command, :mod:`hps.search.workers`), each running one trial at a time;
    ``auto`` is one per visible GPU times ``trials_per_device`` (1 without a GPU), each on its own GPU.

    Args:
        settings: The keys of ``hydra.sweeper``, as Hydra passes them. They are checked when the sweep starts
            (:func:`~hps.search.settings.sweeper_settings`), so that a wrong one is one line, not a traceback.
    """

    def __init__(self, **settings: Any) -> None:
        self.sweeper_config = settings

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # Here, not at import: Hydra imports plugins inside warnings.catch_warnings, and importing must not
        # change another program's logging.
        quiet_optuna_notices()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the study view replaces Optuna's per-trial lines
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        loader = self.hydra_context.config_loader
        try:
            with StopSignals() as stop_signals, exit_on_config_error():
                settings = sweeper_settings(self.sweeper_config)
                sweep_dir = Path(str(self.config.hydra.sweep.dir))
                warn_if_password_written(self.config.hydra.sweeper)
                # Resolves n_jobs (auto) and sets this worker's CUDA_VISIBLE_DEVICES before a preflight may
                # initialise CUDA; the children start only once every experiment is checked (below).
                local_workers = LocalWorkers(settings.n_jobs, sweep_dir / "workers", settings.trials_per_device)
                sweep = plan_sweep(arguments, settings, loader, str(self.config.hydra.job.name))
                plans = [prepare_study(e, sweep, settings, loader, self.config) for e in sweep.experiments]
                loop = TrialLoop(settings, self.launcher, stop_signals, sweep_dir)
                with local_workers as workers:
                    for plan in plans:
                        loop.run(plan)
                    workers.wait()
        except KeyboardInterrupt:
            console.print("interrupted: run the same command again to resume")
            raise SystemExit(EXIT_INTERRUPTED) from None
