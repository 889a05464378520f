"""Text-classification data from CSV files: reading, checking, splitting, subsampling, tokenising.

A data config (``conf/data/*.yaml``) names a folder, the split files in it and their encoding, the text column
(two for sentence pairs), the label column, the number of classes and where the label names come from. Every
problem a user can cause (a missing file or column, a file not in ``data.encoding``, a label outside 0..K-1, an
empty split or text, a split with a single class, names that contradict each other) is reported as one
:class:`ConfigError` line. Splits that the files do not provide are made here, seeded by ``data.seed`` (not the
training seed, so every trial of a study sees the same examples): a stratified validation hold-out when there is
no validation file, and stratified subsamples when ``max_train_examples`` or ``max_validation_examples`` caps a
split.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from omegaconf import DictConfig

from hps.search.errors import ConfigError, first_line, is_whole_number

log = logging.getLogger(__name__)

LABELS = "labels"  # the column name the model's forward() takes
CAPS = ("max_train_examples", "max_validation_examples")  # the keys that cap a split's size


@dataclass
class Splits:
    """Train, validation and test examples with a ``labels`` column, and the names of labels 0..K-1.

    Validation is None only when production training merged it into train; test when not asked for or absent.
    """

    train: datasets.Dataset
    validation: datasets.Dataset | None
    test: datasets.Dataset | None
    label_names: list[str]


def load_splits(data: DictConfig, with_test: bool = False) -> Splits:
    """Read and check the split files of ``data``, then make the hold-out and subsamples it asks for.

    The test split is read only ``with_test`` (production training): a search never looks at it.
    """
    _check_settings(data)
    train = _read_split(data, "train", _split_path(data, data.train_file), name_column=data.get("label_name_column"))
    names, train = _label_names(data, train)
    validation = (
        _read_split(data, "validation", _split_path(data, data.validation_file)) if data.validation_file else None
    )
    test = _read_split(data, "test", _split_path(data, data.test_file)) if with_test and data.test_file else None
    if validation is None:
        train, validation = _stratified_split(
            data, train, test_size=data.validation_fraction, purpose="validation hold-out"
        )
    train = _capped(data, train, "max_train_examples", "train")
    validation = _capped(data, validation, "max_validation_examples", "validation")
    _check_classes(data, train, validation, names)
    return Splits(train, validation, test, names)


def _check_settings(data: DictConfig) -> None:
    """The checks that need no file: num_labels, label_names, encoding and the caps."""
    if not is_whole_number(data.num_labels, 2):
        raise ConfigError(
            f"data {data.name!r}: num_labels is {data.num_labels!r}; it must be an integer >= 2 (a classifier "
            "needs at least 2 classes)"
        )
    names = data.get("label_names")
    if names is not None and len(names) != data.num_labels:
        raise ConfigError(
            f"data {data.name!r}: label_names has {len(names)} names but num_labels is {data.num_labels}; "
            "give one name per label, or null"
        )
    try:
        codecs.lookup(_encoding(data))
    except LookupError:
        raise ConfigError(
            f"data {data.name!r}: encoding {_encoding(data)!r} is unknown; use a Python codec name such as "
            "utf-8, utf-8-sig, latin-1 or cp1252"
        ) from None
    for key in CAPS:
        cap = data.get(key)
        if cap is not None and not is_whole_number(cap, 1):
            raise ConfigError(f"data {data.name!r}: {key} is {cap!r}; it must be a positive integer, or null for all")


def _encoding(data: DictConfig) -> str:
    return str(data.get("encoding", "utf-8"))  # absent from configs exported before it existed


def _split_path(data: DictConfig, file_name: str) -> Path:
    return Path(str(data.dir)) / str(file_name)


def read_batch(data: DictConfig, path: Path) -> datasets.Dataset:
    """New examples for checking a model trained on ``data``: a CSV with its text columns and, if the file has it,
    its label column (then checked as a split's labels are), as :func:`load_splits` reads a split."""
    return _read_split(data, "new", path, labels_optional=True)


def split_files(data: DictConfig, with_test: bool = False) -> dict[str, Path]:
    """The files :func:`load_splits` reads, by split."""
    files = {
        "train": data.train_file,
        "validation": data.validation_file,
        "test": data.test_file if with_test else None,
    }
    return {split: _split_path(data, name) for split, name in files.items() if name}


def fingerprint(paths: list[Path], settings: dict | None = None) -> str:
    """A short hash of the files' bytes and of the settings that pick examples from them (caps, seeds): equal
    fingerprints mean the same examples."""
    digest = hashlib.sha256(json.dumps(settings or {}, sort_keys=True, default=str).encode())
    for path in paths:
        content = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                content.update(chunk)
        digest.update(content.digest())
    return digest.hexdigest()[:16]


def data_fingerprint(data: DictConfig, with_test: bool = False) -> str:
    """The fingerprint of the examples :func:`load_splits` gives for ``data``."""
    settings = {key: data.get(key) for key in (*CAPS, "seed", "validation_fraction")}
    return fingerprint(list(split_files(data, with_test).values()), settings)


def _read_split(
    data: DictConfig, split: str, path: Path, name_column: str | None = None, labels_optional: bool = False
) -> datasets.Dataset:
    """The split's text columns and ``labels``, checked; also ``name_column`` when given and in the file.

    With ``labels_optional`` a file without the label column is read without ``labels``.
    """
    where = f"data {data.name!r}, {split} split"
    if not path.is_file():
        raise ConfigError(
            f"{where}: file {str(path)!r} not found; set the data root with HPS_DATA_ROOT or data.dir=PATH"
        )
    encoding = _encoding(data)
    bad_byte = _first_undecodable_byte(path, encoding)
    if bad_byte is not None:
        offset, value = bad_byte
        raise ConfigError(
            f"{where}: {str(path)!r} is not {encoding} (byte 0x{value:02x} at offset {offset} does not decode); "
            "set the file's encoding, e.g. data.encoding=latin-1 or data.encoding=cp1252"
        )
    if not _has_data_row(path, encoding):
        raise ConfigError(f"{where}: {str(path)!r} has no rows")
    try:
        table = datasets.load_dataset("csv", data_files=str(path), split="train", encoding=encoding)
    except Exception as error:  # any unreadable file is the same user error
        raise ConfigError(f"{where}: cannot read {str(path)!r} as CSV ({first_line(error)})") from None
    labelled = not labels_optional or data.label_column in table.column_names
    needed = [*data.text_columns, data.label_column] if labelled else list(data.text_columns)
    missing = [column for column in needed if column not in table.column_names]
    if missing:
        raise ConfigError(
            f"{where}: column {missing[0]!r} not in {str(path)!r}; its columns are {', '.join(table.column_names)}"
        )
    for column in data.text_columns:
        _check_filled(table, column, str, f"{where}: text column {column!r}", path)
    if not labelled:
        return table.select_columns(needed)
    labels = np.asarray(_values(table, data.label_column), dtype=object)
    bad = next((v for v in labels if isinstance(v, bool) or not isinstance(v, (int, np.integer))), None)
    if bad is None:
        bad = next((v for v in labels if not 0 <= v < data.num_labels), None)
    if bad is not None:
        raise ConfigError(
            f"{where}: label {bad!r} in column {data.label_column!r}; labels must be integers 0..{data.num_labels - 1}"
            " (data.num_labels)"
        )
    kept = [*needed, name_column] if name_column in table.column_names and name_column not in needed else needed
    table = table.select_columns(kept).rename_column(data.label_column, LABELS)
    return table.cast_column(LABELS, datasets.ClassLabel(num_classes=data.num_labels))


def _values(table: datasets.Dataset, column: str) -> list:
    """The column as a list, read at once (iterating a column row by row is 100 times slower)."""
    return table[column][:]


def _check_filled(table: datasets.Dataset, column: str, kinds: type | tuple[type, ...], what: str, path: Path) -> None:
    """Every row of ``column`` holds a value of ``kinds`` (pandas reads an empty cell as a missing value)."""
    empty = next((row for row, value in enumerate(_values(table, column)) if not isinstance(value, kinds)), None)
    if empty is not None:
        raise ConfigError(f"{what} is empty in data row {empty + 1} of {str(path)!r}")


def _first_undecodable_byte(path: Path, encoding: str) -> tuple[int, int] | None:
    """Offset and value of the first byte of ``path`` that ``encoding`` cannot decode; None when all decode.

    Decoded in 1 MiB chunks, so a large file costs no more memory than that.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    start = 0  # offset in the file of the next chunk
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            pending = decoder.getstate()[0]  # the undecoded end of the previous chunk, decoded with this one
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                return start - len(pending) + error.start, (pending + chunk)[error.start]
            start += len(chunk)
        pending = decoder.getstate()[0]
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as error:
            return start - len(pending) + error.start, pending[error.start]
    return None


def _has_data_row(path: Path, encoding: str) -> bool:
    """Whether the CSV has a row after its header (read lazily: only the first two rows)."""
    with path.open(newline="", encoding=encoding) as handle:
        return sum(1 for _ in itertools.islice(csv.reader(handle), 2)) == 2


def _label_names(data: DictConfig, train: datasets.Dataset) -> tuple[list[str], datasets.Dataset]:
    """The names of labels 0..num_labels-1, and ``train`` without its label-name column.

    From ``data.label_names`` when given; else from train's ``data.label_name_column`` when it has one, where
    every label must occur and have one name; else the numbers. Given names and a name column must agree.
    """
    configured = None if data.get("label_names") is None else [str(name) for name in data.label_names]
    column = data.get("label_name_column")
    if column is None or column not in train.column_names:
        names = configured or [str(label) for label in range(data.num_labels)]
        return _unique(data, names, "data.label_names"), train
    path = _split_path(data, data.train_file)
    where = f"data {data.name!r}, train split"
    _check_filled(train, column, (str, int, float), f"{where}: label-name column {column!r}", path)
    named: dict[int, str] = {}
    for label, name in sorted(set(zip(_values(train, LABELS), map(str, _values(train, column)), strict=True))):
        if label in named:
            raise ConfigError(
                f"{where}: label {label} is named both {named[label]!r} and {name!r} in column {column!r} of "
                f"{str(path)!r}; each label needs one name"
            )
        named[label] = name
    train = train.remove_columns(column)
    if configured is not None:
        differ = next((label for label, name in named.items() if configured[label] != name), None)
        if differ is not None:
            raise ConfigError(
                f"{where}: label {differ} is {named[differ]!r} in column {column!r} of {str(path)!r} but "
                f"{configured[differ]!r} in data.label_names; make them agree, or set data.label_names=null"
            )
        return _unique(data, configured, "data.label_names"), train
    unnamed = [str(label) for label in range(data.num_labels) if label not in named]
    if unnamed:
        raise ConfigError(
            f"{where}: column {column!r} of {str(path)!r} names no label {', '.join(unnamed)} (not in the file); "
            "give all names in data.label_names"
        )
    return _unique(data, [named[label] for label in range(data.num_labels)], f"column {column!r}"), train


def _unique(data: DictConfig, names: list[str], source: str) -> list[str]:
    """``names``, checked to differ: a saved model maps each name back to one label."""
    seen: dict[str, int] = {}
    for label, name in enumerate(names):
        if name in seen:
            raise ConfigError(
                f"data {data.name!r}: labels {seen[name]} and {label} are both named {name!r} in {source}; "
                "label names must differ"
            )
        seen[name] = label
    return names


def _labelled(label: int, names: list[str]) -> str:
    """A label as messages show it: its number, and its name when it has one."""
    return str(label) if names[label] == str(label) else f"{label} ({names[label]})"


def _check_classes(data: DictConfig, train: datasets.Dataset, validation: datasets.Dataset, names: list[str]) -> None:
    """Train and validation need 2 classes (one class scores any model perfectly); warn of untrainable labels."""
    present = {split: set(_values(table, LABELS)) for split, table in (("train", train), ("validation", validation))}
    for split, labels in present.items():
        if len(labels) < 2:
            raise ConfigError(
                f"data {data.name!r}, {split} split: every example has label {_labelled(min(labels), names)}; "
                "train and validation each need at least 2 classes, or every model scores perfectly"
            )
    unseen = sorted(present["validation"] - present["train"])
    if unseen:
        log.warning(
            "data %r: validation labels %s never occur in train, so the model cannot learn them",
            data.name,
            ", ".join(_labelled(label, names) for label in unseen),
        )


def _capped(data: DictConfig, table: datasets.Dataset, key: str, split: str) -> datasets.Dataset:
    """``table`` subsampled (stratified, seeded by data.seed) to ``data[key]`` examples when it has more."""
    cap = data.get(key)  # max_validation_examples is absent from configs exported before it existed
    if cap is None or cap >= len(table):
        return table
    kept, _ = _stratified_split(data, table, test_size=len(table) - cap, purpose=f"{split} subsample of {key}={cap}")
    return kept


def _stratified_split(
    data: DictConfig, table: datasets.Dataset, test_size: float | int, purpose: str
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split off ``test_size`` examples with the class proportions kept; returns (kept, split off)."""
    try:
        parts = table.train_test_split(test_size=test_size, stratify_by_column=LABELS, seed=data.seed)
    except ValueError as error:
        raise ConfigError(f"data {data.name!r}: cannot make the stratified {purpose} ({error})") from None
    return parts["train"], parts["test"]


def tokenize(table: datasets.Dataset, tokenizer, text_columns: list[str], max_length: int) -> datasets.Dataset:
    """Token ids of each example, truncated to ``max_length``; padding is left to the batch collator."""

    def encode(batch: dict) -> dict:
        return tokenizer(*(batch[column] for column in text_columns), truncation=True, max_length=max_length)

    return table.map(encode, batched=True, remove_columns=list(text_columns))
