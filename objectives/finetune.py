"""Fine-tune a pretrained transformer classifier: the one training entry point.

Run alone it is one training run::

    hps-finetune training.learning_rate=1e-4 data=sst2

Run with ``-m`` the sweeper (:mod:`hps.search.sweeper`) makes each trial of the study one such run; the only
difference is the :class:`~search.trial.TrialLink`, which reports every evaluation to the trial and stops
the run when the pruner says so. Outside a study the link does nothing. :func:`fine_tune` itself reads no Hydra
state: :func:`hps.objective` runs it as a plain Optuna objective.

With ``production.enabled=true`` (what an exported best config sets) the same run is production training:
optionally on train + validation and for another number of epochs, then one evaluation on the test split,
and the model saved as a Hugging Face folder with ``metrics.json`` and the config it used.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import transformers
from datasets import Dataset, concatenate_datasets
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from peft import PeftModel
from torch import nn

from hps.objectives import setup
from hps.objectives.adapters import (
    add_adapter,
    check_adapter,
    encoder_linear_names,
    save_adapted,
    trainable_parameters,
)
from hps.objectives.checkpoints import best_index, check_value
from hps.objectives.data import data_fingerprint, load_splits, tokenize
from hps.objectives.device import (
    OutOfMemory,
    Placement,
    peak_cuda_memory_mb,
    peak_rss_mb,
    placement,
    release_memory,
    rss_mb,
)
from hps.objectives.features import TopLayers, cached_features, pad_features
from hps.objectives.inference import REFERENCE, model_outputs, save_reference
from hps.objectives.metrics import metric_function
from hps.objectives.model import check_freeze_layers, encoder_depth, freeze_bottom, load_classifier, load_tokenizer
from hps.objectives.train import Evaluation, TrainResult, check_training, train
from hps.search.check_report import note_models
from hps.search.errors import ConfigError, exit_on_config_error
from hps.search.progress import console, training_progress
from hps.search.registry import PRODUCTION, PROVENANCE, ModelEntry, promote, promoted, register
from hps.search.space import SearchSpace
from hps.search.storage import absolute_url, default_storage, has_password
from hps.search.trial import TrialLink, package_versions
from hps.search.workers import threads_per_worker

log = logging.getLogger(__name__)


def fine_tune(
    cfg: DictConfig, link: TrialLink, output_dir: Path | None = None, overrides: Sequence[str] = ()
) -> TrainResult:
    """Train as ``cfg`` says, reporting each evaluation through ``link``; returns the final metric and curve.

    In production mode it also evaluates on the test split and saves the model (:func:`save_production`). It reads
    no Hydra state, so the same function serves the Hydra job (:func:`main`) and :func:`hps.objective`.

    Args:
        cfg: The task config as a job sees it (without the ``hydra`` node).
        link: The trial to report to and store records with; an inert :class:`TrialLink` outside a study.
        output_dir: The run's folder, for its learning curve and confusion matrix (attached to the trial) and in
            production for the model; None writes no files, which production training refuses.
        overrides: The overrides that rebuild ``cfg`` from the shipped configs, stored with the trial so that an
            export can say how to run it again on any machine.
    """
    started = time.perf_counter()
    production = cfg.production.enabled
    if production and link.in_study:
        raise ConfigError("production.enabled is true inside a study; production training runs on its own")
    if production and output_dir is None:
        raise ValueError("production training saves a model: give fine_tune an output_dir")
    run = _set_up(cfg, production)
    _record_setup(cfg, link, run, output_dir, overrides)
    curve: list[Evaluation] = []
    on_evaluation = _evaluation_reporter(cfg, link, curve)
    collate = transformers.DataCollatorWithPadding(run.tokenizer)
    model, frozen, train_data, validation_data, batches = _trainable(cfg, run, collate)
    try:
        with training_progress(f"trial {link.number}" if link.in_study else "training") as progress:
            result = train(
                model,
                frozen,
                train_data,
                validation_data,
                batches,
                run.training,
                run.metric,
                on_evaluation,
                progress,
                run.place,
                value=cfg.objective.get("value", "last"),  # absent from configs exported before it existed
                direction=cfg.objective.direction,
                # merged validation, so no evaluation to pick the best by: train as far as the trial's best did
                train_until=cfg.production.get("best_step") if production and cfg.production.merge_validation else None,
            )
        result.model = run.classifier
        if cfg.objective.get("value", "last") == "best" and result.best_step is not None:
            log.info("best evaluation: step %d, its weights restored", result.best_step)
        log.info("trained for %d optimizer steps", result.optimizer_steps)
        if production:
            save_production(cfg, run, result, collate, output_dir)
        return result
    except torch.OutOfMemoryError:  # CUDA's; the host's ends the process or raises MemoryError
        raise OutOfMemory(run.place, run.training) from None
    except MemoryError:
        raise OutOfMemory(run.place, run.training) from None
    finally:
        _record_outcome(cfg, link, run, curve, time.perf_counter() - started, output_dir)


@dataclass
class _Run:
    """A run ready to train: its settings, where it runs, its metric, its tokenised splits and its model."""

    training: DictConfig
    place: Placement
    threads: int
    metric: tuple[str, Callable[[np.ndarray, np.ndarray], float]]
    label_names: list[str]
    tokenizer: transformers.PreTrainedTokenizerBase
    train_set: Dataset
    validation_set: Dataset | None
    test_set: Dataset | None
    classifier: nn.Module
    frozen: list[nn.Module]
    adapted: PeftModel | None  # the classifier with LoRA adapters, for saving and merging; None without


def _set_up(cfg: DictConfig, production: bool) -> _Run:
    """Check the settings, place the run, read and tokenise its data and build its model, refusing bad input early."""
    training = _production_training(cfg) if production else cfg.training
    check_training(training)
    check_adapter(training, cfg.model, encoder_linear_names(cfg.model))
    place = placement(training)
    if place.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(place.device)  # cuda_peak_mb is this run's, not the process's
    threads = training.threads or threads_per_worker()
    torch.set_num_threads(threads)
    metric = (cfg.data.metric, metric_function(cfg.data.metric))
    splits = load_splits(cfg.data, with_test=production)
    if production and cfg.production.merge_validation:
        splits = replace(splits, train=concatenate_datasets([splits.train, splits.validation]), validation=None)
    tokenizer = load_tokenizer(cfg.model)
    train_set, validation_set, test_set = (
        None if split is None else tokenize(split, tokenizer, list(cfg.data.text_columns), training.max_length)
        for split in (splits.train, splits.validation, splits.test)
    )
    transformers.set_seed(training.seed)  # before the new head is initialised
    classifier = load_classifier(cfg.model, cfg.data.num_labels, training.dropout, splits.label_names)
    frozen = freeze_bottom(classifier, cfg.model, training.freeze_layers)
    adapted = add_adapter(classifier, cfg.model, training)
    classifier.to(place.device)
    return _Run(
        training,
        place,
        threads,
        metric,
        splits.label_names,
        tokenizer,
        train_set,
        validation_set,
        test_set,
        classifier,
        frozen,
        adapted,
    )


def _record_setup(
    cfg: DictConfig, link: TrialLink, run: _Run, output_dir: Path | None, overrides: Sequence[str]
) -> None:
    """Log what the run trains on, and store with the trial how to repeat it and where and how it runs."""
    trainable = trainable_parameters(run.classifier)
    log.info(
        "fine-tuning %s (%s of %s parameters trained%s) on %s: %d training and %d validation examples, %s in %s, "
        "%d threads",
        cfg.model.name,
        f"{trainable:,}",
        f"{sum(p.numel() for p in run.classifier.parameters()):,}",
        ", LoRA" if run.adapted is not None else "",
        cfg.data.name,
        len(run.train_set),
        len(run.validation_set) if run.validation_set is not None else 0,
        run.place.device_name,
        run.place.precision,
        run.threads,
    )
    config = OmegaConf.to_container(cfg, resolve=False) | {"trial": None}
    config["training"]["precision"] = run.place.precision  # pinned: production training reproduces the trial's
    link.set_records(
        # Unresolved, as Hydra composed it: portable (paths and the model folder stay interpolations).
        config=config,
        overrides=list(overrides),
        versions=package_versions("torch", "transformers", "optuna", "datasets", "hydra-core"),
    )
    link.set_user_attrs(
        seed=run.training.seed,
        threads=run.threads,
        device=run.place.device_name,
        precision=run.place.precision,
        output_dir=None if output_dir is None else str(output_dir),
        train_examples=len(run.train_set),
        trainable_parameters=trainable,
    )


def _evaluation_reporter(cfg: DictConfig, link: TrialLink, curve: list[Evaluation]) -> Callable[[Evaluation], None]:
    """What the training loop calls after each evaluation: add it to ``curve``, log it, report it to the trial."""

    def on_evaluation(evaluation: Evaluation) -> None:
        curve.append(evaluation)
        log.info(
            "evaluation %d: %s %r, train loss %r",
            evaluation.step,
            cfg.data.metric,
            evaluation.metric,
            evaluation.train_loss,
        )
        link.report(evaluation.step, evaluation.metric, can_prune=not evaluation.final)

    return on_evaluation


def _trainable(
    cfg: DictConfig, run: _Run, collate: transformers.DataCollatorWithPadding
) -> tuple[nn.Module, list[nn.Module], Any, Any, Callable[[list], dict]]:
    """What the loop trains and on what: the classifier on tokens, or with the feature cache and a frozen bottom,
    its top layers on the bottom's hidden states, computed once per dataset; and how batches are made."""
    if not (run.training.get("feature_cache", False) and run.frozen):  # absent from configs exported before it existed
        return run.classifier, run.frozen, run.train_set, run.validation_set, collate
    folder = Path(cfg.paths.cache_dir) / "features"
    top = TopLayers(run.classifier, cfg.model, run.training.freeze_layers)
    train_data, validation_data = (
        None
        if split is None
        else cached_features(run.classifier, cfg.model, run.training.freeze_layers, split, collate, folder)
        for split in (run.train_set, run.validation_set)
    )
    cached = sum(table.bytes for table in (train_data, validation_data) if table is not None)
    log.info("frozen bottom cached: %.1f MB of hidden states in %s", cached / 1e6, folder)
    return top, [], train_data, validation_data, pad_features


