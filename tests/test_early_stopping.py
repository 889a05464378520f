"""Early stopping and the best checkpoint: objective.value=best, training.early_stopping, production.best_step.

One small trial that overfits (a tiny random-weight model, a high constant learning rate: its validation metric
peaks, then falls) is shared by the tests; it runs in an in-memory study, as ``hps.objective`` runs trials.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import torch
import transformers
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hps.objectives.checkpoints import BestCheckpoint
from hps.objectives.data import load_splits, tokenize
from hps.objectives.finetune import check_best_step, fine_tune, preflight
from hps.objectives.inference import predict
from hps.objectives.metrics import metric_function
from hps.objectives.model import load_tokenizer
from hps.objectives.train import TrainResult, check_training, optimizer_step
from hps.search.errors import ConfigError
from hps.search.export import exported_config
from hps.search.space import parse_search_space
from hps.search.trial import TrialLink
from tests.conftest import composed

# The run_config fixture's tiny fp32 run, made to overfit: no frozen layers, 1e-2 constant, 5 epochs of 4 evaluations.
OVERFIT = (
    "model=tiny_bert",
    "data.max_train_examples=300",
    "training.num_epochs=5",
    "training.evals_per_epoch=4",
    "training.learning_rate=1e-2",
    "training.lr_schedule=constant",
    "training.warmup_ratio=0",
    "training.freeze_layers=0",
    "training.threads=1",
    "training.precision=fp32",
    "objective.value=best",
)


def task_config(folder: Path, *overrides: str) -> DictConfig:
    """The config a job gets for ``OVERFIT`` and ``overrides``, as the run_config fixture makes it."""
    config = composed(*OVERFIT, f"paths.cache_dir={folder}/cache", *overrides)
    with open_dict(config):
        config.hydra.runtime.output_dir = str(folder)
    HydraConfig.instance().set_config(config)  # what Hydra does for a job
    with open_dict(config):
        del config["hydra"]
    return config


@dataclass
class Trial:
    config: DictConfig
    study: optuna.Study
    result: TrainResult

    @property
    def frozen(self) -> optuna.trial.FrozenTrial:
        return self.study.trials[0]


@pytest.fixture(scope="module")
def overfit(tmp_path_factory) -> Trial:
    """Trial 0 of an in-memory study, run to the end with objective.value=best."""
    config = task_config(tmp_path_factory.mktemp("overfit"))
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    result = fine_tune(config, TrialLink(trial))
    study.tell(trial, result.metric)
    return Trial(config, study, result)


def validation_metric(config: DictConfig, model: torch.nn.Module, tokenizer=None) -> float:
    """The metric of ``model`` on the validation split, as an evaluation computes it."""
    tokenizer = tokenizer or load_tokenizer(config.model)
    validation = load_splits(config.data).validation
    table = tokenize(validation, tokenizer, list(config.data.text_columns), config.training.max_length)
    labels, predictions = predict(model, table, transformers.DataCollatorWithPadding(tokenizer))
    return metric_function(config.data.metric)(labels, predictions)


def test_a_curve_that_peaks_and_falls_gives_the_peak_and_its_weights(overfit):
    metrics = [e.metric for e in overfit.result.curve]
    peak = max(metrics)
    best = metrics.index(peak)
    assert len(metrics) == 20 and best < len(metrics) - 2 and metrics[-1] < peak, f"no peak to test on: {metrics}"

    assert overfit.result.metric == peak
    assert overfit.result.best_step == overfit.result.curve[best].step == best + 1
    assert overfit.frozen.user_attrs["best_step"] == best + 1 and overfit.frozen.user_attrs["best_value"] == peak
    # the pruner saw every evaluation, also those after the peak
    assert overfit.frozen.intermediate_values == {e.step: e.metric for e in overfit.result.curve}
    # the returned model has the peak's weights back: it reproduces that evaluation exactly, not the last one
    assert validation_metric(overfit.config, overfit.result.model) == peak


def test_value_last_is_the_default_and_keeps_the_model_as_training_left_it(overfit, tmp_path):
    assert composed().objective.value == "last"
    config = task_config(tmp_path, "objective.value=last")
    result = fine_tune(config, TrialLink())
    metrics = [e.metric for e in overfit.result.curve]
    assert [e.metric for e in result.curve] == metrics  # keeping the best weights changes nothing in training
    assert result.metric == metrics[-1] != max(metrics)
    assert validation_metric(config, result.model) == metrics[-1]


def stop_after(metrics: list[float], patience: int) -> int:
    """How many evaluations a run makes that stops after ``patience`` of them without a new best."""
    best, waited = -math.inf, 0
    for made, metric in enumerate(metrics, start=1):
        best, waited = (metric, 0) if metric > best else (best, waited + 1)
        if waited == patience:
            return made
    return len(metrics)


def test_early_stopping_stops_after_patience_evaluations_without_improvement(overfit):
    full = [e.metric for e in overfit.result.curve]
    patience = 4
    expected = stop_after(full, patience)
    assert expected < len(full)
    trial = overfit.study.ask()
    config = overfit.config.copy()
    with open_dict(config):
        config.training.early_stopping.patience = patience
    result = fine_tune(config, TrialLink(trial))
    assert [e.metric for e in result.curve] == full[:expected]
    assert [e.final for e in result.curve] == [False] * (expected - 1) + [True]
    assert result.optimizer_steps < overfit.result.optimizer_steps
    # every evaluation was reported to the trial, the one that stopped training too
    reported = overfit.study.trials[trial.number].intermediate_values
    assert reported == {e.step: e.metric for e in result.curve}
    assert result.metric == max(full[:expected])


def test_best_checkpoint_counts_improvements_beyond_min_delta():
    model = torch.nn.Linear(2, 1)
    checkpoint = BestCheckpoint("maximize", patience=2, min_delta=0.05)
    stops = [checkpoint.update(metric, step, model) for step, metric in enumerate([0.5, 0.52, 0.6, 0.6, 0.64], 1)]
    # 0.52 and 0.64 beat the best by less than min_delta: they count as evaluations without improvement
    assert stops == [False, False, False, False, True]
    assert (checkpoint.value, checkpoint.step) == (0.64, 5)  # the best is the best, min_delta or not
    lowest = BestCheckpoint("minimize", keep_weights=True)
    for step, loss in enumerate([0.9, 0.4, 0.4, 0.7], 1):
        with torch.no_grad():
            model.weight.fill_(step)
        assert not lowest.update(loss, step, model)  # no patience: never stops
    assert lowest.step == 2  # the first of equal bests
    lowest.restore(model)
    assert torch.equal(model.weight, torch.full((1, 2), 2.0))


def test_export_and_production_training_use_the_best_step(overfit, tmp_path):
    best_step = overfit.result.best_step
    exported = exported_config(overfit.frozen, tmp_path)
    assert exported["production"] == {
        "enabled": True,
        "merge_validation": False,
        "num_epochs": None,
        "best_step": best_step,
        "source": None,  # hps export sets it; the bare function leaves the composed default
    }
    production = OmegaConf.create({key: value for key, value in exported.items() if key != "hydra"})

    # on train + validation: as far as the trial's best evaluation, with the schedule of all 5 epochs
    merged = production.copy()
    merged.production.merge_validation = True
    result = fine_tune(merged, TrialLink(), tmp_path / "merged")
    splits = load_splits(production.data)
    steps_per_epoch = -(-(len(splits.train) + len(splits.validation)) // production.training.batch_size)
    assert result.curve == [] and result.metric is None
    assert result.optimizer_steps == optimizer_step(best_step, steps_per_epoch, 4) < steps_per_epoch * 5
    metrics = json.loads((tmp_path / "merged" / "metrics.json").read_text())
    assert metrics["validation"] is None

    # with a validation split: trained to the end, the best weights restored before the test and the saving
    result = fine_tune(production, TrialLink(), tmp_path / "kept")
    assert result.metric == overfit.result.metric and result.best_step == best_step
    assert len(result.curve) == 20
    assert json.loads((tmp_path / "kept" / "metrics.json").read_text())["validation"] == overfit.result.metric
    folder = tmp_path / "kept" / "model"
    saved = AutoModelForSequenceClassification.from_pretrained(folder)
    assert validation_metric(production, saved, AutoTokenizer.from_pretrained(folder)) == overfit.result.metric


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "patience",
            0,
            "training.early_stopping.patience is 0; it must be null (no early stopping) or an integer >= 1",
        ),
        ("patience", 1.5, "training.early_stopping.patience is 1.5; it must be null"),
        ("patience", True, "training.early_stopping.patience is True; it must be null"),
        ("min_delta", -0.01, "training.early_stopping.min_delta is -0.01; it must be a number >= 0"),
        ("min_delta", "x", "training.early_stopping.min_delta is 'x'; it must be a number >= 0"),
        (None, 3, "training.early_stopping is 3; it must be a mapping {patience, min_delta}"),
    ],
)
def test_bad_early_stopping_settings_are_one_line(key, value, message):
    training = composed().training
    check_training(training)
    if key is None:
        training.early_stopping = value
    else:
        training.early_stopping[key] = value
    with pytest.raises(ConfigError) as error:
        check_training(training)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_bad_best_step_and_value_are_one_line_before_any_trial():
    training = composed("training.num_epochs=2", "training.evals_per_epoch=4").training
    check_best_step(8, training)
    for value, message in [
        (0, "production.best_step is 0; it must be null or an integer >= 1"),
        (9, "production.best_step is 9, past the training's 8 evaluation steps (num_epochs x evals_per_epoch)"),
    ]:
        with pytest.raises(ConfigError, match="^" + re.escape(message)):
            check_best_step(value, training)
    space = parse_search_space(
        {"patience": {"key": "training.early_stopping.patience", "type": "int", "low": 0, "high": 3}}
    )
    with pytest.raises(
        ConfigError, match=r"^search space parameter 'patience' = 0: training\.early_stopping\.patience is 0; [^\n]*$"
    ):
        preflight(composed("model=tiny_bert"), space)
    space = parse_search_space({"lr": {"key": "training.learning_rate", "type": "float", "low": 1e-4, "high": 1e-3}})
    with pytest.raises(ConfigError, match=r"^objective\.value is 'peak'; allowed: last, best$"):
        preflight(composed("model=tiny_bert", "objective.value=peak"), space)
    with pytest.raises(ConfigError, match=r"^objective\.value is best and hydra\.sweeper\.direction is minimize, "):
        preflight(composed("model=tiny_bert", "objective.value=best", "hydra.sweeper.direction=minimize"), space)
