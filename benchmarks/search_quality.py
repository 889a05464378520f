"""Search quality: samplers and pruners judged on the YAHPO Gym lcbench surrogate (34 tasks, real curves).

Each configuration (a sampler and a pruner from ``conf/hydra/sweeper/``, with optional changes) searches the
lcbench space (``conf/search_space/lcbench.yaml``) of every task with every seed, one trial after another,
reporting validation balanced accuracy after each epoch to the pruner, exactly as ``hps-lcbench -m`` does
through the sweeper (here with in-memory storage, so that 34 tasks x seeds x configurations fit in minutes).
Cost is epochs trained; one full training is 52 epochs. It prints, per configuration, the mean normalised
regret (YAHPO Gym's per-task min and max of validation balanced accuracy) of the best *fully trained*
configuration after 10x, 30x and 100x the cost of one full training, with standard errors over task x seed
runs, and the test balanced accuracy of the final incumbent; every run's row goes to a CSV::

    pip install -e '.[bench]'
    python benchmarks/search_quality.py --data ../shared/benchmarks/yahpo_gym          # all 34 tasks, 5 seeds
    python benchmarks/search_quality.py --data DIR --tasks 3945 189909 --seeds 2 --only random default
    python benchmarks/search_quality.py --data DIR --first-seed 5 --seeds 3 --only default   # held-out seeds
    python benchmarks/search_quality.py --data DIR --report        # the table of the runs in the CSV; runs none
    python benchmarks/search_quality.py --data DIR --extra 'TPE + SHA rf3=hydra/sweeper/pruner=successive_halving
        hydra.sweeper.pruner.reduction_factor=3'

``default`` is whatever ``conf/hydra/sweeper/hps.yaml`` selects, so the table judges the shipped defaults.

``--table`` replays recorded MiniLM fine-tuning curves instead (``finetune_curves.py``; ``curve_table.py`` says
how a configuration is answered): each dataset is a task, the default search space (``conf/search_space``) is
searched, a full training is the table's evaluations (8 in the shipped table), and regret is normalised by the
range of the recorded final values::

    python benchmarks/search_quality.py --table benchmarks/finetune_curves.csv --seeds 5 --only random TPE default
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import multiprocessing
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import optuna
import torch
from curve_table import CurveTable
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.trial import TrialState
from threadpoolctl import threadpool_limits

from hps.objectives.lcbench import DATA_ENV, EPOCHS, Surrogate
from hps.search.space import SearchSpace, parse_search_space

CONF = Path(__file__).resolve().parents[1] / "conf"
METRIC = "val_balanced_accuracy"
MULTIPLES = (10, 30, 100)  # budgets, in full trainings
SHA, INCUMBENT, RUNG_2, STARTUP_2, STARTUP_5, MULTIVARIATE = (
    "hydra/sweeper/pruner=successive_halving",
    "hydra/sweeper/pruner=incumbent",
    "hydra.sweeper.pruner.min_early_stopping_rate=0",
    "hydra.sweeper.sampler.n_startup_trials=2",
    "hydra.sweeper.sampler.n_startup_trials=5",
    "hydra.sweeper.sampler.multivariate=true",
)
# Optuna's TPESampler itself: its good group grows to 25 trials, not our 10 (search/samplers.py)
OPTUNAS_TPE = ["hydra.sweeper.sampler._target_=optuna.samplers.TPESampler", "~hydra.sweeper.sampler.max_good_trials"]
TPE = "hydra/sweeper/sampler=tpe"  # named in every TPE row: the default's sampler is the GP
CONFIGURATIONS = {  # name -> overrides of conf/lcbench.yaml
    "random": ["hydra/sweeper/sampler=random", "hydra/sweeper/pruner=none"],
    "TPE (Optuna defaults)": [
        TPE,
        "hydra/sweeper/pruner=none",
        *(f"~hydra.sweeper.sampler.{key}" for key in ("n_startup_trials", "multivariate", "constant_liar")),
    ],
    "TPE": [TPE, "hydra/sweeper/pruner=none"],
    "TPE, 2 start-up": [TPE, STARTUP_2, "hydra/sweeper/pruner=none"],
    "TPE, 5 start-up": [TPE, STARTUP_5, "hydra/sweeper/pruner=none"],
    "TPE, 5 start-up + median": [TPE, STARTUP_5, "hydra/sweeper/pruner=median"],
    "TPE, 5 start-up + hyperband": [TPE, STARTUP_5, "hydra/sweeper/pruner=hyperband"],
    "TPE, 5 start-up + SHA, rung 2": [TPE, STARTUP_5, SHA, RUNG_2],
    "TPE, 5 start-up + SHA": [TPE, STARTUP_5, SHA],  # an earlier default
    "multivariate TPE, 5 start-up + SHA, rung 2": [TPE, STARTUP_5, MULTIVARIATE, SHA, RUNG_2],
    "multivariate TPE, 5 start-up + SHA": [TPE, STARTUP_5, MULTIVARIATE, SHA],  # an earlier default
    "TPE, 2 start-up + SHA": [TPE, STARTUP_2, SHA],  # better on seeds 0..4, not on held-out seeds 5..7
    "TPE + SHA": [TPE, SHA],  # successive halving without the incumbent's stops
    "random + SHA": ["hydra/sweeper/sampler=random", SHA],
    # before the limit on TPE's good group (max_good_trials): successive halving alone, then the incumbent's stops
    "TPE + SHA, Optuna's TPE": [TPE, SHA, *OPTUNAS_TPE],
    "TPE + incumbent, Optuna's TPE": [TPE, INCUMBENT, *OPTUNAS_TPE],
    "TPE + incumbent": [TPE, INCUMBENT],  # an earlier default
    "GP + incumbent": [INCUMBENT],  # the default before "Fifty seeds" (RESULTS.md)
    "default": [],
}


@dataclass
class Run:
    """One search of one task with one seed."""

    configuration: str
    settings: str  # digest of the sampler, pruner and space: runs with equal settings are reused, whatever their name
    task: str
    seed: int
    regret_10x: float
    regret_30x: float
    regret_100x: float
    test_balanced_accuracy: float
    trials: int
    pruned: int
    seconds: float


class Benchmark(Protocol):
    """What a search is scored on: curves of ``epochs`` steps per configuration, and each task's regret scale."""

    tasks: list[str]
    epochs: int  # steps of a full training: the unit budgets are counted in
    metric: str  # the validation metric's key in a curve
    test_metric: str | None  # the test metric's key, if the benchmark has one

    def curve(self, task: str, config: dict[str, Any], epochs: int) -> dict[str, np.ndarray]: ...

    def normalised_regret(self, task: str, value: float) -> float: ...


