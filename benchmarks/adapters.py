"""Adapters: full fine-tuning against LoRA and frozen layers, one run each, then a LoRA study against the default one.

Part 1 trains MiniLM on two real datasets (``--data``, default TweetEval emotion and SST-2; 600 training examples
each, the shipped data configs' budget) once per method, with the same seed, epochs, precision and thread count,
each in a fresh process so that its peak memory is its own. Each method has its own learning rate, the usual one
for it (adapters and a lone head take steps about ten times larger than full fine-tuning). It prints the validation
metric, training examples/s (the optimizer's steps only) with its ratio against full fine-tuning, the run's
wall time (loading, tokenising, the frozen-feature cache, training and evaluation), the process's peak RSS and the
trainable parameters.

Part 2 runs two 12-trial studies with the sweeper's defaults (sampler, pruner, seed) on the first dataset, one over
``search_space=lora`` and one over the default space, and compares them at equal wall time: the best metric each
had reached when the shorter study ended, beside each study's wall time and final best::

    python benchmarks/adapters.py --data-root ../shared/data      # about 20 minutes on 2 cores
    python benchmarks/adapters.py --data-root ../shared/data --quick   # 60 examples, 2 trials: checks that it runs

Both studies stay in the SQLite file printed first, their logs beside it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import optuna
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from optuna.trial import TrialState

CONF = Path(__file__).resolve().parents[1] / "conf"
METHODS = {  # row -> overrides (learning rates: the usual one for each method)
    "full fine-tuning": ["training.learning_rate=1e-4"],
    "frozen 3 of 6": ["training.freeze_layers=3", "training.learning_rate=1e-4"],
    "head only (frozen 6)": ["training.freeze_layers=6", "training.learning_rate=1e-3"],
    "LoRA r=8 attention": ["training.adapter=lora", "training.learning_rate=1e-3"],
    "LoRA r=8 all linear": [
        "training.adapter=lora",
        "training.lora.target_modules=all_linear",
        "training.learning_rate=1e-3",
    ],
    "LoRA r=8 attention, frozen 3": [
        "training.adapter=lora",
        "training.freeze_layers=3",
        "training.learning_rate=1e-3",
    ],
}


def task_config(overrides: list[str]) -> DictConfig:
    """The ``finetune`` config as a run on its own composes it, without the ``hydra`` node."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("finetune", overrides=overrides)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def one_run(overrides: list[str], folder: str, results: multiprocessing.Queue) -> None:
    """In a fresh process: train once and put (metric, examples/s, wall s, peak RSS MB, trainable parameters)."""
    from hps.objectives import setup
    from hps.objectives.adapters import trainable_parameters
    from hps.objectives.finetune import fine_tune
    from hps.search.trial import TrialLink

    setup()
    started = time.perf_counter()
    result = fine_tune(task_config(overrides), TrialLink(), Path(folder))
    wall = time.perf_counter() - started
    last = result.curve[-1]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    speed = last.examples_seen / last.train_seconds
    results.put((result.metric, speed, wall, peak_mb, trainable_parameters(result.model)))


def compare_methods(arguments: argparse.Namespace, folder: Path) -> None:
    context = multiprocessing.get_context("spawn")
    for data in arguments.data:
        print(f"\n{data}: {arguments.train_examples} training examples, {arguments.epochs} epochs")
        columns = ("metric", 7), ("examples/s", 11), ("x full", 7), ("wall s", 7), ("peak MB", 8), ("trainable", 11)
        print(f"{'method':32}", *(f"{name:>{width}}" for name, width in columns))
        baseline = None
        for row, (method, changes) in enumerate(METHODS.items()):
            overrides = [
                f"data={data}",
                f"data.max_train_examples={arguments.train_examples}",
                f"training.num_epochs={arguments.epochs}",
                "training.evals_per_epoch=1",
                f"training.threads={arguments.threads}",
                f"paths.cache_dir={folder}/cache",
                *changes,
            ]
            run_folder = folder / "runs" / f"{data}-{row}"
            run_folder.mkdir(parents=True)
            results = context.Queue()
            process = context.Process(target=one_run, args=(overrides, str(run_folder), results))
            process.start()
            process.join()  # the result is a few numbers: the queue's buffer holds them until read
            if process.exitcode != 0:
                raise SystemExit(f"error: {method} on {data} failed (exit code {process.exitcode}), see above")
            metric, speed, wall, peak_mb, trainable = results.get()
            baseline = baseline or speed
            print(
                f"{method:32} {metric:7.4f} {speed:11.1f} {speed / baseline:7.2f} {wall:7.1f} {peak_mb:8.0f} "
                f"{trainable:11,}"
            )


