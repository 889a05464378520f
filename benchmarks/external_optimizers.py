"""External multi-fidelity optimizers under the search-quality protocol, to judge our default against them.

The protocol is ``benchmarks/search_quality.py``'s: each optimizer searches the lcbench space
(``conf/search_space/lcbench.yaml``) of every YAHPO Gym lcbench task with every seed, one evaluation after
another, until 100 full trainings' worth of epochs (100 x 52) are spent; a run records the normalised regret of
the best *fully trained* (52 epochs) configuration's validation balanced accuracy once 10x, 30x and 100x the
epochs of one full training are spent (1 while none is), and the test balanced accuracy of the final incumbent.
Rows go to the same CSV, keyed by a digest of the optimizer's name, package version, settings and the space, so
a re-run resumes; the table adds the ``default``, ``TPE + incumbent`` and ``TPE`` rows of that CSV where it has them.

Every optimizer is seeded with the run's seed (and runs in a worker with a fixed ``PYTHONHASHSEED``, as
SMAC3's choices depend on it) and uses 1 epoch as its smallest fidelity, 52 as its largest and
halving rate 3. Cost is epochs trained, counted honestly for each:

- ``DEHB`` (``dehb``, ask/tell): fidelities 52 / 3^k (1.9, 5.8, 17.3, 52) rounded to whole epochs; each
  evaluation trains from scratch and costs its epochs, promoted configurations included.
- ``Syne Tune ASHA`` and ``Syne Tune BOHB`` (``syne-tune``; ``ASHA`` and ``BOHB`` of ``syne_tune.optimizer.
  baselines``, driven as ``syne_tune.Tuner`` drives a scheduler: ``suggest``, ``on_trial_add``, one
  ``on_trial_result`` per epoch, ``on_trial_remove`` on STOP). Syne Tune 0.16's ASHA is the *stopping* type
  (rungs at 1, 3, 9, 27 epochs; it never pauses, so no trial is resumed): a trial trains epoch by epoch until
  the scheduler stops it, and costs the epochs it trained, as an Optuna pruner's trial does. A suggestion to
  resume a paused trial is refused, since its paused epochs would need counting.
- ``SMAC3 Hyperband`` (``smac``, ``MultiFidelityFacade``, ask/tell): budgets as DEHB's, each trial from
  scratch. SMAC 2.4's default random forest is scikit-learn's, so pyrfr (and swig) are not needed.

A row's ``trials`` are its evaluations (a promotion that trains again from scratch is one more) and ``pruned``
those that stopped short of 52 epochs.

DEHB 0.1.2 pins numpy<2 (the platform's environment has numpy 2), so it gets a virtual environment of its own;
run each optimizer from the environment that has it (by default the script runs those installed)::

    python3 -m venv /tmp/ext-venv && /tmp/ext-venv/bin/pip install torch==2.13.0
    /tmp/ext-venv/bin/pip install -e '.[lcbench]' syne-tune==0.16.0 smac==2.4.1
    python3 -m venv /tmp/ext-venv-dehb && /tmp/ext-venv-dehb/bin/pip install torch==2.13.0
    /tmp/ext-venv-dehb/bin/pip install -e '.[lcbench]' dehb==0.1.2
    /tmp/ext-venv/bin/python benchmarks/external_optimizers.py --data ../shared/benchmarks/yahpo_gym
    /tmp/ext-venv-dehb/bin/python benchmarks/external_optimizers.py --data DIR --tasks 3945 189909 --seeds 1
    /tmp/ext-venv/bin/python benchmarks/external_optimizers.py --data DIR --first-seed 1 --seeds 2  # seeds 1, 2
    /tmp/ext-venv/bin/python benchmarks/external_optimizers.py --data DIR --space lcbench_inner80 \
        --only 'SMAC3 Hyperband'
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import multiprocessing
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from optuna.distributions import FloatDistribution, IntDistribution
from search_quality import (
    CONFIGURATIONS,
    EPOCHS,
    METRIC,
    LcBench,
    Ledger,
    Run,
    add_protocol_arguments,
    earlier_runs,
    seed_range,
    settings,
    store_runs,
    summarise,
    summarise_paired,
)
from threadpoolctl import threadpool_limits

from hps.objectives.lcbench import DATA_ENV, Surrogate
from hps.search.space import SearchSpace, parse_search_space

ETA = 3
REFERENCES = ("default", "TPE + incumbent", "TPE")  # search_quality.py configurations shown beside the external ones


def _configspace(space: SearchSpace, seed: int) -> Any:
    """The space as a ConfigSpace ``ConfigurationSpace`` (DEHB and SMAC3)."""
    from ConfigSpace import ConfigurationSpace, Float, Integer

    kinds = {IntDistribution: Integer, FloatDistribution: Float}  # lcbench's space has no categorical
    parameters = [kinds[type(d)](name, (d.low, d.high), log=d.log) for name, d in space.distributions.items()]
    return ConfigurationSpace(seed=seed, space=parameters)


def _syne_tune_space(space: SearchSpace) -> dict[str, Any]:
    from syne_tune.config_space import lograndint, loguniform, randint, uniform

    kinds = {(IntDistribution, True): lograndint, (IntDistribution, False): randint}
    kinds |= {(FloatDistribution, True): loguniform, (FloatDistribution, False): uniform}
    return {name: kinds[type(d), d.log](d.low, d.high) for name, d in space.distributions.items()}


def _epochs(fidelity: float) -> int:
    """A fractional fidelity as whole epochs: lcbench's curves are per epoch."""
    return max(1, round(fidelity))


