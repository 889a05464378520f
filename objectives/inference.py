"""Running a classifier over a table of examples: predicted labels, and for model checks their probabilities and
the model's own pooled embeddings.

Evaluation during training needs the predictions only; production training also stores, for the test split, the
probabilities and embeddings that ``hps check`` later compares new data against (:mod:`hps.search.drift`).
Examples are batched by similar length to cut padding and returned in the table's order, so two models' outputs
over the same table line up example by example (the paired comparison of ``hps retune``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from torch.utils.data import DataLoader

from hps.objectives.device import CPU_FP32, Placement
from hps.objectives.features import FeatureTable, example_lengths

EVAL_BATCH_SIZE = 64
REFERENCE = "reference.npz"  # in a production run's folder: the outputs over its test split


@dataclass
class Outputs:
    """A classifier's outputs over a table, in the table's order."""

    labels: np.ndarray | None  # None for unlabelled examples
    predictions: np.ndarray
    probabilities: np.ndarray | None = None  # (examples, classes), with ``details``
    embeddings: np.ndarray | None = None  # (examples, hidden size): the last layer's mean over tokens, ``details``

    @property
    def confidence(self) -> np.ndarray:
        """The probability of the predicted label."""
        return self.probabilities.max(axis=1)


def predict(
    classifier: nn.Module,
    table: Dataset | FeatureTable,
    collate: Callable[[list], dict],
    placement: Placement = CPU_FP32,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predicted labels) over a labelled ``table``."""
    outputs = model_outputs(classifier, table, collate, placement)
    return outputs.labels, outputs.predictions


@torch.no_grad()
def model_outputs(
    classifier: nn.Module,
    table: Dataset | FeatureTable,
    collate: Callable[[list], dict],
    placement: Placement = CPU_FP32,
    details: bool = False,
) -> Outputs:
    """The predictions over ``table`` on ``placement``; with ``details`` also probabilities and pooled embeddings
    (a Hugging Face classifier on tokens only: they need its hidden states)."""
    classifier.eval()
    order = np.argsort(example_lengths(table), kind="stable")
    labels, predictions, probabilities, embeddings = [], [], [], []
    for batch in DataLoader(table, batch_size=EVAL_BATCH_SIZE, sampler=order.tolist(), collate_fn=collate):
        if "labels" in batch:
            labels.append(batch.pop("labels").numpy())
        inputs = {key: tensor.to(placement.device) for key, tensor in batch.items()}
        with placement.autocast():
            output = classifier(**inputs, output_hidden_states=details) if details else classifier(**inputs)
        predictions.append(output.logits.argmax(dim=-1).cpu().numpy())
        if details:
            probabilities.append(output.logits.float().softmax(dim=-1).cpu().numpy())
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            pooled = (output.hidden_states[-1].float() * mask).sum(dim=1) / mask.sum(dim=1)
            embeddings.append(pooled.cpu().numpy())
    inverse = np.argsort(order, kind="stable")  # back to the table's order

    def in_order(parts: list[np.ndarray]) -> np.ndarray | None:
        return np.concatenate(parts)[inverse] if parts else None

    return Outputs(in_order(labels), in_order(predictions), in_order(probabilities), in_order(embeddings))


def save_reference(outputs: Outputs, path: Path) -> None:
    """Store a model's outputs over its test split, the reference of its later checks (embeddings in fp16: half
    the size, and far finer than the drift tests can tell)."""
    arrays = {key: value for key, value in vars(outputs).items() if value is not None}
    arrays["embeddings"] = arrays["embeddings"].astype(np.float16)
    np.savez_compressed(path, **arrays)


def load_reference(path: Path) -> Outputs:
    with np.load(path) as stored:
        arrays = {key: stored[key] for key in stored.files}
    arrays["embeddings"] = arrays["embeddings"].astype(np.float32)
    return Outputs(**{key: arrays.get(key) for key in ("labels", "predictions", "probabilities", "embeddings")})
