"""The fine-tuning objective in-process: configs compose, the loop freezes, evaluates and is deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from omegaconf import DictConfig, open_dict

from hps.objectives.data import load_splits, tokenize
from hps.objectives.features import TopLayers, cached_features, pad_features
from hps.objectives.finetune import fine_tune
from hps.objectives.model import freeze_bottom, load_classifier, load_tokenizer
from hps.objectives.train import TrainResult, evaluation_points
from hps.search.trial import TrialLink
from tests.conftest import REPO, composed

SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="the shared datasets (../shared/data) are not beside this clone")
@pytest.mark.parametrize("name", ["tweet_eval_emotion", "sst2", "trec", "cola", "mrpc", "sms_spam"])
def test_every_data_config_reads_its_real_files(name, monkeypatch):
    monkeypatch.setenv("HPS_DATA_ROOT", str(SHARED_DATA))
    splits = load_splits(composed(f"data={name}").data, with_test=True)
    assert len(splits.train) == 600  # the default CPU budget
    assert len(splits.validation) > 0


def test_evaluations_fall_on_the_same_fractions_of_an_epoch():
    points = evaluation_points(steps_per_epoch=10, epochs=2, evals_per_epoch=4)
    assert points == {2: 1, 5: 2, 8: 3, 10: 4, 12: 5, 15: 6, 18: 7, 20: 8}
    assert evaluation_points(steps_per_epoch=40, epochs=1, evals_per_epoch=4) == {10: 1, 20: 2, 30: 3, 40: 4}
    # Fewer optimizer steps than evaluations: shared points are evaluated once, and the end of epoch e is
    # still step e * evals_per_epoch, as in every other trial.
    assert evaluation_points(steps_per_epoch=3, epochs=2, evals_per_epoch=4) == {1: 1, 2: 3, 3: 4, 4: 5, 5: 7, 6: 8}


def test_freezing_covers_embeddings_and_the_bottom_layers():
    config = composed("model=tiny_bert")
    classifier = load_classifier(config.model, num_labels=3, dropout=0.1)
    frozen = freeze_bottom(classifier, config.model, 1)
    encoder = classifier.base_model.encoder.layer
    assert frozen == [classifier.base_model.embeddings, encoder[0]]
    assert not any(p.requires_grad for module in frozen for p in module.parameters())
    assert all(p.requires_grad for p in encoder[1].parameters())
    assert freeze_bottom(load_classifier(config.model, 3, 0.1), config.model, 0) == []


def test_training_is_deterministic_and_frozen_weights_do_not_move(run_config):
    transformers.set_seed(run_config.training.seed)  # as fine_tune does before building the model
    initial = load_classifier(run_config.model, run_config.data.num_labels, run_config.training.dropout).state_dict()
    first = fine_tune(run_config, TrialLink())
    second = fine_tune(run_config, TrialLink())
    assert [e.step for e in first.curve] == [1, 2, 3, 4]
    assert [(e.metric, e.train_loss) for e in first.curve] == [(e.metric, e.train_loss) for e in second.curve]
    unchanged = {name: torch.equal(value, initial[name]) for name, value in first.model.state_dict().items()}
    frozen = [
        same for name, same in unchanged.items() if name.startswith(("bert.embeddings.", "bert.encoder.layer.0."))
    ]
    trained = [same for name, same in unchanged.items() if name.startswith(("bert.encoder.layer.1.", "classifier."))]
    assert len(frozen) > 10 and all(frozen)
    assert len(trained) > 10 and not any(trained)
    assert first.curve[-1].final and not any(e.final for e in first.curve[:-1])


def test_outside_a_study_the_link_never_prunes():
    link = TrialLink()
    assert not link.in_study and link.number is None
    for step in range(1, 20):
        link.report(step, 0.0)  # a study's pruner would stop this; outside a study nothing happens


def test_model_package_resolver_names_the_shipped_model():
    path = Path(composed().model.path)
    assert (path / "config.json").is_file()


def test_feature_cache_gives_the_whole_model_s_logits(run_config):
    transformers.set_seed(0)
    classifier = load_classifier(run_config.model, run_config.data.num_labels, 0.1)
    frozen = freeze_bottom(classifier, run_config.model, 1)
    tokenizer = load_tokenizer(run_config.model)
    validation = tokenize(load_splits(run_config.data).validation, tokenizer, ["text"], 128)
    collate = transformers.DataCollatorWithPadding(tokenizer)
    folder = Path(run_config.paths.cache_dir) / "features"
    features = cached_features(classifier, run_config.model, 1, validation, collate, folder)
    assert len(list(folder.iterdir())) == 1 and features.bytes == sum(features.lengths) * 32 * 4  # hidden 32
    assert features.lengths == [len(ids) for ids in validation["input_ids"]]
    classifier.eval()
    top = TopLayers(classifier, run_config.model, 1)
    rows = list(range(0, len(validation), 7))[:40]
    with torch.no_grad():
        whole = classifier(**collate(validation.select(rows).to_list())).logits
        batch = pad_features([features[i] for i in rows])
        labels = batch.pop("labels")
        cached = top(**batch).logits
    assert labels.tolist() == [validation[i]["labels"] for i in rows]
    assert (whole - cached).abs().max() < 1e-5
    assert cached_features(classifier, run_config.model, 1, validation, collate, folder).hidden.shape == (
        features.hidden.shape
    )  # found, not recomputed
    assert len(list(folder.iterdir())) == 1
    assert frozen[1] is classifier.base_model.encoder.layer[0]


def train_cached_and_whole(config: DictConfig) -> tuple[TrainResult, TrainResult]:
    """Fine-tune ``config`` on cached frozen features, then on the whole model; their curves must agree."""
    cached = fine_tune(config, TrialLink())
    with open_dict(config):
        config.training.feature_cache = False
    whole = fine_tune(config, TrialLink())
    assert [e.metric for e in cached.curve] == [e.metric for e in whole.curve]
    for mine, theirs in zip(cached.curve, whole.curve, strict=True):
        assert mine.train_loss == pytest.approx(theirs.train_loss, abs=1e-5)
    return cached, whole


def test_training_on_cached_features_matches_training_the_whole_model(run_config):
    cached, whole = train_cached_and_whole(run_config)
    weights = whole.model.state_dict()
    assert max((value - weights[name]).abs().max().item() for name, value in cached.model.state_dict().items()) < 1e-4