def dehb(ledger: Ledger, space: SearchSpace, seed: int, options: dict) -> None:
    from dehb import DEHB  # imported here, as each optimizer's package: an environment may lack the others
    from loguru import logger

    with tempfile.TemporaryDirectory() as folder:  # DEHB writes a log and checkpoints there
        optimizer = DEHB(
            cs=_configspace(space, seed), n_workers=1, seed=seed, output_path=folder, save_freq="end", **options
        )
        while not ledger.exhausted:
            job = optimizer.ask()
            epochs = _epochs(job["fidelity"])
            value = ledger.spend(ledger.curve(dict(job["config"]), epochs), epochs)
            optimizer.tell(job, {"fitness": -value, "cost": epochs})
        logger.remove()  # DEHB's log sinks, each with a queue and a thread, outlive it


def syne_tune(ledger: Ledger, space: SearchSpace, seed: int, options: dict) -> None:
    from syne_tune.backend.trial_status import Trial
    from syne_tune.optimizer import baselines
    from syne_tune.optimizer.scheduler import SchedulerDecision

    np.random.seed(seed)  # its random searchers draw from numpy's global generator, whatever random_seed says
    options = dict(options)
    scheduler = getattr(baselines, options.pop("scheduler"))(
        _syne_tune_space(space), metric=METRIC, do_minimize=False, random_seed=seed, **options
    )
    trial_id = 0
    while not ledger.exhausted:
        suggestion = scheduler.suggest()
        if not suggestion.spawn_new_trial_id:
            raise RuntimeError(f"{type(scheduler).__name__} resumes a paused trial, whose cost is not counted here")
        trial = Trial(trial_id, suggestion.config, datetime.now())
        scheduler.on_trial_add(trial)
        curve = ledger.curve(suggestion.config)
        for epoch, value in enumerate(curve[METRIC], start=1):
            if scheduler.on_trial_result(trial, {METRIC: float(value), "epoch": epoch}) != SchedulerDecision.CONTINUE:
                break
        scheduler.on_trial_remove(trial)  # what Tuner does with a stopped trial, finished ones included
        ledger.spend(curve, epoch)
        trial_id += 1


def smac(ledger: Ledger, space: SearchSpace, seed: int, options: dict) -> None:
    from smac import MultiFidelityFacade, Scenario
    from smac.runhistory import TrialValue

    with tempfile.TemporaryDirectory() as folder:
        scenario = Scenario(_configspace(space, seed), output_directory=Path(folder), seed=seed, **options)
        optimizer = MultiFidelityFacade(
            scenario,
            target_function=None,  # ask/tell
            intensifier=MultiFidelityFacade.get_intensifier(scenario, eta=ETA),
            logging_level=logging.ERROR,
            overwrite=True,
        )
        while not ledger.exhausted:
            info = optimizer.ask()
            epochs = _epochs(info.budget)
            value = ledger.spend(ledger.curve(dict(info.config), epochs), epochs)
            optimizer.tell(info, TrialValue(cost=1.0 - value), save=False)  # cost > 0: its forest fits log(cost)


@dataclass(frozen=True)
class Optimizer:
    package: str  # its PyPI name, for the version in the digest
    module: str
    search: Callable[[Ledger, SearchSpace, int, dict], None]
    options: dict  # what ``search`` passes on, beside the space and seed; package defaults for the rest


FIDELITIES = {"min_fidelity": 1, "max_fidelity": EPOCHS, "eta": ETA}
SYNE_TUNE = {"time_attr": "epoch", "max_t": EPOCHS, "grace_period": 1, "reduction_factor": ETA}
OPTIMIZERS = {
    "DEHB": Optimizer("dehb", "dehb", dehb, FIDELITIES),
    "Syne Tune ASHA": Optimizer("syne-tune", "syne_tune", syne_tune, {"scheduler": "ASHA", **SYNE_TUNE}),
    "Syne Tune BOHB": Optimizer("syne-tune", "syne_tune", syne_tune, {"scheduler": "BOHB", **SYNE_TUNE}),
    "SMAC3 Hyperband": Optimizer(  # n_trials: more than any run asks; it caps the 70 initial configs at n_trials/4
        "smac", "smac", smac, {"min_budget": 1, "max_budget": EPOCHS, "deterministic": True, "n_trials": 100_000}
    ),
}