def _record_outcome(
    cfg: DictConfig, link: TrialLink, run: _Run, curve: list[Evaluation], seconds: float, output_dir: Path | None
) -> None:
    """Store the curve and what the run cost with the trial, and its files: also for a pruned or failed run."""
    last = curve[-1] if curve else None
    link.set_records(curve=[evaluation.as_dict() for evaluation in curve])
    link.set_user_attrs(
        wall_time_s=round(seconds, 3),
        train_examples_per_s=round(last.examples_seen / last.train_seconds, 2) if last else None,
        max_rss_mb=peak_rss_mb(),
        rss_mb=rss_mb(),
        cuda_peak_mb=peak_cuda_memory_mb(run.place.device),
    )
    best = best_index([evaluation.metric for evaluation in curve], cfg.objective.direction)
    if cfg.objective.get("value", "last") == "best" and best is not None:  # production.best_step of an export
        link.set_user_attrs(best_step=curve[best].step, best_value=curve[best].metric)
    if last is not None and output_dir is not None:
        run_files(cfg, link, curve, run.label_names, output_dir)


def run_files(cfg: DictConfig, link: TrialLink, curve: list[Evaluation], label_names: list[str], folder: Path) -> None:
    """Write the learning curve, the last evaluation's confusion matrix (rows and columns named by ``label_names``)
    and the config; attach them to the trial.

    Also for pruned and failed trials (their curve up to the stop). A file that cannot be written or
    attached costs a warning, never the trial's stored result.
    """
    from hps.search.figures import confusion_matrix_files, learning_curve_files  # matplotlib: 0.7 s, only when needed

    title = f"{link.study_name} trial {link.number}" if link.in_study else f"{cfg.model.name} on {cfg.data.name}"
    try:
        files = [
            *learning_curve_files([e.as_dict() for e in curve], cfg.data.metric, folder, title),
            *confusion_matrix_files(curve[-1].confusion, label_names, folder, f"{title}, validation"),
        ]
        composed = folder / ".hydra" / "config.yaml"  # absent when hydra.output_subdir is null
        for path in [*files, composed] if composed.is_file() else files:
            link.attach(path)
    except Exception as error:  # the trial's outcome matters more than its pictures
        log.warning("could not write or attach the run's files: %s: %s", type(error).__name__, error)


