"""The fine-tuning loop: plain PyTorch, dynamic padding, evaluation on a fixed grid of training progress.

Evaluations happen ``evals_per_epoch`` times per epoch, at the same fractions of an epoch whatever the batch
size, and are numbered 1, 2, ...: that number is the step reported to the pruner, so trials with different
batch sizes are compared at the same amount of training. The returned metric is the one of the last
evaluation, the model as training leaves it (what production training from the same config gives).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from datasets import Dataset
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, get_scheduler

from search.progress import TrainingProgress

EVAL_BATCH_SIZE = 64


@dataclass
class Evaluation:
    step: int  # evaluation number, the pruner's step
    epoch: float
    examples_seen: int
    train_loss: float  # mean training loss since the previous evaluation
    metric: float
    train_seconds: float  # optimisation time so far, evaluations excluded

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    metric: float  # the last evaluation's
    curve: list[Evaluation]
    model: nn.Module  # as training left it


def evaluation_steps(steps_per_epoch: int, epochs: int, evals_per_epoch: int) -> list[int]:
    """Optimizer steps after which to evaluate: ``evals_per_epoch`` evenly spread points in each epoch."""
    per_epoch = sorted({max(1, round(steps_per_epoch * k / evals_per_epoch)) for k in range(1, evals_per_epoch + 1)})
    return [epoch * steps_per_epoch + step for epoch in range(epochs) for step in per_epoch]


def train(
    classifier: nn.Module,
    frozen: list[nn.Module],
    train_set: Dataset,
    validation_set: Dataset,
    collate: DataCollatorWithPadding,
    training: DictConfig,
    metric: tuple[str, Callable[[np.ndarray, np.ndarray], float]],
    on_evaluation: Callable[[Evaluation], None],
    progress: TrainingProgress,
) -> TrainResult:
    """Fine-tune ``classifier`` as ``training`` says; ``on_evaluation`` may raise to stop (pruning)."""
    loader = DataLoader(
        train_set,
        batch_size=training.batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(training.seed),
    )
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
    )
    total_steps = len(loader) * training.num_epochs
    scheduler = get_scheduler(
        training.lr_schedule,
        optimizer,
        num_warmup_steps=round(training.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    loss_function = nn.CrossEntropyLoss(label_smoothing=training.label_smoothing)
    evaluate_after = set(evaluation_steps(len(loader), training.num_epochs, training.evals_per_epoch))
    metric_name, metric_function = metric
    curve: list[Evaluation] = []
    step, examples, train_seconds, loss_sum, loss_count = 0, 0, 0.0, 0.0, 0
    progress.start(total_steps, training.num_epochs)
    for epoch in range(1, training.num_epochs + 1):
        _train_mode(classifier, frozen)
        started = time.perf_counter()
        for batch in loader:
            labels = batch.pop("labels")
            loss = loss_function(classifier(**batch).logits, labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at step {step + 1}")
            loss.backward()
            nn.utils.clip_grad_norm_(trainable, training.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step, examples = step + 1, examples + len(labels)
            loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
            progress.step(step, epoch, loss_sum / loss_count)
            if step in evaluate_after:
                train_seconds += time.perf_counter() - started
                value = metric_function(*predict(classifier, validation_set, collate))
                evaluation = Evaluation(
                    len(curve) + 1, step / len(loader), examples, loss_sum / loss_count, value, train_seconds
                )
                curve.append(evaluation)
                progress.evaluated(metric_name, value)
                on_evaluation(evaluation)
                loss_sum, loss_count = 0.0, 0
                _train_mode(classifier, frozen)
                started = time.perf_counter()
    return TrainResult(curve[-1].metric, curve, classifier)


@torch.no_grad()
def predict(classifier: nn.Module, table: Dataset, collate: DataCollatorWithPadding) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predicted labels) over ``table``, batched by similar length to cut padding."""
    classifier.eval()
    by_length = table.select(np.argsort([len(ids) for ids in table["input_ids"]], kind="stable"))
    labels, predictions = [], []
    for batch in DataLoader(by_length, batch_size=EVAL_BATCH_SIZE, collate_fn=collate):
        labels.append(batch.pop("labels").numpy())
        predictions.append(classifier(**batch).logits.argmax(dim=-1).numpy())
    return np.concatenate(labels), np.concatenate(predictions)


def _train_mode(classifier: nn.Module, frozen: list[nn.Module]) -> None:
    """Training mode, except frozen modules, which stay in eval mode (no dropout)."""
    classifier.train()
    for module in frozen:
        module.eval()
