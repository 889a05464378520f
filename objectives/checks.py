"""``hps check`` on the fine-tuning task's production models: is a model still good on the data it now meets?

A production run's folder holds the model, the config it trained with, ``provenance.json`` (its row in the
registry of its study's database, :mod:`hps.search.registry`) and ``reference.npz`` (its outputs over its test
split). A check runs the model over a new CSV and compares (:mod:`hps.search.drift`): with the label column, its
metric against the reference's (``degraded`` / ``within noise`` / ``better``); always, the drift of its
predictions, confidence and pooled embeddings (``drift`` / ``no drift``). Every check is stored as a row of the
registry with its numbers (docs/model-maintenance.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import transformers
from datasets import Dataset
from omegaconf import DictConfig, OmegaConf

from hps.objectives import setup
from hps.objectives.data import fingerprint, read_batch, tokenize
from hps.objectives.device import placement
from hps.objectives.inference import REFERENCE, Outputs, load_reference, model_outputs
from hps.objectives.metrics import metric_function
from hps.search.drift import ALPHA, CONFIDENCE, drift, metric_shift
from hps.search.errors import ConfigError
from hps.search.registry import PROVENANCE, CheckEntry, ModelEntry, model, record_check
from hps.search.storage import default_storage

MIN_EXAMPLES = 20  # fewer examples than this cannot tell a change from noise


@dataclass
class ProductionModel:
    """A production run's folder, its registry row and the config it trained with."""

    folder: Path
    entry: ModelEntry
    url: str  # the registry's database
    config: DictConfig


def open_model(path: Path, storage: str | None = None) -> ProductionModel:
    """The production model at ``path``: its run folder, the ``model/`` folder in it, or a
    ``studies/<lineage>/production`` link; one line when it is none of these."""
    setup()  # checks read data and run models: no progress bars of transformers' and datasets'
    if not path.exists():
        raise ConfigError(f"model folder {str(path)!r} does not exist; give a production run's folder")
    folder = next((f for f in (path, path.parent) if (f / PROVENANCE).is_file()), None)
    if folder is None:
        raise ConfigError(
            f"{str(path)!r} has no {PROVENANCE}: not a production model saved by hps (production training writes "
            "one beside model/); give the run folder or studies/<lineage>/production"
        )
    folder = folder.resolve()
    try:
        provenance = json.loads((folder / PROVENANCE).read_text())
        model_id = int(provenance["model"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{str(folder / PROVENANCE)!r} is damaged: it names no registry model id") from None
    missing = [name for name in ("config.yaml", "model/config.json") if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"{str(folder)!r} lacks {missing[0]}: the production run's folder is incomplete")
    url = storage or provenance.get("storage") or default_storage()
    return ProductionModel(folder, model(url, model_id), url, OmegaConf.load(folder / "config.yaml"))


def batch_file(production: ProductionModel, data: Path) -> Path:
    """The CSV to check: ``data`` itself, or in a folder the file the model's data config names as its test
    split."""
    path = data / str(production.config.data.test_file) if data.is_dir() else data
    if not path.is_file():
        raise ConfigError(
            f"--data {str(path)!r}: no such file; give a CSV, or a folder holding {production.config.data.test_file!r}"
            " (the model's data config's test_file)"
        )
    return path


def check(
    production: ProductionModel,
    data: Path,
    alpha: float = ALPHA,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> CheckEntry:
    """Check the model on the CSV ``data`` (or a folder's test file) and store the check; the stored row."""
    path = batch_file(production, data)
    reference_file = production.folder / REFERENCE
    if not reference_file.is_file():
        raise ConfigError(
            f"model {production.entry.id} has no {REFERENCE} (its data had no test split): nothing to compare with"
        )
    table = read_batch(production.config.data, path)
    if len(table) < MIN_EXAMPLES:
        raise ConfigError(f"--data {str(path)!r} has {len(table)} examples; a check needs at least {MIN_EXAMPLES}")
    reference, outputs = load_reference(reference_file), run_model(production, table)
    numbers: dict = {
        "drift": drift(
            reference.predictions,
            reference.confidence,
            reference.embeddings,
            outputs.predictions,
            outputs.confidence,
            outputs.embeddings,
            classes=int(production.config.data.num_labels),
            alpha=alpha,
            seed=seed,
        )
    }
    if outputs.labels is None:
        kind, verdict = "unlabelled", numbers["drift"]["verdict"]
        action = verdict == "drift"
    else:
        metric = metric_function(production.entry.metric)
        shift = metric_shift(
            metric, outputs.labels, outputs.predictions, reference.labels, reference.predictions, confidence, seed=seed
        )
        numbers["metric"] = shift.as_dict()
        kind, verdict = "labelled", shift.verdict
        action = verdict == "degraded"
    numbers |= {"alpha": alpha, "confidence": confidence, "metric_name": production.entry.metric}
    entry = CheckEntry(
        model=production.entry.id,
        kind=kind,
        data=str(path.resolve()),
        fingerprint=fingerprint([path]),
        examples=len(table),
        verdict=verdict,
        action_needed=action,
        numbers=numbers,
    )
    entry.id = record_check(production.url, entry)
    return entry


def run_model(production: ProductionModel, table: Dataset) -> Outputs:
    """The model's outputs (with probabilities and embeddings) over an untokenised table of its data's columns."""
    folder = production.folder / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    config = production.config
    # Where this machine runs it best, not where it trained: a model trained on a GPU is checked anywhere.
    place = placement(OmegaConf.merge(config.training, {"device": "auto", "precision": "auto"}))
    tokens = tokenize(table, tokenizer, list(config.data.text_columns), config.training.max_length)
    collate = transformers.DataCollatorWithPadding(tokenizer)
    return model_outputs(classifier.to(place.device), tokens, collate, place, details=True)
