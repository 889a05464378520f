"""Data loading: every bad-input error, the stratified hold-out and subsample, sentence pairs."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hps.objectives.data import LABELS, load_splits, tokenize
from hps.objectives.model import load_classifier, load_tokenizer
from hps.search.errors import ConfigError
from tests.conftest import REPO, composed, write_csv


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
    ("files", "changes", "message"),
    [
        ({}, {"train_file": "nope.csv"}, "train split: file '{dir}/nope.csv' not found; set the data root"),
        (
            {},
            {"label_column": "gold"},
            "column 'gold' not in '{dir}/train.csv'; its columns are text, label",
        ),
        ({}, {"text_columns": ["text", "text_b"]}, "column 'text_b' not in"),
        ({}, {"num_labels": 2}, "label 2 in column 'label'; labels must be integers 0..1"),
        ({"train": [["a", -1]]}, {}, "label -1 in column 'label'; labels must be integers 0..2"),
        ({"train": [["a", "positive"]]}, {}, "label 'positive' in column 'label'; labels must be integers 0..2"),
        ({"train": [["a", 0], ["", 1]]}, {}, "text column 'text' is empty in data row 2"),
        ({"train": []}, {}, "train split: '{dir}/train.csv' has no rows"),
        ({}, {"num_labels": 1}, "num_labels is 1; it must be an integer >= 2"),
        (
            {"train": toy_rows(30, labels=1)},
            {"label_names": ["a", "b", "c"]},
            "train split: every example has label 0 (a); train and validation each need at least 2 classes",
        ),
        ({"validation": [["v", 1], ["w", 1]]}, {}, "validation split: every example has label 1; train and"),
        ({}, {"max_validation_examples": 0}, "max_validation_examples is 0; it must be a positive integer, or null"),
        ({}, {"max_train_examples": "all"}, "max_train_examples is 'all'; it must be a positive integer, or null"),
        ({}, {"encoding": "klingon"}, "encoding 'klingon' is unknown; use a Python codec name such as utf-8"),
    ],
)
def test_bad_data_is_one_clear_line(toy, files, changes, message):
    for split, rows in files.items():
        write_csv(toy / f"{split}.csv", ["text", "label"], rows)
    with pytest.raises(ConfigError) as error:
        load_splits(data_config(toy, **changes))
    assert message.format(dir=toy) in str(error.value)
    assert "\n" not in str(error.value)


def test_validation_labels_that_train_lacks_are_one_warning_line(toy, caplog):
    with caplog.at_level(logging.WARNING, logger="hps.objectives.data"):
        load_splits(data_config(toy))  # the fixture's train has every label
        assert caplog.records == []
        write_csv(toy / "train.csv", ["text", "label"], toy_rows(60, labels=2))
        load_splits(data_config(toy, label_names=["a", "b", "c"]))
    assert [record.getMessage() for record in caplog.records] == [
        "data 'toy': validation labels 2 (c) never occur in train, so the model cannot learn them"
    ]


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


@pytest.mark.parametrize("validation_file", ["validation.csv", None])
def test_subsamples_validation_stratified_and_seeded_by_data_seed(toy, validation_file):
    whole = load_splits(data_config(toy, validation_file=validation_file, validation_fraction=0.5)).validation
    config = data_config(toy, validation_file=validation_file, validation_fraction=0.5, max_validation_examples=12)
    first, second = load_splits(config), load_splits(config)
    assert len(first.validation) == 12
    assert Counter(first.validation[LABELS]) == {0: 4, 1: 4, 2: 4}
    assert first.validation["text"] == second.validation["text"]
    assert set(first.validation["text"]) < set(whole["text"])
    reseeded = load_splits(data_config(toy, validation_file=validation_file, max_validation_examples=12, seed=7))
    assert reseeded.validation["text"] != first.validation["text"]


def test_a_file_not_in_the_encoding_names_the_first_bad_byte(toy):
    text = "café au lait"
    (toy / "train.csv").write_bytes(f"text,label\n{text},0\nplain,1\nagain,2\n".encode("latin-1"))
    with pytest.raises(ConfigError) as error:
        load_splits(data_config(toy))
    offset = len("text,label\ncaf")
    assert str(error.value) == (
        f"data 'toy', train split: '{toy}/train.csv' is not utf-8 (byte 0xe9 at offset {offset} does not decode); "
        "set the file's encoding, e.g. data.encoding=latin-1 or data.encoding=cp1252"
    )
    assert load_splits(data_config(toy, encoding="latin-1")).train["text"][0] == text


def test_the_bad_byte_offset_counts_characters_split_across_read_chunks(toy):
    head = "text,label\n" + "x" * ((1 << 20) - len("text,label\n") - 1)  # é straddles the 1 MiB read boundary
    good = (head + "é,0\nok,1\n").encode()
    (toy / "train.csv").write_bytes(good + b"bad \xff,2\n")
    with pytest.raises(ConfigError, match=f"byte 0xff at offset {len(good) + len('bad ')} does not decode"):
        load_splits(data_config(toy))


def named_rows(n: int, names: list[str]) -> list[list]:
    return [[f"example {i}", i % len(names), names[i % len(names)]] for i in range(n)]


NAMES = ["card_arrival", "reverted_card_payment?", "top_up: failed"]  # YAML needs quotes for the last two


def test_label_names_are_read_from_the_label_name_column(toy):
    write_csv(toy / "train.csv", ["text", "label", "label_name"], named_rows(30, NAMES))
    splits = load_splits(data_config(toy))
    assert splits.label_names == NAMES
    assert splits.train.column_names == ["text", LABELS]
    assert load_splits(data_config(toy, label_names=NAMES)).label_names == NAMES  # both given and agreeing
    assert load_splits(data_config(toy, label_name_column=None)).label_names == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("rows", "changes", "message"),
    [
        (
            [*named_rows(6, NAMES), ["one more", 1, "refund"]],
            {},
            "label 1 is named both 'refund' and 'reverted_card_payment?' in column 'label_name' of '{dir}/train.csv'; "
            "each label needs one name",
        ),
        (
            named_rows(6, NAMES[:2]),
            {},
            "column 'label_name' of '{dir}/train.csv' names no label 2 (not in the file); give all names in "
            "data.label_names",
        ),
        (
            named_rows(6, NAMES),
            {"label_names": ["card_arrival", "refund", "top_up: failed"]},
            "label 1 is 'reverted_card_payment?' in column 'label_name' of '{dir}/train.csv' but 'refund' in "
            "data.label_names; make them agree",
        ),
        (
            named_rows(6, ["a", "b", "a"]),
            {},
            "labels 0 and 2 are both named 'a' in column 'label_name'; label names must differ",
        ),
        (
            [*named_rows(6, NAMES), ["unnamed", 0, ""]],
            {},
            "label-name column 'label_name' is empty in data row 7 of '{dir}/train.csv'",
        ),
    ],
)
def test_contradicting_label_names_are_one_clear_line(toy, rows, changes, message):
    write_csv(toy / "train.csv", ["text", "label", "label_name"], rows)
    with pytest.raises(ConfigError) as error:
        load_splits(data_config(toy, **changes))
    assert message.format(dir=toy) in str(error.value)
    assert "\n" not in str(error.value)


def test_label_names_reach_the_saved_model_config(tmp_path):
    model = composed("model=tiny_bert").model
    load_classifier(model, len(NAMES), dropout=0.1, label_names=NAMES).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["id2label"] == {str(label): name for label, name in enumerate(NAMES)}
    assert config["label2id"] == {name: label for label, name in enumerate(NAMES)}


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
