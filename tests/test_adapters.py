"""LoRA adapters: where they go, what trains, the feature cache, production's merged model, the checks, a sweep."""

from __future__ import annotations

import json
import re

import numpy as np
import optuna
import pytest
import transformers
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import TrialState
from transformers import AutoModelForSequenceClassification

from hps.objectives.adapters import add_adapter, check_adapter, encoder_linear_names, trainable_parameters
from hps.objectives.data import load_splits, tokenize
from hps.objectives.finetune import fine_tune
from hps.objectives.inference import predict
from hps.objectives.metrics import metric_function
from hps.objectives.model import freeze_bottom, load_classifier, load_tokenizer
from hps.search.errors import ConfigError
from hps.search.trial import TrialLink, record
from tests.conftest import run_cli
from tests.test_objective import train_cached_and_whole

HIDDEN, INTERMEDIATE, LABELS = 32, 64, 4  # tiny_bert's sizes; tweet_eval_emotion's labels
HEAD = (HIDDEN * HIDDEN + HIDDEN) + (HIDDEN * LABELS + LABELS)  # pooler and classifier
# (inputs, outputs) of the linear modules of a tiny_bert layer that the presets target
ATTENTION = [(HIDDEN, HIDDEN)] * 3  # query, key, value
DENSE = [(HIDDEN, HIDDEN), (HIDDEN, INTERMEDIATE), (INTERMEDIATE, HIDDEN)]  # attention output, intermediate, output


def lora_parameters(r: int, targets: str, adapted_layers: int) -> int:
    """What LoRA adds: r x (inputs + outputs) per targeted linear module of each adapted layer."""
    shapes = ATTENTION + (DENSE if targets == "all_linear" else [])
    return adapted_layers * sum(r * (inputs + outputs) for inputs, outputs in shapes)


def with_lora(config: DictConfig, **lora: object) -> DictConfig:
    with open_dict(config):
        config.training.adapter = "lora"
        config.training.lora.update(lora)
    return config


def test_adapters_go_above_the_frozen_bottom_and_only_they_and_the_head_train(run_config):
    config = with_lora(run_config, r=4)  # run_config freezes 1 of tiny_bert's 2 layers
    classifier = load_classifier(config.model, LABELS, 0.1)
    freeze_bottom(classifier, config.model, 1)
    add_adapter(classifier, config.model, config.training)
    trainable = {name for name, p in classifier.named_parameters() if p.requires_grad}
    assert all(("lora_" in name and "layer.1." in name) or "modules_to_save" in name for name in trainable)
    assert {name.split(".lora_")[0].rsplit(".", 1)[1] for name in trainable if "lora_" in name} == {
        "query",
        "key",
        "value",
    }
    assert not any("lora_" in name for name, _ in classifier.named_parameters() if "layer.0." in name)
    assert trainable_parameters(classifier) == lora_parameters(4, "attention", 1) + HEAD


@pytest.mark.parametrize(("freeze", "targets"), [(0, "all_linear"), (2, "attention")])
def test_trainable_parameters_follow_rank_targets_and_frozen_layers(run_config, freeze, targets):
    config = with_lora(run_config, r=8, target_modules=targets)
    classifier = load_classifier(config.model, LABELS, 0.1)
    freeze_bottom(classifier, config.model, freeze)
    with open_dict(config):
        config.training.freeze_layers = freeze
    add_adapter(classifier, config.model, config.training)
    # every layer frozen: nothing to adapt, the head trains as it would without adapters
    assert trainable_parameters(classifier) == lora_parameters(8, targets, 2 - freeze) + HEAD


def test_adapters_on_cached_features_train_as_on_the_whole_model(run_config):
    train_cached_and_whole(with_lora(run_config, r=4, alpha=32))


def test_production_saves_the_adapter_and_a_merged_model_that_predicts_the_same(run_config, tmp_path):
    config = with_lora(run_config, r=4, alpha=64, target_modules="all_linear")
    with open_dict(config):
        config.production.enabled = True
    result = fine_tune(config, TrialLink(), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["adapter"] == "lora"
    assert metrics["trainable_parameters"] == lora_parameters(4, "all_linear", 1) + HEAD
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 4
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")  # plain transformers
    assert not any("lora" in name for name, _ in reloaded.named_parameters())
    tokenizer = load_tokenizer(config.model)
    test = tokenize(load_splits(config.data, with_test=True).test, tokenizer, list(config.data.text_columns), 128)
    collate = transformers.DataCollatorWithPadding(tokenizer)
    labels, predictions = predict(reloaded, test, collate)
    assert metric_function(config.data.metric)(labels, predictions) == metrics["test"]
    _, merged_predictions = predict(result.model, test, collate)  # the model as training left it, merged
    assert np.array_equal(predictions, merged_predictions)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"adapter": "qlora"}, "training.adapter is 'qlora'; allowed: null, lora"),
        ({"lora.r": 0}, "training.lora.r is 0; it must be an integer >= 1"),
        ({"lora.r": 4.5}, "training.lora.r is 4.5; it must be an integer >= 1"),
        ({"lora.alpha": 0}, "training.lora.alpha is 0; it must be a number > 0"),
        ({"lora.dropout": 1.0}, "training.lora.dropout is 1.0; allowed: 0 <= value < 1"),
        ({"lora.target_modules": "mlp"}, "training.lora.target_modules is 'mlp'; allowed: a preset of model"),
        ({"lora.target_modules": ["query", "q_proj"]}, "model 'tiny-bert-random' has no linear module 'q_proj'"),
    ],
)
def test_bad_adapter_settings_are_one_line(run_config, changes, message):
    with_lora(run_config)
    for key, value in changes.items():
        OmegaConf.update(run_config, f"training.{key}", value, merge=False)
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        check_adapter(run_config.training, run_config.model, encoder_linear_names(run_config.model))
    assert "\n" not in str(raised.value)


def test_a_lora_sweep_prunes_and_records_what_each_trial_trained(studies):
    result = run_cli("-m", "search_space=lora", "experiment=smoke", "hydra.sweeper.n_trials=5", studies=studies)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{studies}/hps.db")
    assert {t.state for t in study.trials} == {TrialState.COMPLETE, TrialState.PRUNED}
    for trial in study.trials:
        p = trial.params
        assert set(p) == {"learning_rate", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "freeze_layers"}
        assert record(trial, "config")["training"]["adapter"] == "lora"
        expected = lora_parameters(p["lora_r"], p["lora_targets"], 2 - p["freeze_layers"]) + HEAD
        assert trial.user_attrs["trainable_parameters"] == expected
        assert trial.intermediate_values  # the curve, also of a pruned trial
