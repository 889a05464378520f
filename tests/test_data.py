"""Data loading: every bad-input error, the stratified hold-out and subsample, sentence pairs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from objectives.data import LABELS, load_splits, tokenize
from objectives.model import load_tokenizer
from search.errors import ConfigError
from tests.conftest import REPO, write_csv


def data_config(folder: Path, **changes) -> OmegaConf:
    base = OmegaConf.load(REPO / "conf" / "data" / "csv.yaml")
    return OmegaConf.merge(
        base, {"name": "toy", "dir": str(folder), "num_labels": 3, "max_train_examples": None}, changes
    )


def toy_rows(n: int, labels: int = 3) -> list[list]:
    return [[f"example number {i} " + "word " * (i % 7), i % labels] for i in range(n)]


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    write_csv(tmp_path / "train.csv", ["text", "label"], toy_rows(90))
    write_csv(tmp_path / "validation.csv", ["text", "label"], toy_rows(30))
    return tmp_path


def test_reads_splits_with_labels(toy):
    splits = load_splits(data_config(toy))
    assert (len(splits.train), len(splits.validation), splits.test) == (90, 30, None)
    assert splits.train.column_names == ["text", LABELS]


@pytest.mark.parametrize(
    ("rows", "changes", "message"),
    [
        (None, {"train_file": "nope.csv"}, "train split: file '{dir}/nope.csv' not found; set the data root"),
        (
            None,
            {"label_column": "gold"},
            "column 'gold' not in '{dir}/train.csv'; its columns are text, label",
        ),
        (None, {"text_columns": ["text", "text_b"]}, "column 'text_b' not in"),
        (None, {"num_labels": 2}, "label 2 in column 'label'; labels must be integers 0..1"),
        ([["a", -1]], {}, "label -1 in column 'label'; labels must be integers 0..2"),
        ([["a", "positive"]], {}, "label 'positive' in column 'label'; labels must be integers 0..2"),
        ([["a", 0], ["", 1]], {}, "text column 'text' is empty in data row 2"),
        ([], {}, "train split: '{dir}/train.csv' has no rows"),
    ],
)
def test_bad_data_is_one_clear_line(toy, rows, changes, message):
    if rows is not None:
        write_csv(toy / "train.csv", ["text", "label"], rows)
    with pytest.raises(ConfigError) as error:
        load_splits(data_config(toy, **changes))
    assert message.format(dir=toy) in str(error.value)
    assert "\n" not in str(error.value)


def test_holds_out_a_stratified_seeded_validation_split(toy):
    config = data_config(toy, validation_file=None, validation_fraction=0.2)
    first, second = load_splits(config), load_splits(config)
    assert (len(first.train), len(first.validation)) == (72, 18)
    assert Counter(first.validation[LABELS]) == {0: 6, 1: 6, 2: 6}
    assert first.validation["text"] == second.validation["text"]
    assert not set(first.validation["text"]) & set(first.train["text"])


def test_subsamples_train_stratified_and_seeded_by_data_seed(toy):
    splits = load_splits(data_config(toy, max_train_examples=30))
    assert len(splits.train) == 30
    assert Counter(splits.train[LABELS]) == {0: 10, 1: 10, 2: 10}
    assert len(splits.validation) == 30  # the validation file is never subsampled
    assert load_splits(data_config(toy, max_train_examples=30)).train["text"] == splits.train["text"]
    assert load_splits(data_config(toy, max_train_examples=30, seed=7)).train["text"] != splits.train["text"]


def test_sentence_pairs_are_encoded_as_pairs(tmp_path):
    rows = [[f"first {i}", f"second sentence {i}", i % 2] for i in range(20)]
    write_csv(tmp_path / "train.csv", ["text_a", "text_b", "label"], rows)
    write_csv(tmp_path / "validation.csv", ["text_a", "text_b", "label"], rows)
    config = data_config(tmp_path, text_columns=["text_a", "text_b"], num_labels=2)
    splits = load_splits(config)
    tokenizer = load_tokenizer(OmegaConf.load(REPO / "conf" / "model" / "minilm.yaml"))
    encoded = tokenize(splits.train, tokenizer, ["text_a", "text_b"], max_length=32)
    first = encoded[0]
    assert set(first["token_type_ids"]) == {0, 1}  # segment b is marked
    assert first["input_ids"].count(tokenizer.sep_token_id) == 2