def _production_training(cfg: DictConfig) -> DictConfig:
    """The training settings with production.num_epochs applied; production.best_step checked against them."""
    training = cfg.training.copy()
    if cfg.production.num_epochs is not None:
        with open_dict(training):
            training.num_epochs = cfg.production.num_epochs
    check_best_step(cfg.production.get("best_step"), training)
    return training


def check_best_step(best_step: Any, training: DictConfig | None = None) -> None:
    """Refuse a production.best_step that is not null or (given ``training``) one of its grid steps, in one line."""
    if best_step is None:
        return
    if isinstance(best_step, bool) or not isinstance(best_step, int) or best_step < 1:
        raise ConfigError(f"production.best_step is {best_step!r}; it must be null or an integer >= 1")
    evaluations = None if training is None else training.num_epochs * training.evals_per_epoch
    if isinstance(evaluations, int) and best_step > evaluations:
        raise ConfigError(
            f"production.best_step is {best_step}, past the training's {evaluations} evaluation steps "
            "(num_epochs x evals_per_epoch); set it to at most that, or to null"
        )


def save_production(
    cfg: DictConfig, run: _Run, result: TrainResult, collate: transformers.DataCollatorWithPadding, folder: Path
) -> None:
    """Evaluate once on the test split; save the model folder, ``metrics.json``, ``config.yaml``, and what model
    checks compare new data against (``reference.npz``: the test split's labels, predictions, probabilities and
    pooled embeddings); register the model (``provenance.json`` says where).

    With LoRA adapters it saves them to ``adapter/`` and, in ``model/``, the model with them merged into its
    weights: a plain ``transformers`` model that predicts as the adapted one did.
    """
    training, test_set, metric_name = run.training, run.test_set, cfg.data.metric
    folder.mkdir(parents=True, exist_ok=True)
    test_value = None
    if test_set is not None:
        outputs = model_outputs(result.model, test_set, collate, run.place, details=True)
        test_value = metric_function(metric_name)(outputs.labels, outputs.predictions)
        save_reference(outputs, folder / REFERENCE)
    trainable = trainable_parameters(result.model)
    model = result.model if run.adapted is None else save_adapted(run.adapted, folder)
    model.save_pretrained(folder / "model")
    run.tokenizer.save_pretrained(folder / "model")
    metrics = {
        "metric": metric_name,
        "test": test_value,
        "test_examples": len(test_set) if test_set else 0,
        "validation": result.metric,  # None when validation was merged into training
        "merge_validation": cfg.production.merge_validation,
        "num_epochs": training.num_epochs,
        "adapter": training.get("adapter"),
        "trainable_parameters": trainable,
    }
    if test_set is None:
        log.warning(
            "data %s has no test split (data.test_file): metrics.json has no test metric and hps check no reference",
            cfg.data.name,
        )
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    OmegaConf.save(cfg, folder / "config.yaml", resolve=True)
    sizes = {"train": len(run.train_set), "validation": len(run.validation_set or []), "test": len(test_set or [])}
    entry = register_production(cfg, folder, sizes, metrics)
    console.print(
        f"production model {entry.id} saved to {folder / 'model'}; test {metric_name}: {test_value}"
        + (f"; promoted: {Path(cfg.paths.studies_dir) / entry.lineage / PRODUCTION}" if entry.promoted else ""),
        highlight=False,
    )


