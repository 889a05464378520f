"""Pretrained sequence classifiers: loading from disk, dropout, and freezing the bottom of the encoder.

A model config (``conf/model/*.yaml``) names a local model folder and where the architecture keeps its
embeddings and encoder layers, so freezing and the depth check work for any BERT-like encoder. Loading reads only
that folder (``local_files_only``): a run never contacts the Hugging Face Hub, whatever the environment says.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import transformers
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from hps.search.errors import ConfigError


def _checked_path(model: DictConfig) -> str:
    path = str(model.path)
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(
            f"model {model.name!r}: path {path!r} is not a Hugging Face model folder (no config.json there); "
            "set model.path to a local folder saved with save_pretrained()"
        )
    return path


def load_config(model: DictConfig, **changes: object) -> transformers.PretrainedConfig:
    """The model's config with ``model.config_overrides`` and ``changes`` applied."""
    overrides = OmegaConf.to_container(model.config_overrides, resolve=True) if model.get("config_overrides") else {}
    return AutoConfig.from_pretrained(_checked_path(model), local_files_only=True, **overrides, **changes)


def encoder_depth(model: DictConfig) -> int:
    """Number of encoder layers, the upper bound of ``freeze_layers``."""
    return int(load_config(model).num_hidden_layers)


def load_tokenizer(model: DictConfig) -> transformers.PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(_checked_path(model), local_files_only=True)


def load_classifier(
    model: DictConfig, num_labels: int, dropout: float, label_names: Sequence[str] | None = None
) -> nn.Module:
    """The classifier with a new head of ``num_labels``; pretrained weights unless ``model.pretrained`` is false.

    ``dropout`` is applied to every attribute in ``model.dropout_attributes`` (hidden, attention, classifier).
    ``label_names`` (one per label) become the config's ``id2label``/``label2id``, so that a saved model says
    what its outputs mean (``transformers.pipeline`` shows them) instead of ``LABEL_0``, ``LABEL_1``, ...
    """
    changes: dict[str, object] = {name: dropout for name in model.dropout_attributes}
    if label_names is not None:
        changes["id2label"] = dict(enumerate(label_names))
        changes["label2id"] = {name: label for label, name in enumerate(label_names)}
    config = load_config(model, num_labels=num_labels, **changes)
    if model.pretrained:
        return AutoModelForSequenceClassification.from_pretrained(
            _checked_path(model), config=config, local_files_only=True
        )
    return AutoModelForSequenceClassification.from_config(config)


def check_freeze_layers(layers: object, depth: int, model_name: str) -> None:
    """``training.freeze_layers`` must be an integer 0..depth (the number of encoder layers)."""
    if isinstance(layers, bool) or not isinstance(layers, int) or not 0 <= layers <= depth:
        raise ConfigError(
            f"training.freeze_layers is {layers!r}; allowed: integers 0..{depth} "
            f"(model {model_name!r} has {depth} encoder layers)"
        )


def freeze_bottom(classifier: nn.Module, model: DictConfig, layers: int) -> list[nn.Module]:
    """Freeze the embeddings and the bottom ``layers`` encoder layers (none when 0); returns them.

    Frozen modules are meant to run in eval mode (no dropout), as a cache of their outputs would.
    """
    base = classifier.base_model
    encoder_layers = base.get_submodule(model.layers)
    check_freeze_layers(layers, len(encoder_layers), model.name)
    if layers == 0:
        return []
    frozen = [base.get_submodule(model.embeddings), *encoder_layers[:layers]]
    for module in frozen:
        module.requires_grad_(False)
    return frozen
