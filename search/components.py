"""The sampler and the pruner of ``hydra.sweeper``, built for each study from their configs."""

from __future__ import annotations

from typing import Any

import optuna
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from hps.search.errors import ConfigError, first_line, is_whole_number
from hps.search.samplers import seeded_per_trial


def build_sampler(config: DictConfig) -> optuna.samplers.BaseSampler:
    """The sampler of ``hydra.sweeper.sampler``: ours or any Optuna sampler, named by its ``_target_``.

    A seeded one draws each trial from its own seed (:func:`~hps.search.samplers.seeded_per_trial`); with one seed
    per process, every worker and every resumed run would propose the same parameters again.

    Args:
        config: The sampler's ``_target_`` and arguments; ``seed``, if set, a whole number >= 0.
    """
    seed = config.get("seed")
    if seed is None:
        return build("sampler", config)
    if not is_whole_number(seed, 0):
        raise ConfigError(f"hydra.sweeper.sampler.seed is {seed!r}; allowed: a whole number >= 0, or null")
    return seeded_per_trial(lambda trial_seed: build("sampler", config, seed=trial_seed), seed)


def build(what: str, config: DictConfig, **changes: Any) -> Any:
    """Instantiate a sampler or pruner config with ``changes``, or say in one line why it cannot be.

    Args:
        what: ``sampler`` or ``pruner``, as the message names it.
        config: Its ``_target_`` and arguments.
        changes: Arguments that replace the config's (a trial's seed).
    """
    try:
        return instantiate(config, **changes)
    except (InstantiationException, ImportError) as error:
        reason = first_line(error.__cause__ or error)
        raise ConfigError(f"cannot build the {what} {config.get('_target_')!r}: {reason}") from None