def run_study(space: str, arguments: argparse.Namespace, folder: Path) -> float:
    """Run a 12-trial study (``--trials``) over ``space``; returns its wall seconds."""
    command = [
        str(Path(sys.executable).with_name("hps-finetune")),
        "-m",
        f"search_space={space}",
        f"data={arguments.data[0]}",
        f"data.max_train_examples={arguments.train_examples}",
        f"training.num_epochs={arguments.epochs}",
        f"hydra.sweeper.n_trials={arguments.trials}",
        f"hydra.sweeper.study_name={space}",
        "hydra.sweeper.sampler.seed=0",
    ]
    started = time.perf_counter()
    with open(folder / f"{space}.log", "w") as log:
        subprocess.run(
            command, check=True, stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"HPS_STUDIES_DIR": str(folder)}
        )
    return time.perf_counter() - started


def best_by(study: optuna.Study, seconds: float) -> float | None:
    """The best value among the trials complete within ``seconds`` of the study's first start."""
    start = min(t.datetime_start for t in study.trials)
    values = [
        t.value
        for t in study.trials
        if t.state == TrialState.COMPLETE and t.datetime_complete - start <= timedelta(seconds=seconds)
    ]
    return max(values, default=None)


def compare_studies(arguments: argparse.Namespace, folder: Path) -> None:
    walls = {space: run_study(space, arguments, folder) for space in ("lora", "default")}
    equal = min(walls.values())
    storage = f"sqlite:///{folder}/hps.db"
    print(
        f"\n{arguments.trials}-trial studies on {arguments.data[0]}, compared at {equal:.0f} s (the shorter one's wall)"
    )
    print(f"{'space':10} {'wall s':>7} {'best at equal time':>19} {'best':>7} {'complete':>9} {'pruned':>7}")
    for space, wall in walls.items():
        study = optuna.load_study(study_name=space, storage=storage)
        states = [t.state for t in study.trials]
        at_equal = best_by(study, equal)
        shown = "-" if at_equal is None else f"{at_equal:.4f}"
        print(
            f"{space:10} {wall:7.0f} {shown:>19} {study.best_value:7.4f} "
            f"{states.count(TrialState.COMPLETE):9} {states.count(TrialState.PRUNED):7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, required=True, help="folder of the datasets (HPS_DATA_ROOT)")
    parser.add_argument("--data", nargs="+", default=["tweet_eval_emotion", "sst2"], help="data configs")
    parser.add_argument("--train-examples", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="60 examples, 1 epoch, 2 trials")
    parser.add_argument("--only", choices=("methods", "studies"), help="run one part")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.train_examples, arguments.epochs, arguments.trials = 60, 1, 2
    os.environ["HPS_DATA_ROOT"] = str(arguments.data_root.resolve())
    folder = Path(tempfile.mkdtemp(prefix="hps-adapters-"))
    print(f"runs, studies and logs in {folder}")
    if arguments.only != "studies":
        compare_methods(arguments, folder)
    if arguments.only != "methods":
        compare_studies(arguments, folder)


if __name__ == "__main__":
    main()