class LcBench:
    """The YAHPO Gym lcbench surrogate as a :class:`Benchmark`: 52 epochs, validation and test balanced accuracy."""

    epochs, metric, test_metric = EPOCHS, METRIC, "test_balanced_accuracy"

    def __init__(self, data: str) -> None:
        self.surrogate = Surrogate(data)
        self.tasks = self.surrogate.tasks

    def curve(self, task: str, config: dict[str, Any], epochs: int = EPOCHS) -> dict[str, np.ndarray]:
        return self.surrogate.curve(task, config, epochs)

    def normalised_regret(self, task: str, value: float) -> float:
        return self.surrogate.normalised_regret(task, METRIC, value)


def settings(overrides: list[str], task_config: str = "lcbench") -> tuple[str, dict, dict, dict]:
    """The digest, sampler config, pruner config and search space that ``overrides`` of the ``task_config`` config
    (``lcbench``, or ``finetune`` for a curve table) give (plain containers)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(task_config, overrides=overrides, return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    parts = [OmegaConf.to_container(node) for node in (sweeper.sampler, sweeper.pruner, cfg.search_space)]
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
    return digest, *parts


def settings_or_error(
    parser: argparse.ArgumentParser, what: str, overrides: list[str], task_config: str = "lcbench"
) -> tuple[str, dict, dict, dict]:
    """:func:`settings`, or the parser's one-line error naming ``what`` for a mistyped override (no traceback)."""
    try:
        return settings(overrides, task_config)
    except ConfigCompositionException as error:
        parser.error(f"{what}: {' '.join(str(error).split())}")


_surrogate: Benchmark | None = None  # the benchmark of this process: each pool worker loads its own


