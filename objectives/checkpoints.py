"""The best evaluation of a training run: early stopping and the best checkpoint.

:class:`BestCheckpoint` is what the training loop asks after each evaluation. It keeps the best metric so far
and its grid step (the first one on ties), counts evaluations without improvement for early stopping, and with
``objective.value: best`` keeps a CPU copy of the trainable parameters at the best evaluation, to put back
bit for bit when training ends. Only trainable parameters change during training (frozen ones and buffers do
not), and restoring them in place also restores a model whose modules are shared (the feature cache's
:class:`~objectives.features.TopLayers` trains the classifier's own modules).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hps.search.errors import ConfigError

VALUES = ("last", "best")  # objective.value: which evaluation is the trial's value
DIRECTIONS = ("maximize", "minimize")


def check_value(value: Any) -> None:
    """Refuse an ``objective.value`` other than ``last`` or ``best``, in one line."""
    if value not in VALUES:
        raise ConfigError(f"objective.value is {value!r}; allowed: {', '.join(VALUES)}")


def check_early_stopping(early_stopping: Any) -> None:
    """Refuse a bad ``training.early_stopping`` (patience null or >= 1, min_delta >= 0), in one line each."""
    if early_stopping is None:
        return
    if not isinstance(early_stopping, Mapping):
        raise ConfigError(
            f"training.early_stopping is {early_stopping!r}; it must be a mapping {{patience, min_delta}}"
        )
    patience = early_stopping.get("patience")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ConfigError(
            f"training.early_stopping.patience is {patience!r}; it must be null (no early stopping) or an integer >= 1"
        )
    min_delta = early_stopping.get("min_delta", 0.0)
    if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or not min_delta >= 0:
        raise ConfigError(f"training.early_stopping.min_delta is {min_delta!r}; it must be a number >= 0")


def best_index(metrics: Sequence[float], direction: str) -> int | None:
    """Index of the best of ``metrics`` in ``direction`` (the first one on ties); None for none."""
    best = None
    for index, metric in enumerate(metrics):
        if math.isfinite(metric) and (best is None or _better(metric, metrics[best], direction)):
            best = index
    return best


def _better(metric: float, than: float, direction: str, by: float = 0.0) -> bool:
    return metric > than + by if direction == "maximize" else metric < than - by


class BestCheckpoint:
    """The best evaluation so far, patience counting and (``keep_weights``) the best trainable weights."""

    def __init__(
        self, direction: str, patience: int | None = None, min_delta: float = 0.0, keep_weights: bool = False
    ) -> None:
        if direction not in DIRECTIONS:
            raise ConfigError(f"objective.direction is {direction!r}; allowed: {', '.join(DIRECTIONS)}")
        self.direction, self.patience, self.min_delta, self.keep_weights = direction, patience, min_delta, keep_weights
        self.value: float | None = None  # the best metric so far
        self.step: int | None = None  # its grid step
        self.without_improvement = 0  # evaluations since the last one that beat the best by more than min_delta
        self.weights: dict[str, torch.Tensor] = {}

    def update(self, metric: float, step: int, model: nn.Module) -> bool:
        """Take the evaluation at grid ``step``; returns whether training should stop (patience used up)."""
        if not math.isfinite(metric):
            self.without_improvement += 1
        elif self.value is None or _better(metric, self.value, self.direction, self.min_delta):
            self.without_improvement = 0
        else:
            self.without_improvement += 1
        if math.isfinite(metric) and (self.value is None or _better(metric, self.value, self.direction)):
            self.value, self.step = metric, step
            if self.keep_weights:
                self.weights = {
                    name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad
                }
        return self.patience is not None and self.without_improvement >= self.patience

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        """Put the best evaluation's trainable weights back into ``model``, in place (an exact copy)."""
        if not self.weights:
            raise RuntimeError("no best weights kept: BestCheckpoint(keep_weights=True) and an evaluation first")
        parameters = dict(model.named_parameters())
        for name, saved in self.weights.items():
            parameters[name].copy_(saved)
