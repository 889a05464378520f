"""The YAHPO Gym ``lcbench`` surrogate as an objective: a real learning curve per configuration, in milliseconds.

LCBench trained funnel-shaped MLPs with SGD on 34 OpenML tasks; YAHPO Gym fitted an ONNX model to those runs
that predicts the metrics of any configuration of its 7 hyperparameters after any epoch 1..52. Nobody here
wrote it, which makes it the judge of our sampler and pruner defaults (``benchmarks/search_quality.py``). A
trial reports the validation metric after each epoch (the pruner's step) through the same sweeper, pruner and
storage as fine-tuning::

    hps-lcbench -m lcbench.data_path=/path/to/yahpo_data lcbench.task=3945 hydra.sweeper.n_trials=100

The model is read with onnxruntime directly (the ``yahpo-gym`` package pins numpy<2); the inputs are encoded
as ``yahpo_gym.BenchmarkSet`` encodes them, and ``tests/test_lcbench.py`` checks the two agree.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from hps.search.errors import ConfigError, exit_on_config_error
from hps.search.space import SearchSpace
from hps.search.trial import TrialLink

DATA_ENV = "HPS_YAHPO_DATA"
EPOCHS = 52
HYPERPARAMETERS = ("batch_size", "learning_rate", "momentum", "weight_decay", "num_layers", "max_units", "max_dropout")
TARGETS = (  # the model's outputs, in order; val_accuracy is in percent, the others as they are named
    "time",  # simulated training seconds up to this epoch
    "val_accuracy",
    "val_cross_entropy",
    "val_balanced_accuracy",
    "test_cross_entropy",
    "test_balanced_accuracy",
)
DIRECTIONS = {target: "minimize" if "cross_entropy" in target or target == "time" else "maximize" for target in TARGETS}


class Surrogate:
    """The lcbench ONNX model in a YAHPO Gym data folder, with each task's target ranges.

    One single-threaded onnxruntime session: a 52-epoch curve takes well under a millisecond, and benchmarks
    run one surrogate per core.
    """

    def __init__(self, data_path: str | os.PathLike) -> None:
        import onnxruntime  # the `lcbench` extra; imported here so the rest of the platform does not need it

        folder = Path(data_path).expanduser()
        model = folder / "lcbench" / "model.onnx"
        statistics = folder / "global_statistics" / "instance_target_statistics.csv"
        for needed in (model, folder / "lcbench" / "encoding.json", statistics):
            if not needed.is_file():
                raise ConfigError(f"lcbench.data_path {str(folder)!r} is not a YAHPO Gym data folder: no {needed}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(model), sess_options=options)
        encoding = json.loads((folder / "lcbench" / "encoding.json").read_text())["OpenML_task_id"]
        self._task_codes = {task: code for task, code in encoding.items() if task != "#na#"}
        self.ranges = _target_ranges(statistics)
        self.tasks = sorted(self.ranges, key=int)  # the 34 tasks with statistics (the encoding knows one more)

    def curve(self, task: str, config: Mapping[str, float], epochs: int = EPOCHS) -> dict[str, np.ndarray]:
        """Each target after epochs 1..``epochs`` of training ``config`` on ``task``."""
        self.check_task(task)
        features = np.array([[epoch, *(config[name] for name in HYPERPARAMETERS)] for epoch in range(1, epochs + 1)])
        codes = np.full((epochs, 1), self._task_codes[task], dtype=np.int32)
        (predicted,) = self._session.run(None, {"x_cat": codes, "x_cont": features.astype(np.float32)})
        return {target: predicted[:, column].astype(float) for column, target in enumerate(TARGETS)}

    def normalised_regret(self, task: str, target: str, value: float) -> float:
        """How far ``value`` is from the task's best, as a fraction of its range (0 best, 1 worst)."""
        low, high = self.ranges[task][target]
        gap = high - value if DIRECTIONS[target] == "maximize" else value - low
        return gap / (high - low)

    def check_task(self, task: str) -> None:
        if task not in self.ranges:
            raise ConfigError(f"lcbench.task {task!r} is not an lcbench task; allowed: {', '.join(self.tasks)}")


def _target_ranges(statistics: Path) -> dict[str, dict[str, tuple[float, float]]]:
    """task -> target -> (min, max) over 0.5M random points, from YAHPO Gym's global statistics."""
    bounds: dict[str, dict[str, dict[str, float]]] = {}
    with statistics.open(newline="") as rows:
        for row in csv.DictReader(rows):
            if row["scenario"] == "lcbench":
                bounds.setdefault(row["instance"], {}).setdefault(row["metric"], {})[row["statistic"]] = float(
                    row["value"]
                )
    return {
        task: {target: (limits["min"], limits["max"]) for target, limits in targets.items()}
        for task, targets in bounds.items()
    }


@functools.lru_cache(maxsize=1)
def surrogate(data_path: str | None) -> Surrogate:
    """The surrogate for ``data_path`` (the setting, else ``$HPS_YAHPO_DATA``), loaded once per process."""
    path = data_path or os.environ.get(DATA_ENV)
    if not path:
        raise ConfigError(f"lcbench.data_path is not set; set it (or {DATA_ENV}) to a YAHPO Gym data folder")
    return Surrogate(path)


def preflight(cfg: DictConfig, space: SearchSpace | None = None) -> Surrogate:
    """Check the settings before any trial runs: the data folder, task, metric and direction, epochs."""
    settings = cfg.lcbench
    model = surrogate(settings.data_path)
    model.check_task(str(settings.task))
    if settings.metric not in DIRECTIONS or settings.metric == "time":
        raise ConfigError(f"lcbench.metric is {settings.metric!r}; allowed: {', '.join(TARGETS[1:])}")
    if cfg.objective.direction != DIRECTIONS[settings.metric]:
        raise ConfigError(
            f"objective.direction is {cfg.objective.direction!r} but {settings.metric} must be "
            f"{DIRECTIONS[settings.metric]}d"
        )
    if not 1 <= settings.epochs <= EPOCHS:
        raise ConfigError(f"lcbench.epochs is {settings.epochs}; allowed: 1 to {EPOCHS}")
    return model


def run(cfg: DictConfig, link: TrialLink) -> float:
    """Report the configuration's validation curve epoch by epoch (the pruner may stop it); the last value."""
    settings = cfg.lcbench
    curve = preflight(cfg).curve(str(settings.task), settings.config, settings.epochs)
    epoch = 0
    try:
        for epoch, value in enumerate(curve[settings.metric], start=1):
            link.report(epoch, float(value), can_prune=epoch < settings.epochs)
    finally:  # pruned trials too: what they cost
        link.set_user_attrs(epochs_trained=epoch, simulated_seconds=float(curve["time"][epoch - 1]))
    link.set_user_attrs(test_balanced_accuracy=float(curve["test_balanced_accuracy"][-1]))
    return float(curve[settings.metric][-1])


@hydra.main(version_base="1.3", config_path="pkg://hps.conf", config_name="lcbench")
def main(cfg: DictConfig) -> float:
    link = TrialLink.from_config(cfg)
    if link.in_study:  # any failure is stored with the trial by the sweeper
        return run(cfg, link)
    with exit_on_config_error():
        value = run(cfg, link)
    print(f"{cfg.lcbench.metric} after {cfg.lcbench.epochs} epochs: {value:.4f}")
    return value


if __name__ == "__main__":
    main()
