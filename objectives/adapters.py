"""LoRA adapters (``peft``): fine-tune a few low-rank matrices instead of the encoder's own weights.

With ``training.adapter=lora`` every targeted linear layer of the encoder layers above the frozen bottom
(``training.freeze_layers``) gains a trainable update ``alpha / r * B A``; the encoder's own weights stay as
pretrained, and the head (``model.head``: pooler and classifier for BERT) trains in full. The bottom gets no
adapters, so the frozen-feature cache (:mod:`~hps.objectives.features`) serves it unchanged.

``peft`` changes the classifier's modules in place: the training loop, :class:`~hps.objectives.features.TopLayers`
and ``predict`` run the same object as without adapters. Production training saves the adapter (``adapter/``,
for ``peft``) and the model with the adapter merged into its weights (``model/``, for plain ``transformers``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import peft
import torch
from omegaconf import DictConfig, ListConfig
from torch import nn
from transformers import AutoModelForSequenceClassification

from hps.objectives.model import load_config
from hps.search.errors import ConfigError

ADAPTERS = (None, "lora")


def trainable_parameters(module: nn.Module) -> int:
    """How many parameters training updates."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def check_adapter(training: DictConfig, model: DictConfig, linear_names: set[str]) -> None:
    """Refuse adapter settings a run cannot use, in one line each.

    Args:
        training: The training settings (``adapter`` and ``lora``).
        model: The model config: its ``lora_targets`` presets.
        linear_names: The names of the linear modules inside the model's encoder layers
            (:func:`encoder_linear_names`), against which target modules are checked.
    """
    adapter = training.get("adapter")  # absent from configs exported before adapters existed
    if adapter not in ADAPTERS:
        raise ConfigError(f"training.adapter is {adapter!r}; allowed: null, lora")
    if adapter is None:
        return
    if not model.get("head"):
        raise ConfigError(
            f"training.adapter is lora, but model {model.name!r} names no head (model.head: the modules that train "
            "in full beside the adapters, such as [pooler, classifier])"
        )
    lora = training.lora
    if isinstance(lora.r, bool) or not isinstance(lora.r, int) or lora.r < 1:
        raise ConfigError(f"training.lora.r is {lora.r!r}; it must be an integer >= 1")
    if isinstance(lora.alpha, bool) or not isinstance(lora.alpha, (int, float)) or not lora.alpha > 0:
        raise ConfigError(f"training.lora.alpha is {lora.alpha!r}; it must be a number > 0")
    if not 0 <= lora.dropout < 1:
        raise ConfigError(f"training.lora.dropout is {lora.dropout!r}; allowed: 0 <= value < 1")
    for name in target_modules(training, model):
        if not any(module == name or module.endswith(f".{name}") for module in linear_names):
            raise ConfigError(
                f"training.lora.target_modules: model {model.name!r} has no linear module {name!r} in its encoder "
                f"layers; its linear modules are: {', '.join(sorted(linear_names))}"
            )


def target_modules(training: DictConfig, model: DictConfig) -> list[str]:
    """The module names that get adapters: a preset of ``model.lora_targets`` or the list given."""
    targets = training.lora.target_modules
    if isinstance(targets, (list, ListConfig)):
        return [str(name) for name in targets]
    presets = model.get("lora_targets") or {}
    if targets not in presets:
        allowed = ", ".join(presets) or "none in this model config"
        raise ConfigError(
            f"training.lora.target_modules is {targets!r}; allowed: a preset of model {model.name!r} "
            f"({allowed}) or a list of module names"
        )
    return list(presets[targets])


def encoder_linear_names(model: DictConfig) -> set[str]:
    """Names of the linear modules in one encoder layer (``attention.self.query``, ...), from the architecture
    alone: the model is built on the meta device, without weights, in milliseconds."""
    with torch.device("meta"):
        classifier = AutoModelForSequenceClassification.from_config(load_config(model, num_labels=2))
    first_layer = classifier.base_model.get_submodule(model.layers)[0]
    return {name for name, module in first_layer.named_modules() if isinstance(module, nn.Linear)}


def add_adapter(classifier: nn.Module, model: DictConfig, training: DictConfig) -> peft.PeftModel | None:
    """Add LoRA adapters to ``classifier`` in place as ``training`` says, above its ``freeze_layers`` frozen
    layers; freeze everything else but the head. Returns the ``peft`` wrapper (to save and merge), or None
    without adapters.

    With every layer frozen there is nothing to adapt: only the head trains, as without adapters.
    """
    if training.get("adapter") is None:
        return None
    depth = len(classifier.base_model.get_submodule(model.layers))
    adapted = list(range(training.freeze_layers, depth))
    if not adapted:
        return None
    config = peft.LoraConfig(
        r=training.lora.r,
        lora_alpha=training.lora.alpha,
        lora_dropout=training.lora.dropout,
        target_modules=target_modules(training, model),
        layers_to_transform=adapted,
        layers_pattern=model.layers.split(".")[-1],  # encoder.layer.<i>: the part before the layer's number
        modules_to_save=list(model.head),
    )
    with warnings.catch_warnings():  # peft reads an attribute transformers 5 deprecates; nothing for a user to do
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        return peft.get_peft_model(classifier, config)


def save_adapted(adapted: peft.PeftModel, folder: Path) -> nn.Module:
    """Save the adapter (and trained head) to ``folder / "adapter"``; return the model with it merged, which
    loads with plain ``AutoModelForSequenceClassification`` once saved."""
    adapted.save_pretrained(folder / "adapter")
    return adapted.merge_and_unload()
