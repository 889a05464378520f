"""The fine-tuning loop: plain PyTorch, dynamic padding, evaluation on a fixed grid of training progress.

Evaluations happen ``evals_per_epoch`` times per epoch, at the same fractions of an epoch whatever the batch
size, and are numbered by their place on that grid (evaluation k of epoch e is step
``(e - 1) * evals_per_epoch + k``): that is the step reported to the pruner, so trials with different batch
sizes are compared after the same amount of training. The returned metric is the one of the last
evaluation, the model as training leaves it (what production training from the same config gives); with
``value="best"`` it is the best evaluation's, with the best weights put back (:mod:`objectives.checkpoints`).
Early stopping (``training.early_stopping.patience``) ends training after that many evaluations without
improvement; every evaluation, the last included, is reported first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from datasets import Dataset
from omegaconf import DictConfig
from sklearn.metrics import confusion_matrix
from torch import nn
from torch.utils.data import DataLoader
from transformers import get_scheduler

from hps.objectives.batching import LengthGroupedBatches
from hps.objectives.checkpoints import BestCheckpoint, check_early_stopping, check_value
from hps.objectives.device import CPU_FP32, Placement
from hps.objectives.features import FeatureTable, example_lengths
from hps.objectives.inference import predict
from hps.search.errors import ConfigError
from hps.search.progress import TrainingProgress

# transformers schedules that run on the step count alone (others need a metric or extra arguments)
LR_SCHEDULES = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)


@dataclass
class Evaluation:
    step: int  # evaluation number, the pruner's step
    epoch: float
    examples_seen: int
    train_loss: float  # mean training loss since the previous evaluation
    metric: float
    train_seconds: float  # optimisation time so far, evaluations excluded
    final: bool  # the last evaluation of training: at its end, or where early stopping ended it
    # Rows: true label, columns: predicted label. Kept for the run's files, not stored with the curve.
    confusion: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "confusion"}


@dataclass
class TrainResult:
    metric: float | None  # the last evaluation's, or the best's (value="best"); None without a validation split
    curve: list[Evaluation]
    model: nn.Module  # as training left it, or with the best evaluation's weights (value="best")
    best_step: int | None = None  # grid step of the best evaluation (the first on ties); None without evaluations
    optimizer_steps: int = 0  # optimizer steps taken


def evaluation_points(steps_per_epoch: int, epochs: int, evals_per_epoch: int) -> dict[int, int]:
    """Optimizer step -> grid step of each evaluation: ``evals_per_epoch`` evenly spread points per epoch.

    With fewer optimizer steps than points in an epoch, points that fall on the same step are evaluated
    once, under the later grid step, so the end of epoch e is always step ``e * evals_per_epoch``.
    """
    points = {}
    for grid_step in range(1, epochs * evals_per_epoch + 1):
        points[optimizer_step(grid_step, steps_per_epoch, evals_per_epoch)] = grid_step
    return points


def optimizer_step(grid_step: int, steps_per_epoch: int, evals_per_epoch: int) -> int:
    """The optimizer step at which grid step ``grid_step`` (evaluation k of epoch e) falls."""
    epoch, k = divmod(grid_step - 1, evals_per_epoch)
    return epoch * steps_per_epoch + max(1, round(steps_per_epoch * (k + 1) / evals_per_epoch))


def check_training(training: DictConfig) -> None:
    """Refuse values the loop cannot run with, in one line each."""
    for key, low in (("num_epochs", 1), ("evals_per_epoch", 1), ("batch_size", 1), ("max_length", 2)):
        value = training[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"training.{key} is {value!r}; it must be an integer >= {low}")
    for key in ("dropout", "label_smoothing", "warmup_ratio"):
        if not 0 <= training[key] < 1:
            raise ConfigError(f"training.{key} is {training[key]!r}; allowed: 0 <= value < 1")
    if not training.learning_rate > 0:
        raise ConfigError(f"training.learning_rate is {training.learning_rate!r}; it must be > 0")
    if training.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"training.lr_schedule is {training.lr_schedule!r}; allowed: {', '.join(LR_SCHEDULES)}")
    check_early_stopping(training.get("early_stopping"))  # absent from configs exported before it existed


def train(
    classifier: nn.Module,
    frozen: list[nn.Module],
    train_set: Dataset | FeatureTable,
    validation_set: Dataset | FeatureTable | None,
    collate: Callable[[list], dict],
    training: DictConfig,
    metric: tuple[str, Callable[[np.ndarray, np.ndarray], float]],
    on_evaluation: Callable[[Evaluation], None],
    progress: TrainingProgress,
    placement: Placement = CPU_FP32,
    value: str = "last",
    direction: str = "maximize",
    train_until: int | None = None,
) -> TrainResult:
    """Fine-tune ``classifier`` as ``training`` says; ``on_evaluation`` may raise to stop (pruning).

    ``classifier`` is the whole model on tokenised tables, or its :class:`~objectives.features.TopLayers` on
    cached features of the frozen bottom; ``collate`` makes batches of either. It trains on ``placement``'s
    device, forward passes autocast to its precision.

    Without a ``validation_set`` (production training on train + validation) nothing is evaluated. ``value``
    (``objective.value``) is ``last`` or ``best``: which evaluation's metric is returned; with ``best`` the model
    gets the best evaluation's weights back (better is ``direction``'s way). ``train_until`` stops training after
    that grid step's amount of training (with the learning-rate schedule of all ``num_epochs``): production
    training on train + validation for a trial's best step.
    """
    check_value(value)
    generator = torch.Generator().manual_seed(training.seed)
    if training.get("group_by_length", False):  # absent from configs exported before it existed: plain shuffle
        batches = LengthGroupedBatches(example_lengths(train_set), training.batch_size, generator)
        loader = DataLoader(train_set, batch_sampler=batches, collate_fn=collate)
    else:
        loader = DataLoader(
            train_set, batch_size=training.batch_size, shuffle=True, collate_fn=collate, generator=generator
        )
    classifier.to(placement.device)
    scaler = placement.gradient_scaler()
    trainable = [p for p in classifier.parameters() if p.requires_grad]
    no_decay = {id(p) for name, p in classifier.named_parameters() if name.endswith("bias") or "LayerNorm" in name}
    optimizer = torch.optim.AdamW(
        [
            {
                "params": [p for p in trainable if id(p) not in no_decay],
                "weight_decay": training.weight_decay,
            },
            {"params": [p for p in trainable if id(p) in no_decay], "weight_decay": 0.0},
        ],
        lr=training.learning_rate,
        # One kernel over all parameters instead of a loop over them (HF Trainer's default too); CPU and CUDA
        # have it, MPS takes the loop.
        fused=placement.device.type in ("cpu", "cuda"),
    )
    total_steps = len(loader) * training.num_epochs
    scheduler = get_scheduler(
        training.lr_schedule,
        optimizer,
        num_warmup_steps=round(training.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    loss_function = nn.CrossEntropyLoss(label_smoothing=training.label_smoothing)
    evaluate_after = (
        {} if validation_set is None else evaluation_points(len(loader), training.num_epochs, training.evals_per_epoch)
    )
    last_step = (
        total_steps if train_until is None else optimizer_step(train_until, len(loader), training.evals_per_epoch)
    )
    early_stopping = training.get("early_stopping") or {}
    best = BestCheckpoint(
        direction, early_stopping.get("patience"), early_stopping.get("min_delta", 0.0), keep_weights=value == "best"
    )
    metric_name, metric_function = metric
    curve: list[Evaluation] = []
    stop = False
    step, examples, train_seconds, loss_sum, loss_count = 0, 0, 0.0, 0.0, 0
    progress.start(total_steps, training.num_epochs, evaluations=training.num_epochs * training.evals_per_epoch)
    for epoch in range(1, training.num_epochs + 1):
        _train_mode(classifier, frozen)
        started = time.perf_counter()
        for batch in loader:
            batch = {key: tensor.to(placement.device) for key, tensor in batch.items()}
            labels = batch.pop("labels")
            with placement.autocast():
                loss = loss_function(classifier(**batch).logits.float(), labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at step {step + 1}")
            if scaler is None:
                loss.backward()
                nn.utils.clip_grad_norm_(trainable, training.max_grad_norm, foreach=True)
                optimizer.step()
            else:  # fp16: scale the loss so small gradients do not underflow, unscale before clipping
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(trainable, training.max_grad_norm, foreach=True)
                scaler.step(optimizer)
                scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step, examples = step + 1, examples + len(labels)
            loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
            progress.step(step, epoch, loss_sum / loss_count)
            if step in evaluate_after:
                train_seconds += time.perf_counter() - started
                labels, predictions = predict(classifier, validation_set, collate, placement)
                measured = metric_function(labels, predictions)
                stop = best.update(measured, evaluate_after[step], classifier)  # patience used up
                evaluation = Evaluation(
                    step=evaluate_after[step],
                    epoch=step / len(loader),
                    examples_seen=examples,
                    train_loss=loss_sum / loss_count,
                    metric=measured,
                    train_seconds=train_seconds,
                    final=step == last_step or stop,
                    confusion=confusion_matrix(labels, predictions, labels=range(classifier.config.num_labels)),
                )
                curve.append(evaluation)
                progress.evaluated(metric_name, evaluation.metric, evaluation.step)
                on_evaluation(evaluation)  # the pruner sees every evaluation, the one that stops training too
                loss_sum, loss_count = 0.0, 0
                _train_mode(classifier, frozen)
                started = time.perf_counter()
            stop = stop or step == last_step
            if stop:
                break
        if stop:
            break
    if value == "best" and best.step is not None:
        best.restore(classifier)
        return TrainResult(best.value, curve, classifier, best.step, step)
    return TrainResult(curve[-1].metric if curve else None, curve, classifier, best.step, step)


def _train_mode(classifier: nn.Module, frozen: list[nn.Module]) -> None:
    """Training mode, except frozen modules, which stay in eval mode (no dropout)."""
    classifier.train()
    for module in frozen:
        module.eval()
