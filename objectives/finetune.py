"""Fine-tune a pretrained transformer classifier: the one training entry point.

Run alone it is one training run::

    hps-finetune training.learning_rate=1e-4 data=sst2

Run with ``-m`` the sweeper (:mod:`search.sweeper`) makes each trial of the study one such run; the only
difference is the :class:`~search.trial.TrialLink`, which reports every evaluation to the trial and stops
the run when the pruner says so. Outside a study the link does nothing.
"""

from __future__ import annotations

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
from objectives.model import encoder_depth, freeze_bottom, load_classifier, load_tokenizer
from objectives.train import Evaluation, TrainResult, train
from search.errors import ConfigError, exit_on_config_error
from search.progress import console, training_progress
from search.space import SearchSpace
from search.trial import TrialLink, package_versions


def fine_tune(cfg: DictConfig, link: TrialLink) -> TrainResult:
    """Train as ``cfg`` says, reporting each evaluation through ``link``; returns the final metric and curve."""
    started = time.perf_counter()
    torch.set_num_threads(cfg.training.threads or len(os.sched_getaffinity(0)))
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
    link.set_user_attrs(
        config=OmegaConf.to_container(cfg, resolve=True) | {"trial": None},
        # The command-line overrides that rebuild this config from conf/ on any machine.
        overrides=[o for o in hydra_config.overrides.task if not o.startswith(("++trial=", "trial="))],
        seed=cfg.training.seed,
        versions=package_versions("torch", "transformers", "optuna", "datasets", "hydra-core"),
        output_dir=hydra_config.runtime.output_dir,
        train_examples=len(train_set),
    )
    curve: list[Evaluation] = []

    def on_evaluation(evaluation: Evaluation) -> None:
        curve.append(evaluation)
        link.report(evaluation.step, evaluation.metric)

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


def preflight(cfg: DictConfig, space: SearchSpace) -> None:
    """Check, before any trial runs, everything a trial would otherwise fail on: data, model, metric, bounds."""
    metric_function(cfg.data.metric)
    load_splits(cfg.data)
    load_tokenizer(cfg.model)
    depth = encoder_depth(cfg.model)
    parameter = space.by_key().get("training.freeze_layers")
    if parameter is None:
        values = [cfg.training.freeze_layers]
    elif isinstance(parameter.distribution, CategoricalDistribution):
        values = list(parameter.distribution.choices)
    else:
        values = [parameter.distribution.low, parameter.distribution.high]
    if any(not isinstance(v, int) or not 0 <= v <= depth for v in values):
        where = f"search space parameter {parameter.name!r}" if parameter else "training.freeze_layers"
        raise ConfigError(
            f"{where}: freeze_layers values {values} go beyond model {cfg.model.name!r}, "
            f"which has {depth} encoder layers; allowed: 0..{depth}"
        )


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
