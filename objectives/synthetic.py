"""A synthetic objective: a learning curve computed from the hyperparameters, in milliseconds.

For what does not need real training: the worker and storage tests, the load benchmark, and trying sampler
or pruner settings. A trial goes through the same sweeper, :class:`~search.trial.TrialLink`, pruner and
storage as fine-tuning; only the curve is a formula, with an optional sleep per step standing for compute::

    hps-synthetic -m hydra.sweeper.n_trials=100 hydra.sweeper.n_jobs=4
"""

from __future__ import annotations

import math
import random
import time

import hydra
from omegaconf import DictConfig

from hps.search.errors import ConfigError, is_whole_number
from hps.search.space import SearchSpace
from hps.search.trial import TrialLink


def curve(x: float, y: float, steps: int, noise: float) -> list[float]:
    """The score after each step: rises towards a ceiling set by (x, y), best 1.0 at x=1, y=-2."""
    ceiling = math.exp(-((x - 1) ** 2 + (y + 2) ** 2) / 20)
    rng = random.Random(f"{x!r},{y!r}")  # the same parameters give the same curve
    progress = [(1 - math.exp(-step / 3)) / (1 - math.exp(-steps / 3)) for step in range(1, steps + 1)]
    return [ceiling * fraction + rng.gauss(0, noise) for fraction in progress]


def preflight(cfg: DictConfig, space: SearchSpace) -> None:
    """Refuse, before any trial runs, settings every trial would fail on, also those the search space can give."""

    def check(candidate: DictConfig) -> None:
        if not is_whole_number(candidate.steps, 1):
            raise ConfigError(f"steps is {candidate.steps!r}; it must be a whole number >= 1")
        for key in ("step_seconds", "noise"):
            value = candidate[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{key} is {value!r}; it must be a number >= 0")

    space.check_candidates(cfg, check)


@hydra.main(version_base="1.3", config_path="pkg://hps.conf", config_name="synthetic")
def main(cfg: DictConfig) -> float:
    link = TrialLink.from_config(cfg)
    values = curve(cfg.x, cfg.y, cfg.steps, cfg.noise)
    for step, value in enumerate(values, start=1):
        time.sleep(cfg.step_seconds)
        link.report(step, value, can_prune=step < cfg.steps)
    return values[-1]


if __name__ == "__main__":
    main()
