"""Trial speed: one real fine-tuning trial, our loop with each optimisation on or off, against HF Trainer.

Every row trains the same model (MiniLM), on the same data (TweetEval emotion: 600 training, 374 validation
tweets), with the same hyperparameters, seed and thread count, for freeze_layers 0, 3 and 6, and evaluates
once at the end, on the CPU (``--device cuda`` on a GPU), in each ``--precision`` (fp32, bf16 autocast). It
prints training examples/s (optimisation only, evaluation excluded), the wall time of the whole trial (model
load, tokenising, cache building, training, evaluation) and the validation macro-F1, with ratios against HF
Trainer in the same precision as a user would run it (defaults, random sampling), then ours in each precision
against ours in fp32::

    pip install -e '.[bench]'                 # accelerate, which HF Trainer needs
    python benchmarks/trial_speed.py          # about 25 minutes on 2 cores
    python benchmarks/trial_speed.py --freeze 0 --precision fp32 bf16 --epochs 1

Our rows: "ours, plain" (shuffled batches, whole model every step), "+ grouping" (length-grouped batches),
"+ cache" (frozen-bottom features computed once; k > 0), "ours, all on" (the defaults). The feature cache of
each k is built inside the first run that needs it and reused by the next, as trials of a study reuse it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import transformers
from datasets import Dataset
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from hps.objectives.data import load_splits, tokenize
from hps.objectives.device import placement
from hps.objectives.finetune import fine_tune
from hps.objectives.inference import predict
from hps.objectives.metrics import metric_function
from hps.objectives.model import freeze_bottom, load_classifier, load_tokenizer
from hps.search.trial import TrialLink

CONF = Path(__file__).resolve().parents[1] / "conf"
VARIANTS = {  # row -> (group_by_length, feature_cache)
    "ours, plain": (False, False),
    "ours + grouping": (True, False),
    "ours + cache": (False, True),
    "ours, all on": (True, True),
}


def config(
    run: argparse.Namespace, freeze: int, precision: str, folder: Path, grouping: bool, cache: bool
) -> DictConfig:
    """The task config for one run, with Hydra's runtime set as a job would have it."""
    overrides = [
        f"training.device={run.device}",
        f"training.precision={precision}",
        f"training.freeze_layers={freeze}",
        f"training.num_epochs={run.epochs}",
        "training.evals_per_epoch=1",
        f"training.threads={run.threads}",
        f"training.learning_rate={run.learning_rate}",
        f"training.group_by_length={grouping}",
        f"training.feature_cache={cache}",
        f"paths.cache_dir={folder}/cache",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("finetune", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(folder)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def ours(cfg: DictConfig) -> tuple[float, float, float]:
    """(training examples/s, wall seconds, validation metric) of one run of our task."""
    started = time.perf_counter()
    result = fine_tune(cfg, TrialLink(), output_dir=Path(HydraConfig.get().runtime.output_dir))
    last = result.curve[-1]
    return last.examples_seen / last.train_seconds, time.perf_counter() - started, result.metric


def tokenised_splits(cfg: DictConfig) -> tuple[transformers.PreTrainedTokenizerBase, Dataset, Dataset]:
    """The tokenizer and the tokenised training and validation splits, as our task makes them."""
    splits = load_splits(cfg.data)
    tokenizer = load_tokenizer(cfg.model)
    train_set, validation_set = (
        tokenize(split, tokenizer, list(cfg.data.text_columns), cfg.training.max_length)
        for split in (splits.train, splits.validation)
    )
    return tokenizer, train_set, validation_set


def hf_arguments(training: DictConfig, output_dir: Path, **changes: object) -> transformers.TrainingArguments:
    """``TrainingArguments`` with our training settings (no evaluation, logging or checkpoints unless changed)."""
    settings = {
        "output_dir": str(output_dir),
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "per_device_train_batch_size": training.batch_size,
        "num_train_epochs": training.num_epochs,
        "learning_rate": training.learning_rate,
        "weight_decay": training.weight_decay,
        # Below 1: a fraction of all steps. A float, so that hyperparameter_search keeps sampled fractions float.
        "warmup_steps": float(training.warmup_ratio),
        "lr_scheduler_type": training.lr_schedule,
        "label_smoothing_factor": training.label_smoothing,
        "max_grad_norm": training.max_grad_norm,
        "seed": training.seed,
    }
    return transformers.TrainingArguments(**settings | changes)


def hf_trainer(cfg: DictConfig, folder: Path, strategy: str) -> tuple[float, float, float]:
    """The same run with ``transformers.Trainer``: same data, model, freezing, optimiser settings, seed, device
    and precision (its own bf16 autocast)."""
    started = time.perf_counter()
    training = cfg.training
    torch.set_num_threads(training.threads)
    tokenizer, train_set, validation_set = tokenised_splits(cfg)
    transformers.set_seed(training.seed)
    classifier = load_classifier(cfg.model, cfg.data.num_labels, training.dropout)
    freeze_bottom(classifier, cfg.model, training.freeze_layers)
    place = placement(training)
    arguments = hf_arguments(
        training,
        folder / "hf",
        train_sampling_strategy=strategy,
        use_cpu=place.device.type == "cpu",
        bf16=place.precision == "bf16",
        fp16=place.precision == "fp16",
    )
    collate = transformers.DataCollatorWithPadding(tokenizer)
    trainer = transformers.Trainer(
        model=classifier, args=arguments, train_dataset=train_set, data_collator=collate, processing_class=tokenizer
    )
    metrics = trainer.train().metrics
    value = metric_function(cfg.data.metric)(*predict(classifier, validation_set, collate, place))
    return metrics["train_samples_per_second"], time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--freeze", nargs="+", type=int, default=[0, 3, 6])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    arguments = parser.parse_args()
    transformers.logging.set_verbosity_error()
    print(
        f"MiniLM on TweetEval emotion, 600 training examples, {arguments.epochs} epoch(s), {arguments.threads} "
        f"threads, {arguments.device}"
    )
    print(
        f"{'freeze':>6}  {'precision':<9} {'run':<28} {'train ex/s':>10} {'vs HF':>7} {'wall s':>7} {'vs HF':>7} "
        f"{'macro-F1':>9}"
    )
    for freeze in arguments.freeze:
        folder = Path(tempfile.mkdtemp(prefix=f"hps-speed-{freeze}-"))
        defaults: dict[str, tuple[str, tuple[float, float, float]]] = {}  # precision -> our last row
        for precision in arguments.precision:
            rows: list[tuple[str, tuple[float, float, float]]] = []
            base = config(arguments, freeze, precision, folder, False, False)
            rows.append(("HF Trainer", hf_trainer(base, folder, "random")))
            rows.append(("HF Trainer, group_by_length", hf_trainer(base, folder, "group_by_length")))
            for name in arguments.variants:
                grouping, cache = VARIANTS[name]
                if cache and freeze == 0:
                    continue  # nothing frozen, nothing to cache
                rows.append((name, ours(config(arguments, freeze, precision, folder, grouping, cache))))
            defaults[precision] = rows[-1]
            speed, wall, _ = rows[0][1]
            for name, (examples_per_s, seconds, metric) in rows:
                print(
                    f"{freeze:>6}  {precision:<9} {name:<28} {examples_per_s:>10.1f} {examples_per_s / speed:>6.2f}x "
                    f"{seconds:>7.1f} {wall / seconds:>6.2f}x {metric:>9.4f}",
                    flush=True,
                )
        if "fp32" in defaults and len(defaults) > 1:
            speed, wall, value = defaults["fp32"][1]
            for precision, (name, (examples_per_s, seconds, metric)) in defaults.items():
                print(
                    f"{freeze:>6}  {precision:<9} {name + ' vs its fp32':<28} "
                    f"{examples_per_s / speed:>9.2f}x {'':>7} {wall / seconds:>6.2f}x {metric - value:>+9.4f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
