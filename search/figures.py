"""A training run's learning curve and confusion matrix, as a PNG to look at and a CSV to reuse.

The files land in the run's output folder; in a study they are also attached to the trial
(:meth:`hps.search.trial.TrialLink.attach`), where optuna-dashboard shows the images and the tables. Matplotlib
draws off-screen (Agg), so this works on machines without a display.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

LEARNING_CURVE = "learning_curve"
CONFUSION_MATRIX = "confusion_matrix"
CURVE_COLUMNS = ("step", "epoch", "examples_seen", "train_loss", "metric", "train_seconds")


def learning_curve_files(curve: Sequence[Mapping], metric: str, folder: Path, title: str) -> list[Path]:
    """``learning_curve.csv`` (one row per evaluation) and ``.png`` (validation metric and train loss by epoch)."""
    table = folder / f"{LEARNING_CURVE}.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([metric if column == "metric" else column for column in CURVE_COLUMNS])
        writer.writerows([point[column] for column in CURVE_COLUMNS] for point in curve)
    epochs = [point["epoch"] for point in curve]
    figure, metric_axis = plt.subplots(figsize=(6.4, 4))
    metric_axis.plot(epochs, [point["metric"] for point in curve], "o-", color="tab:blue", label=f"{metric} (val)")
    metric_axis.set_xlabel("epoch")
    metric_axis.set_ylabel(f"validation {metric}", color="tab:blue")
    loss_axis = metric_axis.twinx()
    loss_axis.plot(epochs, [point["train_loss"] for point in curve], "s--", color="tab:orange", label="train loss")
    loss_axis.set_ylabel("training loss (mean since last evaluation)", color="tab:orange")
    metric_axis.set_title(title)
    metric_axis.grid(alpha=0.3)
    return [table, save_figure(figure, folder / f"{LEARNING_CURVE}.png")]


def confusion_matrix_files(matrix: np.ndarray, label_names: Sequence[str], folder: Path, title: str) -> list[Path]:
    """``confusion_matrix.csv`` (rows: true label, columns: predicted) and a ``.png`` heat map with counts."""
    table = folder / f"{CONFUSION_MATRIX}.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *label_names])
        writer.writerows([name, *(int(count) for count in row)] for name, row in zip(label_names, matrix, strict=True))
    size = 2.5 + 0.6 * len(label_names)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046)
    ticks = range(len(label_names))
    axis.set_xticks(ticks, label_names, rotation=45, ha="right")
    axis.set_yticks(ticks, label_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    dark_from = matrix.max() / 2
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(column, row, int(count), ha="center", va="center", color="white" if count > dark_from else "black")
    axis.set_title(title)
    return [table, save_figure(figure, folder / f"{CONFUSION_MATRIX}.png")]


def save_figure(figure: plt.Figure, path: Path) -> Path:
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path