_surrogate: LcBench | None = None


def _load_surrogate(data: str) -> None:
    global _surrogate
    _surrogate = LcBench(data)
    threadpool_limits(1)  # one run per core
    # SMAC's forest asks joblib for every core, which a pool's worker may not fork: it runs on one, as wanted
    warnings.filterwarnings("ignore", "Loky-backed parallel loops cannot be called in a multiprocessing")
    warnings.filterwarnings("ignore", category=FutureWarning)  # Syne Tune's KDE calls pandas the old way
    logging.getLogger("syne_tune").setLevel(logging.ERROR)


def search(name: str, digest: str, space: dict, task: str, seed: int) -> Run:
    """One optimizer's search of one task until 100 full trainings' worth of epochs are spent."""
    started = time.perf_counter()
    optimizer, parsed = OPTIMIZERS[name], parse_search_space(space)
    ledger = Ledger(_surrogate, task, parsed)
    optimizer.search(ledger, parsed, seed, optimizer.options)
    return ledger.run(name, digest, seed, time.perf_counter() - started)


def _search(job: tuple) -> Run:
    return search(*job)


def digest(name: str, space: dict) -> str:
    """What decides a run's result: the optimizer, its package's version, its settings and the space."""
    optimizer = OPTIMIZERS[name]
    parts = [name, optimizer.package, version(optimizer.package), optimizer.options, space]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_protocol_arguments(parser)
    parser.add_argument("--only", nargs="+", help=f"optimizers to run (default: those installed of {list(OPTIMIZERS)})")
    parser.add_argument("--space", default="lcbench", help="a conf/search_space of lcbench, e.g. lcbench_inner80")
    arguments = parser.parse_args()
    if not arguments.data:
        parser.error(f"--data (or ${DATA_ENV}) must name a YAHPO Gym data folder")
    installed = [name for name, optimizer in OPTIMIZERS.items() if importlib.util.find_spec(optimizer.module)]
    names = arguments.only or installed
    unknown = sorted(set(names) - set(OPTIMIZERS))
    if unknown:
        parser.error(f"unknown optimizer(s) {unknown}; known: {list(OPTIMIZERS)}")
    missing = sorted(set(names) - set(installed))
    if missing:
        parser.error(f"{missing} not installed here: pip install {' '.join(OPTIMIZERS[n].package for n in missing)}")
    if not names:
        parser.error(f"none of {list(OPTIMIZERS)} is installed; see this script's docstring")
    tasks = arguments.tasks or Surrogate(arguments.data).tasks
    in_space = [f"search_space={arguments.space}"]  # what search_quality.py's --extra adds for another space
    references = {name: settings([*CONFIGURATIONS[name], *in_space])[0] for name in REFERENCES}
    space = settings([*CONFIGURATIONS["default"], *in_space])[3]
    digests = {name: digest(name, space) for name in names}
    done = earlier_runs(arguments.csv)
    seeds = seed_range(arguments)
    wanted = [(name, (digests[name], task, seed)) for name in names for task in tasks for seed in seeds]
    jobs = {key: (name, key[0], space, *key[1:]) for name, key in wanted if key not in done}
    shape = f"{len(names)} optimizers x {len(tasks)} tasks x seeds {seeds.start}..{seeds.stop - 1}"
    print(f"{shape}: {len(wanted) - len(jobs)} runs from {arguments.csv}, {len(jobs)} to run")
    started = time.perf_counter()
    os.environ["PYTHONHASHSEED"] = "0"  # for the workers, spawned: SMAC3 follows the order of sets, of strings too
    context = multiprocessing.get_context("spawn")
    with context.Pool(arguments.processes, _load_surrogate, (arguments.data,)) as pool:
        store_runs(pool.imap_unordered(_search, jobs.values()), arguments.csv, done)
    runs = [replace(done[key], configuration=name) for name, key in wanted]
    shown = []
    for name, reference in references.items():  # the task x seed runs the CSV has of each, however many
        found = [
            replace(done[key], configuration=name)
            for key in ((reference, t, s) for t in tasks for s in seeds)
            if key in done
        ]
        if found:
            runs, shown = runs + found, [*shown, name]
            if len(found) < len(tasks) * len(seeds):
                print(f"{name}: {len(found)} of {len(tasks) * len(seeds)} task x seed runs in {arguments.csv}")
    summarise(runs, shown + names)
    if "default" in shown:
        summarise_paired(runs, "default")
    print(f"{len(jobs)} runs in {time.perf_counter() - started:.0f} s; every run in {arguments.csv}")


if __name__ == "__main__":
    main()