def register_production(cfg: DictConfig, folder: Path, sizes: dict[str, int], metrics: dict) -> ModelEntry:
    """Record the model in the registry of its study's database (:mod:`hps.search.registry`) and write
    ``provenance.json``; the first model of a lineage becomes its production model."""
    source, studies = cfg.production.get("source") or {}, Path(cfg.paths.studies_dir)
    url = absolute_url(source.get("storage") or default_storage(studies))
    entry = ModelEntry(
        lineage=source.get("lineage") or cfg.data.name,
        folder=str(folder.resolve()),
        data=cfg.data.name,
        fingerprint=data_fingerprint(cfg.data, with_test=True),
        sizes=sizes,
        metric=metrics["metric"],
        validation=metrics["validation"],
        test=metrics["test"],
        versions=package_versions("torch", "transformers", "optuna", "datasets", "hydra-core"),
        study=source.get("study"),
        trial=source.get("trial"),
        parent=source.get("parent"),
    )
    entry.id = register(url, entry)
    provenance = {
        "model": entry.id,
        "storage": url if source.get("storage") or not has_password(url) else None,  # None: HPS_STORAGE
        **{key: getattr(entry, key) for key in ("lineage", "study", "trial", "parent", "data", "fingerprint")},
    }
    (folder / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    if promoted(url, entry.lineage) is None:
        promote(url, entry.id, studies)
        entry.promoted = True
    note_models(url, entry.study)
    return entry


def preflight(cfg: DictConfig, space: SearchSpace) -> None:
    """Check, before any trial runs, everything a trial would otherwise fail on: data, model, metric, and the
    training settings (device and precision included) with every value the search space can give them.

    It is the first fine-tuning code a sweep runs, so it sets the process up (:func:`~hps.objectives.setup`).
    """
    setup()
    metric_function(cfg.data.metric)
    load_splits(cfg.data)
    load_tokenizer(cfg.model)
    depth = encoder_depth(cfg.model)
    linear_names = encoder_linear_names(cfg.model)

    value = cfg.objective.get("value", "last")
    check_value(value)
    check_best_step(cfg.production.get("best_step"))  # its range is checked by production training's own epochs
    direction = OmegaConf.select(cfg, "hydra.sweeper.direction")  # the study's, when it overrides the objective's
    if value == "best" and direction is not None and direction != cfg.objective.direction:
        raise ConfigError(
            f"objective.value is best and hydra.sweeper.direction is {direction}, but objective.direction, which "
            f"picks the best evaluation, is {cfg.objective.direction}: set objective.direction={direction}"
        )

    def check(candidate: DictConfig) -> None:
        check_training(candidate.training)
        placement(candidate.training)
        check_freeze_layers(candidate.training.freeze_layers, depth, cfg.model.name)
        check_adapter(candidate.training, candidate.model, linear_names)

    space.check_candidates(cfg, check)


@hydra.main(version_base="1.3", config_path="pkg://hps.conf", config_name="finetune")
def main(cfg: DictConfig) -> float:
    setup()
    job = HydraConfig.get()
    folder = Path(job.runtime.output_dir)
    # The command-line overrides that rebuild this config from conf/ on any machine (not the trial's address).
    overrides = [o for o in job.overrides.task if not o.startswith(("++trial=", "trial="))]
    link = TrialLink.from_config(cfg)
    if link.in_study:  # any failure is stored with the trial by the sweeper
        try:
            return fine_tune(cfg, link, folder, overrides).metric
        finally:  # the next trial of this worker starts from what the last one held
            release_memory()
    with exit_on_config_error():
        try:
            result = fine_tune(cfg, link, folder, overrides)
        except FloatingPointError as error:
            print(f"error: training failed: {error}", file=sys.stderr)
            raise SystemExit(1) from None
    if result.metric is not None:
        console.print(f"{cfg.data.metric} on validation: {result.metric!r} ({len(result.curve)} evaluations)")
    return result.metric


if __name__ == "__main__":
    main()
