"""Load benchmark of the study machinery: many workers, one study, a sleep objective.

Each worker is a process running the sweeper's loop without the training: ``ask_within_budget`` (stale
check, budget lock, budget count, ask, worker attribute, first heartbeat), then ``steps`` evaluations through
:class:`~hps.search.trial.TrialLink` (report + pruning decision) with a sleep standing for training, then
``tell``. It measures, per trial, the time spent in storage calls (ask + reports + tell, sleeps excluded)
and, per run, trials per second, for 1, 2, 4, 8 and 16 workers on PostgreSQL and on SQLite::

    python benchmarks/storage_load.py                        # both backends, default settings
    python benchmarks/storage_load.py --backends sqlite --trials 64 --workers 1 4

PostgreSQL comes from ``--postgres`` (default: the local server, database ``test``). Each run uses a new
study (random sampler, median pruner, budget ``--trials``) and deletes it afterwards. The worker processes
start before the clock does, so Python's start-up is not counted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution

from hps.search.heartbeats import Heartbeat
from hps.search.storage import HeartbeatSettings, open_storage
from hps.search.trial import TrialLink
from hps.search.workers import ask_within_budget, quiet_optuna_notices

DISTRIBUTIONS = {"x": FloatDistribution(-5, 5), "y": FloatDistribution(-5, 5)}
HEARTBEAT = HeartbeatSettings(interval=30, grace_period=120, max_retry=1)


def work(mode: str, url: str, study_name: str, n_trials: int, steps: int, step_s: float, start, results) -> None:
    """One worker: trials until the budget is spent; puts its storage seconds per trial on ``results``.

    ``mode`` "hps" is the sweeper's loop; "optuna" is the same trial with plain ``study.ask()`` (no stale check,
    budget lock or heartbeat), the baseline that shows what the platform adds.
    """
    quiet_optuna_notices()
    storage = open_storage(url, heartbeat=HEARTBEAT if mode == "hps" else None)
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=optuna.pruners.MedianPruner())
    start.wait()
    overheads = []
    while True:
        began = time.perf_counter()
        if mode == "hps":
            trial = ask_within_budget(study, url, n_trials, DISTRIBUTIONS, HEARTBEAT)
        else:
            trial = study.ask(DISTRIBUTIONS) if len(study.get_trials(deepcopy=False)) < n_trials else None
        if trial is None:
            break
        spent = time.perf_counter() - began
        link = TrialLink(trial)
        value = 0.0
        with Heartbeat(trial, HEARTBEAT if mode == "hps" else None):
            try:
                for step in range(1, steps + 1):
                    time.sleep(step_s)
                    value = -((trial.params["x"] - 1) ** 2) - trial.params["y"] ** 2 + step
                    began = time.perf_counter()
                    link.report(step, value, can_prune=step < steps)
                    spent += time.perf_counter() - began
                state = optuna.trial.TrialState.COMPLETE
            except optuna.TrialPruned:
                spent += time.perf_counter() - began
                state = optuna.trial.TrialState.PRUNED
        began = time.perf_counter()
        study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
        overheads.append(spent + time.perf_counter() - began)
    results.put(overheads)


def run(mode: str, url: str, workers: int, n_trials: int, steps: int, step_s: float) -> dict:
    study_name = f"load-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=study_name, storage=open_storage(url), sampler=optuna.samplers.RandomSampler())
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    processes = [
        context.Process(target=work, args=(mode, url, study_name, n_trials, steps, step_s, start, results))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    time.sleep(3 + 0.3 * workers)  # let every worker import and connect before the clock starts
    began = time.perf_counter()
    start.set()
    overheads = [value for _ in processes for value in results.get()]
    wall = time.perf_counter() - began
    for process in processes:
        process.join()
    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    finished = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)))
    optuna.delete_study(study_name=study_name, storage=open_storage(url))
    return {
        "trials": finished,
        "trials_per_s": finished / wall,
        "overhead_ms": 1000 * statistics.mean(overheads),
        "overhead_p95_ms": 1000 * statistics.quantiles(overheads, n=20)[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["postgresql", "sqlite"], choices=["postgresql", "sqlite"])
    parser.add_argument("--postgres", default="postgresql+psycopg://root@127.0.0.1:5432/test")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--trials", type=int, default=96, help="the study's budget, per run")
    parser.add_argument("--steps", type=int, default=4, help="evaluations reported per trial")
    parser.add_argument("--step-seconds", type=float, default=0.05, help="sleep per evaluation (the 'training')")
    arguments = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_optuna_notices()
    folder = Path(tempfile.mkdtemp(prefix="hps-load-"))
    urls = {"postgresql": arguments.postgres, "sqlite": f"sqlite:///{folder}/load.db"}
    print(
        f"{arguments.trials} trials per run, {arguments.steps} reports each, {arguments.step_seconds * 1000:.0f} ms "
        f"sleep per report; overhead = ask + reports + tell per trial, sleeps excluded"
    )
    print(f"{'':<19} {'--- hps (budget lock, heartbeats) ---':^49}   {'--- plain Optuna ask/tell ---':^28}")
    print(
        f"{'backend':<11} {'workers':>7} {'trials':>6} {'trials/s':>9} {'speed-up':>9} {'overhead ms':>12} "
        f"{'p95 ms':>8}   {'trials':>6} {'trials/s':>9} {'overhead ms':>12}"
    )
    for backend in arguments.backends:
        single = None
        for workers in arguments.workers:
            ours, plain = (
                run(mode, urls[backend], workers, arguments.trials, arguments.steps, arguments.step_seconds)
                for mode in ("hps", "optuna")
            )
            single = single or ours["trials_per_s"]
            print(
                f"{backend:<11} {workers:>7} {ours['trials']:>6} {ours['trials_per_s']:>9.1f} "
                f"{ours['trials_per_s'] / single:>8.2f}x {ours['overhead_ms']:>12.1f} "
                f"{ours['overhead_p95_ms']:>8.1f}   "
                f"{plain['trials']:>6} {plain['trials_per_s']:>9.1f} {plain['overhead_ms']:>12.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
