"""The curve table's resolution: how often a replayed search gets a recorded configuration's curve a second time.

``curve_table.py`` answers a trial with the curve of the nearest recorded configuration, so the space is cut into
one cell per recorded configuration. This replays searches as ``search_quality.py --table`` does, up to
``--budget`` full trainings, and prints per configuration (sampler and pruner) the share of its trials that fell
in a cell an earlier trial of the same search had already replayed, beside the median distance from each
proposal to the nearest earlier one and from each recorded configuration to its nearest neighbour (both in the
samplers' [0, 1] scaling). A sampler whose proposals are as far apart as the recorded points, yet often repeat a
cell, is refining at a scale the table cannot resolve (benchmarks/RESULTS.md, "Pruner settings relative to the
training, chosen on both benchmarks")::

    python benchmarks/table_cells.py --table benchmarks/finetune_curves.csv --seeds 2 --only random TPE default
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import optuna
from curve_table import CurveTable
from hydra.utils import instantiate
from search_quality import CONFIGURATIONS, Ledger, new_study, run_trials, settings

from hps.search.space import parse_search_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=Path("benchmarks/finetune_curves.csv"))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--budget", type=int, default=30, help="full trainings' worth of evaluations per search")
    parser.add_argument("--only", nargs="+", default=["random", "TPE", "default"], choices=list(CONFIGURATIONS))
    arguments = parser.parse_args()
    if not arguments.table.is_file():
        parser.error(f"--table {arguments.table} is not a file; allowed: a CSV written by finetune_curves.py")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = parse_search_space(settings(CONFIGURATIONS["default"], "finetune")[3])
    table = CurveTable(arguments.table, space)
    for task in table.tasks:
        spacing = statistics.median(_nearest_distances(table.points(task)))
        print(f"{task}: {len(table.points(task))} configurations, each {spacing:.3f} from the nearest (median)")
    print(f"{'configuration':<16}{'task':<22}{'trials':>8}{'repeated a cell':>17}{'distance to earlier':>21}")
    for name in arguments.only:
        _, sampler, pruner, _ = settings(CONFIGURATIONS[name], "finetune")
        for task in table.tasks:
            trials = repeats = 0
            gaps: list[float] = []
            for seed in range(arguments.seeds):
                study = new_study(task, seed, sampler, instantiate(pruner) if pruner else None)
                run_trials(study, Ledger(table, task, space, multiples=(arguments.budget,)), space.distributions)
                points = np.array([table.unit_point(trial.params) for trial in study.trials])
                cells = [table.nearest(task, trial.params) for trial in study.trials]
                trials += len(cells)
                repeats += sum(cell in cells[:index] for index, cell in enumerate(cells))
                gaps += [float(np.linalg.norm(points[:i] - points[i], axis=1).min()) for i in range(1, len(points))]
            share = f"{repeats / trials:.0%}"
            print(f"{name:<16}{task:<22}{trials:>8}{share:>17}{statistics.median(gaps):>21.3f}")


def _nearest_distances(points: np.ndarray) -> list[float]:
    """Each point's distance to its nearest other point."""
    distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=2)
    np.fill_diagonal(distances, np.inf)
    return distances.min(axis=1).tolist()


if __name__ == "__main__":
    main()
