"""Recorded fine-tuning curves (``finetune_curves.py``'s CSV) as a benchmark that a search can be replayed on.

A trial's configuration is answered with the curve of the nearest recorded configuration: the search space's
parameters scaled to [0, 1] as the samplers see them (log ranges in log space, categorical choices by their
place in the list), Euclidean distance. The samplers keep their continuous space, as in a real study, and the
objective is piecewise constant over the cells around the recorded points: a finer table is a finer objective.
The alternative, the table as one categorical parameter of its configurations, would hide the space's shape
from every model-based sampler, which is what is being judged.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution

from hps.search.space import SearchSpace


class CurveTable:
    """Each dataset of the table is a task; ``curve`` and ``normalised_regret`` as the lcbench surrogate has them."""

    metric = "metric"
    test_metric = None  # the table holds validation curves only

    def __init__(self, path: str | Path, space: SearchSpace) -> None:
        self._distributions = dict(space.distributions)
        curves: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
        points: dict[tuple[str, int], list[float]] = {}
        with Path(path).open(newline="") as rows:
            for row in csv.DictReader(rows):
                key = (row["data"], int(row["config"]))
                curves[key].append((int(row["step"]), float(row["metric"])))
                points[key] = [self._unit(name, row[name]) for name in self._distributions]
        lengths = {len(curve) for curve in curves.values()}
        if len(lengths) != 1:
            raise ValueError(f"{path}: curves of {sorted(lengths)} evaluations; allowed: one length for all")
        self.epochs = lengths.pop()  # evaluations of a full training: the unit the budgets count in
        self.tasks = sorted({data for data, _ in curves})
        self._points, self._curves, self.ranges = {}, {}, {}
        for task in self.tasks:
            keys = sorted(key for key in curves if key[0] == task)
            self._points[task] = np.array([points[key] for key in keys])
            self._curves[task] = np.array([[value for _, value in sorted(curves[key])] for key in keys])
            finals = self._curves[task][:, -1]
            self.ranges[task] = (float(finals.min()), float(finals.max()))

    def curve(self, task: str, config: Mapping[str, object], epochs: int | None = None) -> dict[str, np.ndarray]:
        """The recorded curve nearest to ``config`` (parameters by name), its first ``epochs`` evaluations."""
        return {self.metric: self._curves[task][self.nearest(task, config), : epochs or self.epochs]}

    def nearest(self, task: str, config: Mapping[str, object]) -> int:
        """The row of the recorded configuration of ``task`` nearest to ``config``: the cell it falls in."""
        return int(np.argmin(((self._points[task] - self.unit_point(config)) ** 2).sum(axis=1)))

    def unit_point(self, config: Mapping[str, object]) -> np.ndarray:
        """``config`` (parameters by name) scaled to [0, 1] as the samplers scale it."""
        return np.array([self._unit(name, config[name]) for name in self._distributions])

    def points(self, task: str) -> np.ndarray:
        """The recorded configurations of ``task``, scaled to [0, 1], one row each."""
        return self._points[task]

    def normalised_regret(self, task: str, value: float) -> float:
        """How far ``value`` is from the task's best recorded final value, as a fraction of their range."""
        low, high = self.ranges[task]
        return (high - value) / (high - low)

    def _unit(self, name: str, value: object) -> float:
        distribution: BaseDistribution = self._distributions[name]
        if isinstance(distribution, CategoricalDistribution):
            choices = [str(choice) for choice in distribution.choices]
            return choices.index(str(value)) / max(len(choices) - 1, 1)
        value, low, high = float(value), distribution.low, distribution.high
        if distribution.log:
            value, low, high = math.log(value), math.log(low), math.log(high)
        return (value - low) / (high - low)
