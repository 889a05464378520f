"""Pruning headroom: how much lower the regret could be with the same sampler and a better pruner.

On the lcbench surrogate the final value of every configuration is known in advance, so a pruner can be given
foresight. Run beside the configured pruner (``default`` unless ``--overrides`` say otherwise), with the same
sampler, seeds and budget as ``search_quality.py``:

- ``keep improving``: the configured pruner, except that it never stops a trial that will beat the incumbent
  (what its wrong prunes cost);
- ``stop the rest at the first rung``: the configured pruner, and every trial that will not beat the incumbent
  stops at ``--rung`` (what the epochs it lets such trials run cost);
- ``oracle``: no pruner, only that stop: the lowest regret any pruner that decides at ``--rung`` could reach.

"Beat the incumbent" means a final value above the best complete trial's so far. It prints the mean regret at
each budget and its paired difference from the configured pruner::

    python benchmarks/pruning_headroom.py --data DIR                     # 34 tasks x 5 seeds at 10x: minutes
    python benchmarks/pruning_headroom.py --data DIR --budget 30 --overrides hydra/sweeper/pruner=median
"""

from __future__ import annotations

import argparse
import math
import os
import statistics

import optuna
import search_quality
from hydra.utils import instantiate

from hps.objectives.lcbench import DATA_ENV, EPOCHS, Surrogate
from hps.search.space import parse_search_space

POLICIES = ("configured pruner", "keep improving", "stop the rest at the first rung", "oracle")


class ForesightPruner(optuna.pruners.BasePruner):
    """``policy`` applied to ``pruner``'s decisions, knowing each trial's final value from the ledger's surrogate."""

    def __init__(
        self, policy: str, pruner: optuna.pruners.BasePruner, ledger: search_quality.Ledger, rung: int
    ) -> None:
        self.policy, self.pruner, self.ledger, self.rung = policy, pruner, ledger, rung
        self._final: dict[int, float] = {}  # by trial number: one surrogate call per trial

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.number not in self._final:
            self._final[trial.number] = float(self.ledger.curve(trial.params)[search_quality.METRIC][-1])
        improving = self._final[trial.number] > self.ledger.best_value  # the best complete trial's value so far
        pruned = self.pruner.prune(study, trial)  # always asked: successive halving records the trial's rungs
        stop_here = trial.last_step == self.rung and not improving
        if self.policy == "oracle":
            return stop_here
        if self.policy == "stop the rest at the first rung" and stop_here:
            return True
        return pruned and not (self.policy == "keep improving" and improving)


def regrets(job: tuple) -> dict[int, float]:
    """The incumbent's regret at each multiple of ``multiples`` for one policy, task and seed."""
    policy, sampler, pruner, space, task, seed, multiples, rung = job
    parsed = parse_search_space(space)
    ledger = search_quality.Ledger(search_quality._surrogate, task, parsed, multiples)
    foresight = ForesightPruner(policy, instantiate(pruner), ledger, rung)
    study = search_quality.new_study(task, seed, sampler, foresight)
    search_quality.run_trials(study, ledger, parsed.distributions)
    return ledger.regrets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get(DATA_ENV), help=f"YAHPO Gym data folder (or ${DATA_ENV})")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=10, help="full trainings' worth of epochs; regret at 10x, ...")
    parser.add_argument("--rung", type=int, default=4, help="the step at which foresight stops a trial")
    parser.add_argument("--overrides", nargs="*", default=[], help="of conf/lcbench.yaml, as in search_quality.py")
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)))
    arguments = parser.parse_args()
    if not arguments.data:
        parser.error(f"--data (or ${DATA_ENV}) must name a YAHPO Gym data folder")
    if not 1 <= arguments.rung < EPOCHS:
        parser.error(f"--rung is {arguments.rung}; allowed: 1 to {EPOCHS - 1}")
    if arguments.budget < 1:
        parser.error(f"--budget is {arguments.budget}; allowed: a positive number of full trainings")
    _, sampler, pruner, space = search_quality.settings_or_error(parser, "--overrides", arguments.overrides)
    if not pruner or pruner["_target_"].endswith("HyperbandPruner"):  # TPE treats Hyperband's brackets apart
        parser.error("the configuration's pruner must be one that foresight can wrap: not none, not hyperband")
    multiples = (*(m for m in search_quality.MULTIPLES if m < arguments.budget), arguments.budget)
    tasks = Surrogate(arguments.data).tasks
    runs = [(task, seed) for task in tasks for seed in range(arguments.seeds)]
    jobs = [(policy, sampler, pruner, space, *run, multiples, arguments.rung) for policy in POLICIES for run in runs]
    with search_quality.worker_pool(arguments.processes, arguments.data) as pool:
        results = pool.map(regrets, jobs)
    by_policy = {policy: results[i * len(runs) : (i + 1) * len(runs)] for i, policy in enumerate(POLICIES)}
    reference = by_policy[POLICIES[0]]
    print(f"{len(tasks)} tasks x {arguments.seeds} seeds; regret (paired difference from the configured pruner)")
    print(f"{'policy':<34}" + "".join(f"{f'{m}x':>28}" for m in multiples))
    for policy, group in by_policy.items():
        cells = ""
        for multiple in multiples:
            differences = [run[multiple] - base[multiple] for run, base in zip(group, reference, strict=True)]
            spread = statistics.stdev(differences) / math.sqrt(len(differences))
            mean = statistics.fmean(run[multiple] for run in group)
            cells += f"{mean:>10.4f} ({statistics.fmean(differences):+.4f} ±{spread:.4f})"
        print(f"{policy:<34}{cells}")


if __name__ == "__main__":
    main()
