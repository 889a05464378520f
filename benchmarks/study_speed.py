"""Study speed: a pruned study end to end, ``hps-finetune -m`` against HF ``Trainer.hyperparameter_search``.

Both run 12 trials of MiniLM on TweetEval emotion (600 training, 374 validation tweets), 2 epochs each, over the
same search space (``conf/search_space/default.yaml``: learning rate, batch size, frozen layers, weight decay,
dropout, label smoothing, warm-up), with the same sampler and pruner (the sweeper's defaults in
``conf/hydra/sweeper/hps.yaml``, the sampler seeded; ``--pruner median`` picks another from
``conf/hydra/sweeper/pruner/``), seed, thread count and validation metric (macro-F1), evaluated at the same
fractions of training (4 per epoch). Ours is the real command line in a subprocess, timed from its start
(imports and input checks included); HF runs in this process, from reading the data to the end of the search,
with ``model_init`` building the same classifier with the same frozen layers. It prints each study's wall time,
best validation metric, complete and pruned trials, and when each reached HF's best metric (from the trials'
completion times in the studies' SQLite files): the target is ours there within a third of HF's wall time::

    pip install -e '.[bench]'                 # accelerate, which HF Trainer needs
    python benchmarks/study_speed.py          # about 20 minutes on 2 cores
    python benchmarks/study_speed.py --quick  # 3 trials, 100 examples, 1 epoch: checks that it runs

Each side works as its tool does: HF reports the optimizer step to the pruner (ours: the evaluation number), so
it compares trials with different batch sizes after different amounts of training, and the pruner's step
settings (median's warm-up, successive halving's rungs) count optimizer steps there; HF shuffles batches at
random and runs frozen layers in train mode, ours groups batches by length and computes the frozen layers once
per study (feature cache). Both studies stay in SQLite files in the folder printed first (``ours.db``,
``hf.db``), with our command's output (``ours.log``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
import torch
import transformers
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState
from torch import nn
from trial_speed import CONF, hf_arguments, tokenised_splits

from hps.objectives.inference import EVAL_BATCH_SIZE
from hps.objectives.metrics import metric_function
from hps.objectives.model import freeze_bottom, load_classifier
from hps.search.space import SearchSpace, parse_search_space
from hps.search.study import state_counts

REPO = CONF.parent
HF_ARGUMENTS = {  # our training key -> the TrainingArguments field hyperparameter_search sets
    "training.learning_rate": "learning_rate",
    "training.batch_size": "per_device_train_batch_size",
    "training.weight_decay": "weight_decay",
    "training.label_smoothing": "label_smoothing_factor",
    "training.warmup_ratio": "warmup_steps",  # a fraction of all steps when below 1
}
MODEL_KEYS = ("training.dropout", "training.freeze_layers")  # HF's model_init applies them


@dataclass
class Search:
    """A finished study and the wall-clock interval it ran in."""

    study: optuna.Study
    started: datetime
    finished: datetime

    @property
    def seconds(self) -> float:
        return (self.finished - self.started).total_seconds()

    def complete(self) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]

    def seconds_to_reach(self, value: float) -> float | None:
        """From the start until a trial completed with a metric of ``value`` or more; None if none did."""
        reached = [t.datetime_complete for t in self.complete() if t.value >= value]  # our metrics: larger is better
        return (min(reached) - self.started).total_seconds() if reached else None


def composed(overrides: list[str]) -> DictConfig:
    """The task config for these overrides, with its hydra node (the sweeper's sampler and pruner)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("finetune", overrides=overrides, return_hydra_config=True)


def ours_study(run: argparse.Namespace, common: list[str], folder: Path) -> Search:
    """``hps-finetune -m`` as a user runs it, in a subprocess; its output goes to ``folder/ours.log``."""
    storage = f"sqlite:///{folder}/ours.db"
    command = [
        str(Path(sys.executable).parent / "hps-finetune"),
        "-m",
        *common,
        f"hydra.sweeper.n_trials={run.trials}",
        "hydra.sweeper.study_name=ours",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.sampler.seed={run.seed}",
        f"paths.studies_dir={folder / 'ours'}",
        f"paths.cache_dir={folder / 'ours' / 'cache'}",  # an empty feature cache: the study builds its own
    ]
    log = folder / "ours.log"
    started = datetime.now()
    with log.open("w") as output:
        finished = subprocess.run(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, check=False)
    if finished.returncode:
        raise SystemExit(f"hps-finetune failed with exit status {finished.returncode}; its output: {log}")
    return Search(optuna.load_study(study_name="ours", storage=storage), started, datetime.now())


def sampled(trial: optuna.Trial, space: SearchSpace) -> dict[str, object]:
    """The trial's value of every parameter, by config key; asking again within a trial gives the same values."""
    values = {}
    for parameter in space.parameters.values():
        name, distribution = parameter.name, parameter.distribution
        if isinstance(distribution, CategoricalDistribution):
            values[parameter.key] = trial.suggest_categorical(name, distribution.choices)
        elif isinstance(distribution, IntDistribution):
            values[parameter.key] = trial.suggest_int(
                name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
            )
        else:
            values[parameter.key] = trial.suggest_float(
                name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
            )
    return values


def hf_study(run: argparse.Namespace, cfg: DictConfig, folder: Path) -> Search:
    """``Trainer.hyperparameter_search(backend="optuna")`` over the same space, budget, sampler and pruner."""
    training, sweeper = cfg.training, cfg.hydra.sweeper
    space = parse_search_space(OmegaConf.to_container(cfg.search_space, resolve=True))
    inexpressible = sorted(set(space.by_key()) - set(HF_ARGUMENTS) - set(MODEL_KEYS))
    if inexpressible:
        raise SystemExit(f"HF's hyperparameter_search cannot set {inexpressible}")
    started = datetime.now()
    torch.set_num_threads(training.threads)
    tokenizer, train_set, validation_set = tokenised_splits(cfg)
    metric = metric_function(cfg.data.metric)

    def model_init(trial: optuna.Trial | None) -> nn.Module:
        """Called with no trial once, when the Trainer is built; then per trial, after seeding, as ours does."""
        values = sampled(trial, space) if trial is not None else {}
        dropout = values.get("training.dropout", training.dropout)
        classifier = load_classifier(cfg.model, cfg.data.num_labels, dropout)
        freeze_bottom(classifier, cfg.model, values.get("training.freeze_layers", training.freeze_layers))
        return classifier

    def hp_space(trial: optuna.Trial) -> dict[str, object]:
        return {HF_ARGUMENTS[key]: value for key, value in sampled(trial, space).items() if key in HF_ARGUMENTS}

    def compute_metrics(prediction: transformers.EvalPrediction) -> dict[str, float]:
        return {cfg.data.metric: metric(prediction.label_ids, prediction.predictions.argmax(axis=-1))}

    arguments = hf_arguments(
        training,
        folder / "hf",
        eval_strategy="steps",
        eval_steps=1 / (training.evals_per_epoch * training.num_epochs),  # below 1: a fraction of all steps
        per_device_eval_batch_size=EVAL_BATCH_SIZE,
    )
    trainer = transformers.Trainer(
        model_init=model_init,
        args=arguments,
        train_dataset=train_set,
        eval_dataset=validation_set,
        data_collator=transformers.DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)  # a dict per evaluation
    optuna.logging.set_verbosity(optuna.logging.INFO)  # a line per trial instead; our sweeper plugin quietened it
    storage = f"sqlite:///{folder}/hf.db"
    trainer.hyperparameter_search(
        hp_space=hp_space,
        compute_objective=lambda metrics: metrics[f"eval_{cfg.data.metric}"],
        n_trials=run.trials,
        direction=cfg.objective.direction,
        backend="optuna",
        sampler=instantiate(sweeper.sampler, seed=run.seed),
        pruner=instantiate(sweeper.pruner),
        storage=storage,
        study_name="hf",
    )
    return Search(optuna.load_study(study_name="hf", storage=storage), started, datetime.now())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--train-examples", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pruner", help="a pruner of conf/hydra/sweeper/pruner/ (default: the sweeper's default)")
    parser.add_argument("--quick", action="store_true", help="3 trials, 100 training examples, 1 epoch")
    run = parser.parse_args()
    if run.quick:
        run.trials, run.train_examples, run.epochs = 3, 100, 1
    transformers.logging.set_verbosity_error()
    folder = Path(tempfile.mkdtemp(prefix="hps-study-speed-"))
    data_root = Path(os.environ.get("HPS_DATA_ROOT", REPO / "data")).resolve()  # the same files from any directory
    common = [
        f"paths.data_dir={data_root}",
        f"data.max_train_examples={run.train_examples}",
        f"training.num_epochs={run.epochs}",
        f"training.threads={run.threads}",
        f"training.seed={run.seed}",
        *([f"hydra/sweeper/pruner={run.pruner}"] if run.pruner else []),
    ]
    cfg = composed(common)
    print(
        f"{cfg.model.name} on {cfg.data.name}: {run.trials} trials, {run.train_examples} training examples, "
        f"{run.epochs} epoch(s) x {cfg.training.evals_per_epoch} evaluations, {run.threads} threads, "
        f"seed {run.seed}, {cfg.hydra.sweeper.pruner._target_.rsplit('.', 1)[-1]}; studies in {folder}",
        flush=True,
    )
    mine = ours_study(run, common, folder)  # first, so that HF, not ours, finds the splits already tokenised
    print(f"ours done in {mine.seconds:.0f} s; now HF", flush=True)
    hf = hf_study(run, cfg, folder)
    target = hf.study.best_value
    metric = cfg.data.metric
    header = f"{'study':<26} {'wall s':>7} {'vs HF':>6} {'complete':>8} {'pruned':>6}"
    print(f"{header} {'best ' + metric:>14} {'HF best at s':>12}")
    for name, search in (("HF hyperparameter_search", hf), ("ours (hps-finetune -m)", mine)):
        counts = state_counts(search.study)
        best = max((t.value for t in search.complete()), default=float("nan"))
        reached = search.seconds_to_reach(target)
        print(
            f"{name:<26} {search.seconds:>7.0f} {hf.seconds / search.seconds:>5.2f}x {counts['complete']:>8} "
            f"{counts['pruned']:>6} {best:>14.4f} {'never' if reached is None else f'{reached:.0f}':>12}"
        )
    reached = mine.seconds_to_reach(target)
    if reached is None:
        print(f"ours never reached HF's best {metric} ({target:.4f})")
    else:
        print(
            f"ours reached HF's best {metric} ({target:.4f}) after {reached:.0f} s: "
            f"{reached / hf.seconds:.2f} of HF's wall time (target: at most 0.33)"
        )


if __name__ == "__main__":
    main()
