"""Text-classification data from CSV files: reading, checking, splitting, subsampling, tokenising.

A data config (``conf/data/*.yaml``) names a folder, the split files in it, the text column (two for sentence
pairs), the label column and the number of classes. Every problem a user can cause (a missing file or
column, a label outside 0..K-1, an empty split, an empty text) is reported as one :class:`ConfigError` line.
Splits that the files do not provide are made here, seeded by ``data.seed`` (not the training seed, so every
trial of a study sees the same examples): a stratified validation hold-out when there is no validation file,
and a stratified subsample when ``max_train_examples`` caps the training set.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from omegaconf import DictConfig

from search.errors import ConfigError, first_line

datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()

LABELS = "labels"  # the column name the model's forward() takes


@dataclass
class Splits:
    """Train, validation and test examples with a ``labels`` column.

    Validation is None only when production training merged it into train; test when not asked for or absent.
    """

    train: datasets.Dataset
    validation: datasets.Dataset | None
    test: datasets.Dataset | None


def load_splits(data: DictConfig, with_test: bool = False) -> Splits:
    """Read and check the split files of ``data``, then make the hold-out and subsample it asks for.

    The test split is read only ``with_test`` (production training): a search never looks at it.
    """
    label_names(data)
    train = _read_split(data, "train", data.train_file)
    validation = _read_split(data, "validation", data.validation_file) if data.validation_file else None
    test = _read_split(data, "test", data.test_file) if with_test and data.test_file else None
    if validation is None:
        train, validation = _stratified_split(data, train, test_size=data.validation_fraction, purpose="validation")
    if data.max_train_examples is not None and data.max_train_examples < len(train):
        train, _ = _stratified_split(data, train, test_size=len(train) - data.max_train_examples, purpose="subsample")
    return Splits(train, validation, test)


def label_names(data: DictConfig) -> list[str]:
    """The names of labels 0..num_labels-1: ``data.label_names``, or the numbers when it is null."""
    if data.get("label_names") is None:
        return [str(label) for label in range(data.num_labels)]
    names = [str(name) for name in data.label_names]
    if len(names) != data.num_labels:
        raise ConfigError(
            f"data {data.name!r}: label_names has {len(names)} names but num_labels is {data.num_labels}; "
            "give one name per label, or null"
        )
    return names


def _read_split(data: DictConfig, split: str, file_name: str) -> datasets.Dataset:
    path = Path(str(data.dir)) / str(file_name)
    where = f"data {data.name!r}, {split} split"
    if not path.is_file():
        raise ConfigError(
            f"{where}: file {str(path)!r} not found; set the data root with HPS_DATA_ROOT or data.dir=PATH"
        )
    if not _has_data_row(path):
        raise ConfigError(f"{where}: {str(path)!r} has no rows")
    try:
        table = datasets.load_dataset("csv", data_files=str(path), split="train")
    except Exception as error:  # any unreadable file is the same user error
        raise ConfigError(f"{where}: cannot read {str(path)!r} as CSV ({first_line(error)})") from None
    needed = [*data.text_columns, data.label_column]
    missing = [column for column in needed if column not in table.column_names]
    if missing:
        raise ConfigError(
            f"{where}: column {missing[0]!r} not in {str(path)!r}; its columns are {', '.join(table.column_names)}"
        )
    for column in data.text_columns:
        empty = next((row for row, text in enumerate(table[column]) if not isinstance(text, str)), None)
        if empty is not None:
            raise ConfigError(f"{where}: text column {column!r} is empty in data row {empty + 1} of {str(path)!r}")
    labels = np.asarray(table[data.label_column], dtype=object)
    bad = next((v for v in labels if isinstance(v, bool) or not isinstance(v, (int, np.integer))), None)
    if bad is None:
        bad = next((v for v in labels if not 0 <= v < data.num_labels), None)
    if bad is not None:
        raise ConfigError(
            f"{where}: label {bad!r} in column {data.label_column!r}; labels must be integers 0..{data.num_labels - 1}"
            " (data.num_labels)"
        )
    table = table.select_columns(needed).rename_column(data.label_column, LABELS)
    return table.cast_column(LABELS, datasets.ClassLabel(num_classes=data.num_labels))


def _has_data_row(path: Path) -> bool:
    """Whether the CSV has a row after its header (read lazily: only the first two rows)."""
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        return sum(1 for _ in itertools.islice(csv.reader(handle), 2)) == 2


def _stratified_split(
    data: DictConfig, table: datasets.Dataset, test_size: float | int, purpose: str
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split off ``test_size`` examples with the class proportions kept; returns (kept, split off)."""
    try:
        parts = table.train_test_split(test_size=test_size, stratify_by_column=LABELS, seed=data.seed)
    except ValueError as error:
        raise ConfigError(f"data {data.name!r}: cannot make the stratified {purpose} split ({error})") from None
    return parts["train"], parts["test"]


def tokenize(table: datasets.Dataset, tokenizer, text_columns: list[str], max_length: int) -> datasets.Dataset:
    """Token ids of each example, truncated to ``max_length``; padding is left to the batch collator."""

    def encode(batch: dict) -> dict:
        return tokenizer(*(batch[column] for column in text_columns), truncation=True, max_length=max_length)

    return table.map(encode, batched=True, remove_columns=list(text_columns))
