"""How often ``hps check`` raises a false alarm, and how often it catches real shifts, on real datasets.

Trains a production model per dataset (MiniLM fine-tuned as the shipped task does, with ``--train-examples``
examples) through ``hps-finetune``, as a user would. It runs the model once over pools of text, takes a random
half of the test split as the reference, and draws ``--repeats`` batches of each ``--sizes`` from every pool:

- **fresh**: the test split's other half (exchangeable with the reference): every alarm is false;
- **the validation split**: the dataset's own other split, which may differ from the test split a little;
- **domain**: the text of other datasets (tweets, questions, text messages, linguists' example sentences,
  movie reviews), shown to the model as its own data: every batch is shifted;
- **labels**: fresh examples re-drawn so that the most common class makes up 80%
  (``--label-shift``) of each batch: the inputs' mix changes, and with labels the metric may drop.

For each pool and batch size it prints the share of batches each test flags (the predicted labels, the
confidence, the embeddings' MMD, each at alpha / 3) and the verdict ``drift``; with labels, the share called
``degraded`` and ``better``. Batches of one pool overlap (drawn without replacement from the pool, independently
per batch), so rates from a small pool are less certain than their count suggests::

    python benchmarks/drift_checks.py --data-root ../shared/data
    python benchmarks/drift_checks.py --data-root ../shared/data --models sst2 --sizes 50 100 --repeats 100

Results: benchmarks/RESULTS.md, "Model checks: false alarms and real shifts".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np

from hps.objectives.checks import open_model, run_model
from hps.objectives.inference import Outputs
from hps.objectives.metrics import metric_function
from hps.search.drift import drift, metric_shift

REPO = Path(__file__).resolve().parents[1]
# The other datasets whose text a model of each is shown as domain shift (single-text datasets only).
DOMAINS = ("sst2", "tweet_eval_emotion", "trec", "sms_spam", "cola")
TESTS = ("predicted_labels", "confidence", "embeddings")


def train_production(data: str, examples: int, folder: Path, overrides: list[str]) -> Path:
    """A production model of ``data`` trained by ``hps-finetune``; its run folder."""
    run = folder / data
    if not (run / "provenance.json").is_file():
        command = [sys.executable, "-m", "hps.objectives.finetune", f"data={data}", "production.enabled=true"]
        command += [f"data.max_train_examples={examples}", f"hydra.run.dir={run}", *overrides]
        subprocess.run(command, check=True, env=os.environ | {"HPS_STUDIES_DIR": str(folder)})
    return run


def pool_outputs(production, path: Path, labelled: bool):
    """The model's outputs over every example of the CSV ``path`` (its ``text`` column read as the model's text);
    with ``labelled`` (the model's own data) its labels too: another dataset's labels mean nothing to the model."""
    table = datasets.load_dataset("csv", data_files=str(path), split="train").select_columns(["text", "label"])
    table = table.rename_column("label", "labels") if labelled else table.remove_columns("label")
    own = str(production.config.data.text_columns[0])
    return run_model(production, table if own == "text" else table.rename_column("text", own))


def rates(production, reference, outputs, size: int, repeats: int, rows: list[np.ndarray] | None, seed: int):
    """Shares of ``repeats`` batches of ``size`` that each test flags, that are called drift, degraded, better."""
    generator = np.random.default_rng(seed)
    counts = dict.fromkeys([*TESTS, "drift", "degraded", "better"], 0)
    metric = metric_function(production.entry.metric)
    for repeat in range(repeats):
        batch = rows[repeat] if rows is not None else generator.choice(len(outputs.predictions), size, replace=False)
        result = drift(
            reference.predictions,
            reference.confidence,
            reference.embeddings,
            outputs.predictions[batch],
            outputs.confidence[batch],
            outputs.embeddings[batch],
            classes=int(production.config.data.num_labels),
            seed=seed + repeat,
        )
        for test in result["flagged"]:
            counts[test] += 1
        counts["drift"] += result["verdict"] == "drift"
        if outputs.labels is not None:
            shift = metric_shift(
                metric, outputs.labels[batch], outputs.predictions[batch], reference.labels, reference.predictions
            )
            counts["degraded"] += shift.verdict == "degraded"
            counts["better"] += shift.verdict == "better"
    unlabelled = ("degraded", "better") if outputs.labels is None else ()
    return {key: None if key in unlabelled else value / repeats for key, value in counts.items()}


def subset(outputs: Outputs, rows: np.ndarray) -> Outputs:
    return Outputs(*(None if part is None else part[rows] for part in vars(outputs).values()))


def label_shifted_rows(labels: np.ndarray, size: int, repeats: int, share: float, seed: int) -> list[np.ndarray]:
    """Batches in which the most common class makes up ``share`` (drawn without replacement within a batch)."""
    generator = np.random.default_rng(seed)
    major = np.bincount(labels).argmax()
    ones, others = np.flatnonzero(labels == major), np.flatnonzero(labels != major)
    count = min(round(size * share), len(ones))
    return [
        np.concatenate(
            [generator.choice(ones, count, replace=False), generator.choice(others, size - count, replace=False)]
        )
        for _ in range(repeats)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True, help="folder of the datasets (HPS_DATA_ROOT)")
    parser.add_argument("--models", nargs="+", default=["sst2", "tweet_eval_emotion"], help="one model per dataset")
    parser.add_argument("--train-examples", type=int, default=600)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200], help="examples per checked batch")
    parser.add_argument("--repeats", type=int, default=50, help="batches per pool and size")
    parser.add_argument("--label-shift", type=float, default=0.8, help="share of the major class in shifted batches")
    parser.add_argument("--folder", type=Path, default=REPO / "studies" / "benchmarks" / "drift_checks")
    parser.add_argument("--overrides", nargs="*", default=[], help="overrides of the production training")
    arguments = parser.parse_args()
    if not arguments.data_root.is_dir():
        parser.error(f"--data-root {arguments.data_root} is not a folder; allowed: the folder holding the datasets")
    os.environ["HPS_DATA_ROOT"] = str(arguments.data_root.resolve())

    print("| model | pool | batch | predicted labels | confidence | embeddings | drift | degraded | better |")
    print("|---|---|---|---|---|---|---|---|---|")
    for data in arguments.models:
        run = train_production(data, arguments.train_examples, arguments.folder.resolve(), arguments.overrides)
        production, root = open_model(run), arguments.data_root
        # The reference is half the test split, the other half a fresh sample: exchangeable, so every alarm on it is
        # false. (A check's reference is the whole test split; half of it only widens the intervals.)
        test = pool_outputs(production, root / data / "test.csv", labelled=True)
        halves = np.array_split(np.random.default_rng(0).permutation(len(test.predictions)), 2)
        reference = subset(test, halves[0])
        pools = {
            "fresh: the test split's other half": subset(test, halves[1]),
            "the validation split": pool_outputs(production, root / data / "validation.csv", labelled=True),
        }
        for other in (d for d in DOMAINS if d != data):
            split = "validation" if (root / other / "validation.csv").is_file() else "test"
            pools[f"domain: {other}"] = pool_outputs(production, root / other / f"{split}.csv", labelled=False)
        metric = metric_function(production.entry.metric)
        shown = ", ".join(
            f"{name.split(':')[0]} {metric(outputs.labels, outputs.predictions):.4f}"
            for name, outputs in (("reference", reference), *pools.items())
            if outputs.labels is not None
        )
        print(f"| {data} | {production.entry.metric} of the whole pools: {shown} | | | | | | | |")
        fresh = pools["fresh: the test split's other half"]
        for size in arguments.sizes:
            for name, outputs in pools.items():
                if size > len(outputs.predictions):
                    continue
                shown = rates(production, reference, outputs, size, arguments.repeats, None, seed=size)
                print(_row(data, name, size, shown))
            rows = label_shifted_rows(fresh.labels, size, arguments.repeats, arguments.label_shift, seed=size)
            shown = rates(production, reference, fresh, size, arguments.repeats, rows, seed=size)
            print(_row(data, f"labels: {arguments.label_shift:.0%} one class (fresh half)", size, shown))
    print(f"rates over {arguments.repeats} batches each; tests at alpha / 3 = {0.01 / 3:.4f}")


def _row(data: str, pool: str, size: int, shown: dict) -> str:
    cells = [shown[key] for key in (*TESTS, "drift", "degraded", "better")]
    return f"| {data} | {pool} | {size} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |"


if __name__ == "__main__":
    main()