def _load_surrogate(data: str, table: Path | None = None, space: dict | None = None) -> None:
    """Load the lcbench surrogate from ``data``, or the curve table at ``table`` over ``space``."""
    global _surrogate
    _surrogate = LcBench(data) if table is None else CurveTable(table, parse_search_space(space))
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def _start_worker(threads: int, *benchmark: Any) -> None:
    torch.set_num_threads(threads)
    threadpool_limits(threads)
    _load_surrogate(*benchmark)


def worker_pool(processes: int, *benchmark: Any) -> multiprocessing.pool.Pool:
    """``processes`` workers, each with the benchmark ``_load_surrogate`` loads and its share of the cores for the
    GP's linear algebra, torch's and BLAS's. More threads than that oversubscribe the machine and slow each GP run
    several times (benchmarks/RESULTS.md, "Fifty seeds")."""
    threads = max(1, len(os.sched_getaffinity(0)) // processes)
    return multiprocessing.Pool(processes, _start_worker, (threads, *benchmark))


class Ledger:
    """Steps (epochs, evaluations) spent on one task, and the best fully trained configuration as each budget runs out.

    Every search (ours here, the external optimizers' in ``external_optimizers.py``) charges its training here, so
    all are costed and scored the same way: only results of a full training can become the incumbent.
    """

    def __init__(
        self, surrogate: Benchmark, task: str, space: SearchSpace, multiples: tuple[int, ...] = MULTIPLES
    ) -> None:
        self.surrogate, self.task, self.multiples = surrogate, task, multiples
        self.epochs = surrogate.epochs
        self.keys = {name: parameter.key.rsplit(".", 1)[-1] for name, parameter in space.parameters.items()}
        self.spent = self.evaluations = self.partial = 0
        self.best_value, self.best_test = -math.inf, math.nan
        self.regrets: dict[int, float] = {}

    @property
    def exhausted(self) -> bool:
        return self.spent >= max(self.multiples) * self.epochs

    def curve(self, config: dict[str, Any], epochs: int | None = None) -> dict[str, np.ndarray]:
        """The benchmark's curves of ``config`` (named as in the search space) for steps 1..``epochs`` (all)."""
        named = {self.keys[name]: value for name, value in config.items()}
        return self.surrogate.curve(self.task, named, epochs or self.epochs)

    def spend(self, curve: dict[str, np.ndarray], epochs: int) -> float:
        """Charge ``epochs`` steps of training along ``curve``; the validation metric after them."""
        value = float(curve[self.surrogate.metric][epochs - 1])
        self.spent += epochs
        self.evaluations += 1
        self.partial += epochs < self.epochs
        if epochs == self.epochs and value > self.best_value:
            test = self.surrogate.test_metric
            self.best_value, self.best_test = value, float(curve[test][-1]) if test else math.nan
        for multiple in self.multiples:  # the incumbent as it stood when each budget ran out
            if multiple not in self.regrets and self.spent >= multiple * self.epochs:
                self.regrets[multiple] = self.regret()
        return value

    def regret(self) -> float:
        """Normalised regret of the incumbent; 1 (the worst) while nothing has trained to the end."""
        if self.best_value == -math.inf:
            return 1.0
        return self.surrogate.normalised_regret(self.task, self.best_value)

    def run(self, configuration: str, digest: str, seed: int, seconds: float) -> Run:
        return Run(
            configuration,
            digest,
            self.task,
            seed,
            *(self.regrets[multiple] for multiple in MULTIPLES),
            self.best_test,
            self.evaluations,
            self.partial,
            seconds,
        )


def search(configuration: str, digest: str, sampler: dict, pruner: dict, space: dict, task: str, seed: int) -> Run:
    """Trials until 100 full trainings' worth of epochs are spent; the incumbent's regret at each budget."""
    started = time.perf_counter()
    parsed = parse_search_space(space)
    ledger = Ledger(_surrogate, task, parsed)
    study = new_study(task, seed, sampler, instantiate(pruner) if pruner else None)
    run_trials(study, ledger, parsed.distributions)
    return ledger.run(configuration, digest, seed, time.perf_counter() - started)


def new_study(task: str, seed: int, sampler: dict, pruner: optuna.pruners.BasePruner | None) -> optuna.Study:
    return optuna.create_study(  # named: Hyperband's brackets hash the study name, so a random one is not repeatable
        study_name=f"lcbench-{task}-seed{seed}",
        direction="maximize",
        sampler=_seeded(sampler, seed),
        pruner=pruner,
    )


def run_trials(study: optuna.Study, ledger: Ledger, distributions: dict) -> None:
    """One trial after another, each reporting every step to the pruner, until the ledger's budget is spent."""
    metric = ledger.surrogate.metric
    while not ledger.exhausted:
        trial = study.ask(distributions)
        curve = ledger.curve(trial.params)
        for epoch, value in enumerate(curve[metric], start=1):
            trial.report(float(value), epoch)
            if epoch < ledger.epochs and trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, float(curve[metric][-1]))
        ledger.spend(curve, epoch)


