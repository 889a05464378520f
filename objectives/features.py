"""Frozen-layer feature cache: the frozen bottom of the encoder runs once per dataset, not at every step.

With the embeddings and the bottom k encoder layers frozen (and, as always here, in eval mode: no dropout),
what they output for an example never changes while the top trains. :func:`cached_features` computes it once
per (model weights, k, tokenised data) and stores it on disk: every token's hidden state in one float32 array,
memory-mapped (4 x hidden_size bytes per token: 23 MB for 600 tweets with MiniLM), plus each example's
length and label. It is computed on the run's device in fp32 whatever the run's precision, so one cache serves
every precision. Trials with that k then train :class:`TopLayers` (encoder layers k.., pooler, dropout, head)
on padded batches of cached states: the same logits as the whole model, to float rounding, and the same
dropout draws, so the same training. Workers on one machine share the cache folder; a cache is written to a
temporary folder and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from omegaconf import DictConfig
from torch import nn
from transformers import DataCollatorWithPadding
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import SequenceClassifierOutput

from hps.search._compat import dataset_fingerprint
from hps.search.errors import ConfigError

BATCH_SIZE = 64


class TopLayers(nn.Module):
    """The trainable top of a BERT-style classifier, run on the frozen bottom's hidden states.

    It holds the classifier's own modules (no copies): training it trains the classifier.
    """

    def __init__(self, classifier: nn.Module, model: DictConfig, frozen_layers: int) -> None:
        super().__init__()
        base = classifier.base_model
        if getattr(base, "pooler", None) is None or not hasattr(classifier, "classifier"):
            raise ConfigError(
                f"model {model.name!r}: the feature cache needs a BERT-style head (pooler, dropout, classifier); "
                "set training.feature_cache=false"
            )
        self.config = base.config
        self.layers = base.get_submodule(model.layers)[frozen_layers:]
        self.pooler, self.dropout, self.head = base.pooler, classifier.dropout, classifier.classifier

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> SequenceClassifierOutput:
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask)
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask)
        return SequenceClassifierOutput(logits=self.head(self.dropout(self.pooler(hidden_states))))


class FeatureTable(torch.utils.data.Dataset):
    """Cached hidden states of a split: example i is ``hidden[offsets[i] : offsets[i] + lengths[i]]``."""

    def __init__(self, folder: Path) -> None:
        self.hidden = np.load(folder / "hidden.npy", mmap_mode="r")
        self.lengths = np.load(folder / "lengths.npy").tolist()
        self.labels = np.load(folder / "labels.npy")
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.bytes = self.hidden.nbytes

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> dict:
        start = self.offsets[index]
        return {"hidden": self.hidden[start : start + self.lengths[index]], "labels": int(self.labels[index])}


def example_lengths(table: Dataset | FeatureTable) -> list[int]:
    """Tokens per example, of a tokenised table or a feature table."""
    return table.lengths if isinstance(table, FeatureTable) else [len(ids) for ids in table["input_ids"]]


def pad_features(examples: list[dict]) -> dict[str, torch.Tensor]:
    """A batch for :class:`TopLayers`: hidden states padded with zeros, their attention mask, the labels."""
    longest = max(len(example["hidden"]) for example in examples)
    hidden = torch.zeros(len(examples), longest, examples[0]["hidden"].shape[1])
    mask = torch.zeros(len(examples), longest, dtype=torch.long)
    for row, example in enumerate(examples):
        hidden[row, : len(example["hidden"])] = torch.from_numpy(np.array(example["hidden"]))
        mask[row, : len(example["hidden"])] = 1
    labels = torch.tensor([example["labels"] for example in examples])
    return {"hidden_states": hidden, "attention_mask": mask, "labels": labels}


_HEAD_SETTINGS = ("problem_type", "id2label", "label2id", "architectures", "transformers_version")


def cached_features(
    classifier: nn.Module,
    model: DictConfig,
    frozen_layers: int,
    table: Dataset,
    collate: DataCollatorWithPadding,
    folder: Path,
) -> FeatureTable:
    """The bottom's hidden states for ``table``, from the cache in ``folder`` or computed and stored there.

    The key is the frozen weights' digest, k and the tokenised table's fingerprint (which covers the data
    files, the split, the tokenizer and max_length).
    """
    base = classifier.base_model
    bottom = [base.get_submodule(model.embeddings), *base.get_submodule(model.layers)[:frozen_layers]]
    digest = hashlib.sha256()
    for module in bottom:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
    # Weights, k, data; and the architecture's settings (activation, norm epsilon, ...), but not dropout, which
    # the frozen bottom (in eval mode) does not use, nor what concerns only the head or is set by forward().
    ignored = {*model.dropout_attributes, *_HEAD_SETTINGS}
    settings = {
        key: value
        for key, value in base.config.to_diff_dict().items()
        if key not in ignored and not key.startswith("_")
    }
    digest.update(
        json.dumps([frozen_layers, dataset_fingerprint(table), settings], sort_keys=True, default=str).encode()
    )
    target = folder / digest.hexdigest()[:24]
    if not target.is_dir():
        _compute(base, bottom, table, collate, target)
    return FeatureTable(target)


@torch.no_grad()  # not inference_mode: the cached tensors feed layers that are trained
def _compute(
    base: nn.Module, bottom: list[nn.Module], table: Dataset, collate: DataCollatorWithPadding, target: Path
) -> None:
    for module in bottom:
        module.eval()
    lengths = [len(ids) for ids in table["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    try:
        _write(base, bottom, table, collate, lengths, order, scratch)
    except BaseException:  # interrupted or out of disk: leave no half-written folder behind
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    try:
        os.replace(scratch, target)  # atomic; another worker may have finished the same cache first
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)


def _write(
    base: nn.Module,
    bottom: list[nn.Module],
    table: Dataset,
    collate: DataCollatorWithPadding,
    lengths: list[int],
    order: np.ndarray,
    scratch: Path,
) -> None:
    """Every token's hidden state after the bottom, in length order batches, into ``scratch``."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    hidden = np.lib.format.open_memmap(
        scratch / "hidden.npy", mode="w+", dtype=np.float32, shape=(int(offsets[-1]), base.config.hidden_size)
    )
    embeddings, layers = bottom[0], bottom[1:]
    device = next(embeddings.parameters()).device  # the run's: the bottom runs once, where the model is
    for start in range(0, len(order), BATCH_SIZE):
        indices = order[start : start + BATCH_SIZE].tolist()
        batch = {key: tensor.to(device) for key, tensor in collate(table.select(indices).to_list()).items()}
        states = embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
        mask = create_bidirectional_mask(
            config=base.config, inputs_embeds=states, attention_mask=batch["attention_mask"]
        )
        for layer in layers:
            states = layer(states, mask)
        for row, index in enumerate(indices):
            hidden[offsets[index] : offsets[index + 1]] = states[row, : lengths[index]].float().cpu().numpy()
    hidden.flush()
    np.save(scratch / "lengths.npy", np.asarray(lengths, dtype=np.int64))
    np.save(scratch / "labels.npy", np.asarray(table["labels"], dtype=np.int64))
