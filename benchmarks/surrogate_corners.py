"""Surrogate corners: where the lcbench surrogate predicts better than anything it was fitted on.

YAHPO Gym's lcbench model was fitted on LCBench's random configurations, which leave the corners of the 7-dimensional
space empty, and there it extrapolates. This evaluates every corner of the space (each parameter at its low or
high end: 128 configurations) on every task, trained to the end, and prints, for the space and for the space shrunk
to an inner fraction of each range (of its logarithm's where the space is logarithmic):

- the mean over tasks of the best corner's normalised regret (YAHPO Gym's per-task min and max over 0.5M random
  points, as ``search_quality.py`` scores), and on how many tasks a corner beats that max (regret below 0);
- the one corner with the lowest mean regret, the same configuration on every task: what a "search" that only
  trains that configuration scores, at the cost of one training.

A sampler that drives parameters to their bounds scores well on ``search_quality.py`` for that reason alone::

    python benchmarks/surrogate_corners.py --data DIR                     # the space and its inner 90% and 80%
    python benchmarks/surrogate_corners.py --data DIR --inner 1 0.6
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics

from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution, IntDistribution
from search_quality import CONF, METRIC

from hps.objectives.lcbench import DATA_ENV, Surrogate
from hps.search.space import parse_search_space

SPACE = CONF / "search_space" / "lcbench.yaml"


def at_fraction(distribution: FloatDistribution | IntDistribution, fraction: float) -> float:
    """The value ``fraction`` of the way along ``distribution``'s range (its logarithm's if log), rounded if int."""
    low, high = distribution.low, distribution.high
    if distribution.log:
        value = math.exp(math.log(low) + fraction * (math.log(high) - math.log(low)))
    else:
        value = low + fraction * (high - low)
    return round(value) if isinstance(distribution, IntDistribution) else value


def corners(inner: float) -> list[dict[str, float]]:
    """The 2**d corners of the lcbench space shrunk to its inner fraction ``inner``, keyed as the surrogate's."""
    space = parse_search_space(OmegaConf.to_container(OmegaConf.load(SPACE)))
    ends = ((1 - inner) / 2, (1 + inner) / 2)
    keys = {parameter.key.rsplit(".", 1)[-1]: parameter.distribution for parameter in space.parameters.values()}
    return [
        {key: at_fraction(distribution, end) for (key, distribution), end in zip(keys.items(), choice, strict=True)}
        for choice in itertools.product(ends, repeat=len(keys))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get(DATA_ENV), help=f"YAHPO Gym data folder (or ${DATA_ENV})")
    parser.add_argument("--inner", nargs="+", type=float, default=[1.0, 0.9, 0.8], help="fractions of each range")
    arguments = parser.parse_args()
    if not arguments.data:
        parser.error(f"--data (or ${DATA_ENV}) must name a YAHPO Gym data folder")
    if not all(0 < inner <= 1 for inner in arguments.inner):
        parser.error(f"--inner {arguments.inner}: each fraction must be in (0, 1]")
    surrogate = Surrogate(arguments.data)
    print(f"{'space':<12}{'best corner per task':>22}{'tasks below 0':>15}   one corner for every task (1 training)")
    for inner in arguments.inner:
        configurations = corners(inner)
        regrets = [  # [corner][task]
            [
                surrogate.normalised_regret(task, METRIC, float(surrogate.curve(task, config)[METRIC][-1]))
                for task in surrogate.tasks
            ]
            for config in configurations
        ]
        best_per_task = [min(column) for column in zip(*regrets, strict=True)]
        one = min(range(len(configurations)), key=lambda index: statistics.fmean(regrets[index]))
        spread = statistics.stdev(regrets[one]) / math.sqrt(len(surrogate.tasks))
        described = ", ".join(f"{key} {value:.4g}" for key, value in configurations[one].items())
        print(
            f"{'inner ' + format(inner, '.0%'):<12}{statistics.fmean(best_per_task):>22.4f}"
            f"{sum(regret < 0 for regret in best_per_task):>10} of {len(best_per_task)}"
            f"   {statistics.fmean(regrets[one]):.4f} ± {spread:.4f} ({described})"
        )


if __name__ == "__main__":
    main()