def _seeded(sampler: dict, seed: int) -> optuna.samplers.BaseSampler:
    return instantiate({**sampler, "seed": seed})


def _search(job: tuple) -> Run:
    return search(*job)


def earlier_runs(path: Path) -> dict[tuple[str, str, int], Run]:
    """Runs already in the CSV at ``path``, by (settings, task, seed).

    The surrogate and seeds are deterministic. On another CPU or torch build the GP sampler's floating point can
    differ, and with it a run's later proposals: a CSV made elsewhere holds runs this machine may not repeat.
    """
    if not path.is_file():
        return {}
    with path.open(newline="") as rows:
        types = {"str": str, "int": int, "float": float}
        runs = [Run(**{f.name: types[f.type](row[f.name]) for f in fields(Run)}) for row in csv.DictReader(rows)]
    return {(run.settings, run.task, run.seed): run for run in runs}


def store_runs(runs: Iterable[Run], path: Path, done: dict[tuple[str, str, int], Run]) -> None:
    """Append each run to the CSV at ``path`` as it finishes (so a new start resumes) and to ``done``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.is_file()
    with path.open("a", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(Run)])
        if new_file:
            writer.writeheader()
        for run in runs:
            writer.writerow(asdict(run))
            out.flush()
            done[run.settings, run.task, run.seed] = run


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the values that are not NaN (a curve table has no test metric)."""
    values = [value for value in values if not math.isnan(value)]
    if not values:
        return math.nan, math.nan
    spread = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return statistics.fmean(values), spread


def summarise(runs: list[Run], names: list[str]) -> None:
    """Mean +- standard error per configuration, and the ratio of each mean regret to plain TPE's."""
    by_name = {name: [run for run in runs if run.configuration == name] for name in names}
    reference = by_name.get("TPE")
    header = "".join(f"{f'regret {m}x':>17}" for m in MULTIPLES)
    print(f"{'configuration':<24}{header}{'test bal. acc.':>17}{'vs TPE 10x':>11}{'trials':>8}{'pruned':>8}")
    for name, group in by_name.items():
        cells = ""
        for multiple in MULTIPLES:
            mean, se = mean_se([getattr(run, f"regret_{multiple}x") for run in group])
            cells += f"{mean:>10.4f} ±{se:.4f}"
        mean, se = mean_se([run.test_balanced_accuracy for run in group])
        versus = (
            statistics.fmean(run.regret_10x for run in group) / statistics.fmean(run.regret_10x for run in reference)
            if reference
            else math.nan
        )
        trials = statistics.fmean(run.trials for run in group)
        pruned = statistics.fmean(run.pruned for run in group)
        print(f"{name:<24}{cells}{mean:>10.4f} ±{se:.4f}{versus:>10.2f}x{trials:>8.0f}{pruned:>8.0f}")


