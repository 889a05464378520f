"""The shipped configs composed from Python as the command line composes them, and the defaults they configure."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from hydra import compose as compose_config
from hydra import initialize_config_module
from hydra.errors import HydraException
from omegaconf import DictConfig

from hps.search.components import build, build_sampler
from hps.search.errors import ConfigError, first_line

# The tasks: each is a config of hps.conf and the module of its entry point, hps.objectives.<task>, whose name
# Hydra also gives the job (hydra.job.name, a study's name unless hydra.sweeper.study_name says otherwise).
TASKS = ("finetune", "synthetic", "lcbench")


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config that ``hps-<task> OVERRIDES`` runs, with its ``hydra`` node (the sweeper's settings among them).

    Args:
        config_name: The task: ``finetune``, ``synthetic`` or ``lcbench``.
        overrides: Hydra overrides, as on the command line (no sweeps: one config is composed).
    """
    if config_name not in TASKS:
        raise ConfigError(f"config_name is {config_name!r}; allowed: {', '.join(TASKS)}")
    try:
        with initialize_config_module("hps.conf", version_base="1.3", job_name=config_name):
            return compose_config(config_name, overrides=list(overrides), return_hydra_config=True)
    except HydraException as error:
        raise ConfigError(first_line(error)) from None


def default_sampler(seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The sampler a sweep uses unless told otherwise, built as a sweep builds it (``sweeper/sampler/gp.yaml``).

    A Gaussian process fitted also to pruned trials (:class:`~hps.search.samplers.PruningAwareGPSampler`): Optuna's
    own learns only from complete trials, so under a pruner it would sample at random for long.

    Args:
        seed: Makes the proposals reproducible. As in a sweep, each trial draws from its own seed, derived from this
            one and the trial's number, so that parallel workers and resumed studies do not repeat proposals.
            None: not seeded.
    """
    config = compose("finetune", [] if seed is None else [f"hydra.sweeper.sampler.seed={seed}"])
    return build_sampler(config.hydra.sweeper.sampler)


def default_pruner() -> optuna.pruners.BasePruner:
    """The pruner a sweep uses unless told otherwise, built as a sweep builds it
    (``sweeper/pruner/successive_halving.yaml``).

    Optuna's asynchronous successive halving, with rungs at 4, 8, 16, ... steps, chosen on real fine-tuning curves
    and lcbench's learning curves. Steps are evaluations, ``training.evals_per_epoch`` of them per epoch, as the
    fine-tuning objective reports them, so the first rung is the end of epoch 1 at the default 4 evaluations.
    """
    return build("pruner", compose("finetune").hydra.sweeper.pruner)
