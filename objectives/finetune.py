"""Fine-tune a pretrained transformer classifier: the one training entry point.

Run alone it is one training run::

    hps-finetune training.learning_rate=1e-4 data=sst2

Run with ``-m`` the sweeper (:mod:`search.sweeper`) makes each trial of the study one such run; the only
difference is the :class:`~search.trial.TrialLink`, which reports every evaluation to the trial and stops
the run when the pruner says so. Outside a study the link does nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import hydra
import torch
import transformers
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution

from objectives.data import load_splits, tokenize
from objectives.metrics import metric_function
from objectives.model import check_freeze_layers, encoder_depth, freeze_bottom, load_classifier, load_tokenizer
from objectives.train import Evaluation, TrainResult, check_training, train
from search.errors import exit_on_config_error
from search.progress import console, training_progress
from search.space import SearchSpace
from search.trial import TrialLink, package_versions

log = logging.getLogger(__name__)


def fine_tune(cfg: DictConfig, link: TrialLink) -> TrainResult:
    """Train as ``cfg`` says, reporting each evaluation through ``link``; returns the final metric and curve."""
    started = time.perf_counter()
    check_training(cfg.training)
    threads = cfg.training.threads or available_cores()
    torch.set_num_threads(threads)
    metric = (cfg.data.metric, metric_function(cfg.data.metric))
    splits = load_splits(cfg.data)
    tokenizer = load_tokenizer(cfg.model)
    train_set, validation_set = (
        tokenize(split, tokenizer, list(cfg.data.text_columns), cfg.training.max_length)
        for split in (splits.train, splits.validation)
    )
    transformers.set_seed(cfg.training.seed)  # before the new head is initialised
    classifier = load_classifier(cfg.model, cfg.data.num_labels, cfg.training.dropout)
    frozen = freeze_bottom(classifier, cfg.model, cfg.training.freeze_layers)
    hydra_config = HydraConfig.get()
    log.info(
        "fine-tuning %s on %s: %d training and %d validation examples, %d threads",
        cfg.model.name,
        cfg.data.name,
        len(train_set),
        len(validation_set),
        threads,
    )
    link.set_user_attrs(
        # Unresolved, as Hydra composed it: portable (paths and the model folder stay interpolations).
        config=OmegaConf.to_container(cfg, resolve=False) | {"trial": None},
        # The command-line overrides that rebuild this config from conf/ on any machine.
        overrides=[o for o in hydra_config.overrides.task if not o.startswith(("++trial=", "trial="))],
        seed=cfg.training.seed,
        threads=threads,
        versions=package_versions("torch", "transformers", "optuna", "datasets", "hydra-core"),
        output_dir=hydra_config.runtime.output_dir,
        train_examples=len(train_set),
    )
    curve: list[Evaluation] = []

    def on_evaluation(evaluation: Evaluation) -> None:
        curve.append(evaluation)
        log.info("evaluation %d: %s %.4f", evaluation.step, cfg.data.metric, evaluation.metric)
        link.report(evaluation.step, evaluation.metric, can_prune=not evaluation.final)

    try:
        with training_progress(f"trial {link.number}" if link.in_study else "training") as progress:
            return train(
                classifier,
                frozen,
                train_set,
                validation_set,
                transformers.DataCollatorWithPadding(tokenizer),
                cfg.training,
                metric,
                on_evaluation,
                progress,
            )
    finally:
        last = curve[-1] if curve else None
        link.set_user_attrs(
            curve=[evaluation.as_dict() for evaluation in curve],
            wall_time_s=round(time.perf_counter() - started, 3),
            train_examples_per_s=round(last.examples_seen / last.train_seconds, 2) if last else None,
        )


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def preflight(cfg: DictConfig, space: SearchSpace) -> None:
    """Check, before any trial runs, everything a trial would otherwise fail on: data, model, metric, bounds."""
    metric_function(cfg.data.metric)
    load_splits(cfg.data)
    load_tokenizer(cfg.model)
    check_training(cfg.training)
    parameter = space.by_key().get("training.freeze_layers")
    if parameter is None:
        values, where = [cfg.training.freeze_layers], "training.freeze_layers"
    elif isinstance(parameter.distribution, CategoricalDistribution):
        values, where = list(parameter.distribution.choices), f"search space parameter {parameter.name!r}"
    else:
        values = [parameter.distribution.low, parameter.distribution.high]
        where = f"search space parameter {parameter.name!r}"
    check_freeze_layers(values, encoder_depth(cfg.model), cfg.model.name, where)


@hydra.main(version_base="1.3", config_path="../conf", config_name="finetune")
def main(cfg: DictConfig) -> float:
    link = TrialLink.from_config(cfg)
    if link.in_study:  # any failure is stored with the trial by the sweeper
        return fine_tune(cfg, link).metric
    with exit_on_config_error():
        try:
            result = fine_tune(cfg, link)
        except FloatingPointError as error:
            print(f"error: training failed: {error}", file=sys.stderr)
            raise SystemExit(1) from None
    console.print(f"{cfg.data.metric} on validation: {result.metric:.4f} ({len(result.curve)} evaluations)")
    return result.metric


if __name__ == "__main__":
    main()