def summarise_paired(runs: list[Run], reference: str) -> None:
    """``reference``'s regret minus each other configuration's, paired by task and seed (over the runs both have):
    mean +- standard error, and on how many pairs ``reference`` is lower and higher. Pairing removes the spread
    between tasks, which dominates the unpaired standard errors."""
    by_name: dict[str, dict[tuple[str, int], Run]] = {}
    for run in runs:
        by_name.setdefault(run.configuration, {})[run.task, run.seed] = run
    ours = by_name.pop(reference)
    print(f"{reference} minus each configuration, paired by task and seed (lower/higher of the pairs):")
    for name, theirs in by_name.items():
        keys = sorted(ours.keys() & theirs.keys())
        cells = ""
        for multiple in MULTIPLES:
            regret = f"regret_{multiple}x"
            differences = [getattr(ours[key], regret) - getattr(theirs[key], regret) for key in keys]
            mean, spread = mean_se(differences)
            lower, higher = sum(d < 0 for d in differences), sum(d > 0 for d in differences)
            cells += f"{mean:>+10.4f} ±{spread:.4f} {lower:>3}/{higher:<3}"
        print(f"  {name:<22}{cells}{len(keys):>6} pairs")


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that say where and on what a protocol run goes, shared with ``external_optimizers.py``."""
    parser.add_argument("--data", default=os.environ.get(DATA_ENV), help=f"YAHPO Gym data folder (or ${DATA_ENV})")
    parser.add_argument("--tasks", nargs="+", help="OpenML task ids (default: all 34)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="e.g. 5 with --seeds 5: held-out seeds 5..9")
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--csv", type=Path, default=Path("studies/benchmarks/search_quality.csv"))


def seed_range(arguments: argparse.Namespace) -> range:
    """The seeds that ``--first-seed`` and ``--seeds`` name."""
    return range(arguments.first_seed, arguments.first_seed + arguments.seeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_protocol_arguments(parser)
    parser.add_argument("--only", nargs="+", help="configurations to run (default: all)")
    parser.add_argument("--extra", action="append", default=[], help="'NAME=OVERRIDE OVERRIDE ...'")
    parser.add_argument("--report", action="store_true", help="print the table of the runs in the CSV; run none")
    parser.add_argument("--table", type=Path, help="replay this fine-tuning curve table instead of lcbench")
    parser.add_argument("--paired", metavar="NAME", help="also print NAME minus each configuration, paired")
    arguments = parser.parse_args()
    if arguments.table is not None and not arguments.table.is_file():
        parser.error(f"--table {arguments.table} is not a file; allowed: a CSV written by finetune_curves.py")
    if not (arguments.data or arguments.table):
        parser.error(f"--data (or ${DATA_ENV}) must name a YAHPO Gym data folder, or --table a curve table")
    configurations = dict(CONFIGURATIONS)
    for extra in arguments.extra:
        name, _, overrides = extra.partition("=")
        configurations[name.strip()] = overrides.split()
    names = arguments.only or list(configurations)
    unknown = sorted(set(names) - set(configurations))
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; known: {list(configurations)}")
    if arguments.paired is not None and arguments.paired not in names:
        parser.error(f"--paired {arguments.paired!r} is not among the configurations run; allowed: {names}")
    task_config = "lcbench" if arguments.table is None else "finetune"
    digests = {
        name: settings_or_error(parser, f"configuration {name!r}", configurations[name], task_config) for name in names
    }
    space = settings(CONFIGURATIONS["default"], task_config)[3]  # the one every configuration searches
    _load_surrogate(arguments.data, arguments.table, space)
    tasks = arguments.tasks or _surrogate.tasks
    done = earlier_runs(arguments.csv)
    seeds = seed_range(arguments)
    wanted = [(name, (digests[name][0], task, seed)) for name in names for task in tasks for seed in seeds]
    jobs = {key: (name, *digests[name], *key[1:]) for name, key in wanted if key not in done}  # each setting once
    shape = f"{len(names)} configurations x {len(tasks)} tasks x seeds {seeds.start}..{seeds.stop - 1}"
    outstanding = "missing" if arguments.report else "to run"
    print(f"{shape}: {len(wanted) - len(jobs)} runs from {arguments.csv}, {len(jobs)} {outstanding}")
    started = time.perf_counter()
    if not arguments.report:
        with worker_pool(arguments.processes, arguments.data, arguments.table, space) as pool:
            store_runs(pool.imap_unordered(_search, jobs.values()), arguments.csv, done)
    missing = Counter(name for name, key in wanted if key not in done)  # a mean over some tasks is not comparable
    complete = [name for name in names if not missing[name]]
    complete_runs = [replace(done[key], configuration=name) for name, key in wanted if name in complete]
    summarise(complete_runs, complete)
    if arguments.paired in complete:
        summarise_paired(complete_runs, arguments.paired)
    for name in sorted(missing):
        print(f"left out, {len(tasks) * len(seeds) - missing[name]} of {len(tasks) * len(seeds)} runs stored: {name}")
    if not arguments.report:
        print(f"{len(jobs)} runs in {time.perf_counter() - started:.0f} s; every run in {arguments.csv}")


if __name__ == "__main__":
    main()
