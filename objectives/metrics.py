"""Validation metrics, named by the data config (``data.metric``); all are larger-is-better."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from hps.search.errors import ConfigError

METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy_score,
    "macro_f1": lambda labels, predictions: f1_score(labels, predictions, average="macro", zero_division=0),
    "mcc": matthews_corrcoef,
}


def metric_function(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """The metric ``name`` as ``f(labels, predictions) -> float``."""
    if name not in METRICS:
        raise ConfigError(f"data.metric is {name!r}; allowed: {', '.join(METRICS)}")
    return METRICS[name]
