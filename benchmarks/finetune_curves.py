"""Real fine-tuning curves: a table of MiniLM learning curves over the default search space, for replaying searches.

Trains a fixed, seeded Sobol sample of configurations of ``conf/search_space/default.yaml`` (the same
configurations on every dataset) with the shipped task settings (``--overrides`` changes them: 600 training
examples, 2 epochs, 4 evaluations per epoch, the whole validation split), every one to its end: no pruning. Each
trial runs through ``hps.objective`` as a user's own study would, in one Optuna study per dataset, stored in
SQLite (so that a stopped recording resumes, and ``--configs`` can grow the table later: Sobol points are taken in
order). It then writes every evaluation of every complete trial to a CSV, the table that
``benchmarks/search_quality.py --table`` replays::

    python benchmarks/finetune_curves.py --data-root ../shared/data                  # 128 x 2 datasets, ~1 hour
    python benchmarks/finetune_curves.py --data-root ../shared/data --configs 512    # grows the same table
    python benchmarks/finetune_curves.py --data-root ../shared/data --csv-only       # rewrites the CSV only
    python benchmarks/finetune_curves.py --data-root DIR --workers 12   # a GPU: 12 trainings share it, 12x the CPU's
    python benchmarks/finetune_curves.py --data-root DIR --configs 1024 --start 128  # points 128.. only, elsewhere

Writing the CSV keeps the rows it holds of configurations the studies here lack, so a table grown on another
machine (``--start``: its own studies hold only the new points) merges into the one in the repo.

Columns: ``data``, ``config`` (the index of the Sobol point, the same on every dataset), the search space's
parameters, then per evaluation ``step``, ``epoch``, ``train_loss``, ``metric`` (the dataset's metric) and
``train_seconds`` (optimisation time so far), and the trial's ``wall_seconds`` (everything, the frozen-feature
cache included). Cost on 2 cores: benchmarks/RESULTS.md, "Real fine-tuning curves".
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import TrialState
from scipy.stats import qmc

from hps.search.storage import open_storage

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "conf" / "search_space" / "default.yaml"
CURVE_COLUMNS = ["step", "epoch", "train_loss", "metric", "train_seconds"]
CHUNK = 8  # configurations a worker takes at a time


def sobol_configurations(distributions: dict[str, BaseDistribution], count: int, seed: int) -> list[dict[str, Any]]:
    """The first ``count`` points of a scrambled Sobol sequence, each mapped onto ``distributions`` (log ranges in
    log space, integers and choices in equal cells of the unit interval)."""
    points = qmc.Sobol(d=len(distributions), scramble=True, seed=seed).random(count)
    items = list(distributions.items())
    return [{name: _from_unit(d, float(u)) for (name, d), u in zip(items, point, strict=True)} for point in points]


def _from_unit(distribution: BaseDistribution, u: float) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[min(int(u * len(distribution.choices)), len(distribution.choices) - 1)]
    low, high = distribution.low, distribution.high
    if isinstance(distribution, IntDistribution):
        return min(low + int(u * (high - low + 1)), high)
    if distribution.log:
        return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    return low + u * (high - low)


def queue(data: str, configurations: list[dict[str, Any]], storage: str, start: int = 0) -> int:
    """Enqueue in the study of ``data`` each configuration from index ``start`` not yet complete or queued; how many
    wait to be trained."""
    study = optuna.create_study(
        study_name=f"curves-{data}",
        storage=open_storage(storage),  # WAL and a busy timeout: workers share the file
        direction="maximize",
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    # complete, or queued by a recording that stopped before it ran them (a trial left RUNNING by a killed
    # recording is not in the table and is trained again)
    states = (TrialState.COMPLETE, TrialState.WAITING)
    taken = {t.user_attrs["config"] for t in study.get_trials(states=states)}
    for index, params in enumerate(configurations):
        if index >= start and index not in taken:
            study.enqueue_trial(params, user_attrs={"config": index})
    return len(study.get_trials(states=(TrialState.WAITING,)))


def train_queued(data: str, count: int, storage: str, overrides: list[str]) -> None:
    """Train ``count`` queued configurations of ``data``'s study, oldest queued first (Optuna pops the oldest
    waiting trial): the Sobol order, so that a recording cut short leaves a prefix of the sequence, less the
    trainings the cut killed, which the next recording queues again behind those still waiting."""
    import hps

    study = optuna.load_study(  # the pruner is not stored with a study: without NopPruner, Optuna's median prunes
        study_name=f"curves-{data}", storage=open_storage(storage), pruner=optuna.pruners.NopPruner()
    )
    objective = hps.objective([f"data={data}", *overrides], search_space=SPACE.stem)
    study.optimize(objective, n_trials=count, catch=(Exception,))


def record(
    datasets: list[str],
    configurations: list[dict[str, Any]],
    storage: str,
    overrides: list[str],
    workers: int,
    start: int = 0,
) -> None:
    """Train every configuration from index ``start`` not yet complete on every dataset, in ``workers`` processes.

    Workers take chunks of each dataset's queue in turn, so every dataset grows at the same pace; each worker pops
    its own trials from the shared study, and the chunks add up to the queue, so none samples a new configuration.
    """
    chunks = []
    for data in datasets:
        queued = queue(data, configurations, storage, start)
        chunks.append([(data, min(CHUNK, queued - start), storage, overrides) for start in range(0, queued, CHUNK)])
    jobs = [job for round_ in itertools.zip_longest(*chunks) for job in round_ if job is not None]
    if workers == 1:
        for job in jobs:
            train_queued(*job)
        return
    # spawned, not forked: each worker initialises its own CUDA context
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for done in as_completed([pool.submit(train_queued, *job) for job in jobs]):
            done.result()


def write_table(studies: dict[str, optuna.Study], names: list[str], path: Path) -> int:
    """Every evaluation of every complete trial, by dataset and configuration, and the rows ``path`` holds of
    configurations the studies lack; the number of configurations in the table."""
    from hps.search.trial import record as stored

    rows, configurations, recorded = [], 0, set()
    for data, study in studies.items():
        trials = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.user_attrs["config"])
        configurations += len(trials)
        recorded |= {(data, trial.user_attrs["config"]) for trial in trials}
        for trial in trials:
            head = {"data": data, "config": trial.user_attrs["config"], **{n: trial.params[n] for n in names}}
            for evaluation in stored(trial, "curve"):
                curve = {key: evaluation[key] for key in CURVE_COLUMNS}
                rows.append(head | curve | {"wall_seconds": trial.user_attrs["wall_time_s"]})
    kept = [row for row in _read_rows(path) if (row["data"], int(row["config"])) not in recorded]
    configurations += len({(row["data"], row["config"]) for row in kept})
    order = {data: place for place, data in enumerate(dict.fromkeys([row["data"] for row in kept] + list(studies)))}
    rows = sorted(kept + rows, key=lambda row: (order[row["data"]], int(row["config"]), int(row["step"])))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["data", "config", *names, *CURVE_COLUMNS, "wall_seconds"])
        writer.writeheader()
        writer.writerows(rows)
    return configurations


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as table:
        return list(csv.DictReader(table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True, help="folder of the datasets (HPS_DATA_ROOT)")
    parser.add_argument("--data", nargs="+", default=["tweet_eval_emotion", "sst2"], help="data configs")
    parser.add_argument("--configs", type=int, default=128, help="Sobol points per dataset (a power of 2 is best)")
    parser.add_argument("--start", type=int, default=0, help="train Sobol points from this index on only")
    parser.add_argument("--seed", type=int, default=0, help="the Sobol sequence's scrambling seed")
    parser.add_argument("--overrides", nargs="*", default=[], help="task overrides, e.g. training.num_epochs=3")
    parser.add_argument("--folder", type=Path, default=REPO / "studies" / "benchmarks" / "finetune_curves")
    parser.add_argument("--csv", type=Path, default=REPO / "benchmarks" / "finetune_curves.csv")
    parser.add_argument("--workers", type=int, default=1, help="trainings at a time (several share a GPU well)")
    parser.add_argument("--csv-only", action="store_true", help="write the CSV from the stored studies; train none")
    arguments = parser.parse_args()
    if not 0 <= arguments.start < arguments.configs:
        parser.error(f"--start {arguments.start}; allowed: a whole number from 0 to --configs - 1")
    if arguments.workers < 1:
        parser.error(f"--workers {arguments.workers}; allowed: a whole number >= 1")
    if not arguments.data_root.is_dir():
        parser.error(f"--data-root {arguments.data_root} is not a folder; allowed: the folder holding the datasets")
    os.environ["HPS_DATA_ROOT"] = str(arguments.data_root.resolve())
    os.environ["HPS_STUDIES_DIR"] = str(arguments.folder.resolve())  # trial folders and artifacts go there
    arguments.folder.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{arguments.folder.resolve()}/curves.db"

    from hps.objectives import setup
    from hps.search.space import parse_search_space

    setup()
    distributions = parse_search_space(OmegaConf.to_container(OmegaConf.load(SPACE))).distributions
    configurations = sobol_configurations(distributions, arguments.configs, arguments.seed)
    if not arguments.csv_only:
        record(arguments.data, configurations, storage, arguments.overrides, arguments.workers, arguments.start)
    studies = {
        name: optuna.load_study(study_name=f"curves-{name}", storage=open_storage(storage)) for name in arguments.data
    }
    count = write_table(studies, list(distributions), arguments.csv)
    print(f"{count} complete curves of {len(arguments.data)} datasets in {arguments.csv}; the studies in {storage}")


if __name__ == "__main__":
    main()
