"""Replaying recorded fine-tuning curves (benchmarks/curve_table.py) as search_quality.py scores searches on them."""

from __future__ import annotations

import csv
import math
import sys

import optuna
import pytest
from omegaconf import OmegaConf

from hps.search.space import parse_search_space
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmark scripts import each other as top-level modules

from curve_table import CurveTable
from finetune_curves import CURVE_COLUMNS, record, sobol_configurations, write_table
from finetune_curves import SPACE as DEFAULT_SPACE
from search_quality import Ledger, Run, new_study, run_trials, summarise_paired

SPACE = {
    "learning_rate": {"key": "training.learning_rate", "type": "float", "low": 1e-5, "high": 1e-3, "log": True},
    "batch_size": {"key": "training.batch_size", "type": "categorical", "choices": [8, 16, 32]},
}
# config -> (learning rate, batch size, curve of 4 evaluations)
RECORDED = {
    0: (1e-5, 8, [0.2, 0.3, 0.4, 0.5]),
    1: (1e-4, 16, [0.5, 0.6, 0.7, 0.9]),
    2: (1e-3, 32, [0.6, 0.5, 0.4, 0.1]),
}


@pytest.fixture
def table(tmp_path) -> CurveTable:
    path = tmp_path / "curves.csv"
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, ["data", "config", *SPACE, *CURVE_COLUMNS, "wall_seconds"])
        writer.writeheader()
        for data in ("a", "b"):
            for config, (rate, batch, curve) in RECORDED.items():
                for step, metric in enumerate(curve, start=1):
                    row = {"data": data, "config": config, "learning_rate": rate, "batch_size": batch, "step": step}
                    writer.writerow(row | {"metric": metric, "epoch": step / 2, "train_loss": 1.0, "train_seconds": 1})
    return CurveTable(path, parse_search_space(SPACE))


def test_a_configuration_gets_the_curve_of_the_nearest_recorded_one_in_the_samplers_scale(table):
    assert table.tasks == ["a", "b"] and table.epochs == 4
    # 3e-5 is nearer 1e-5 than 1e-4 on a log scale, though not on a linear one
    assert list(table.curve("a", {"learning_rate": 3e-5, "batch_size": 8})["metric"]) == [0.2, 0.3, 0.4, 0.5]
    assert list(table.curve("a", {"learning_rate": 4e-5, "batch_size": 16}, 2)["metric"]) == [0.5, 0.6]
    assert list(table.curve("b", {"learning_rate": 1e-3, "batch_size": 32})["metric"]) == [0.6, 0.5, 0.4, 0.1]


def test_regret_is_the_gap_to_the_best_final_value_over_the_range_of_final_values(table):
    assert table.normalised_regret("a", 0.9) == 0
    assert table.normalised_regret("a", 0.1) == 1
    assert table.normalised_regret("a", 0.5) == pytest.approx(0.5)


def test_a_replayed_search_spends_its_budget_and_only_a_full_training_becomes_the_incumbent(table):
    space = parse_search_space(SPACE)
    ledger = Ledger(table, "a", space, multiples=(2, 5))
    pruner = optuna.pruners.ThresholdPruner(lower=0.3)  # stops config 0 after its first evaluation, no other
    study = new_study("a", 0, {"_target_": "optuna.samplers.RandomSampler"}, pruner)
    study.enqueue_trial({"learning_rate": 2e-5, "batch_size": 8})  # config 0's cell
    run_trials(study, ledger, space.distributions)
    trials = study.trials
    assert ledger.spent == sum(len(t.intermediate_values) for t in trials) >= 5 * table.epochs
    assert ledger.spent - len(trials[-1].intermediate_values) < 5 * table.epochs  # the last trial spent it
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert ledger.best_value == max(t.value for t in complete)
    assert ledger.regrets[5] == table.normalised_regret("a", ledger.best_value)
    assert math.isnan(ledger.best_test)  # the table has no test metric
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(list(t.intermediate_values.values()) == [0.2] for t in pruned)  # charged 1 step each
    assert len(complete) + len(pruned) == len(trials)


def test_the_recorded_configurations_are_a_fixed_sobol_sample_within_the_space():
    distributions = parse_search_space(SPACE).distributions
    first = sobol_configurations(distributions, 8, seed=0)
    assert first == sobol_configurations(distributions, 8, seed=0)  # the same table on every dataset and rerun
    assert first[:4] == sobol_configurations(distributions, 4, seed=0)  # a larger table extends a smaller one
    assert all(1e-5 <= c["learning_rate"] <= 1e-3 and c["batch_size"] in (8, 16, 32) for c in first)
    assert {c["batch_size"] for c in first} == {8, 16, 32}
    rates = sorted(math.log10(c["learning_rate"]) for c in first)
    assert rates[0] < -4.5 and rates[-1] > -3.5  # spread over the log range, not bunched at one end


def test_workers_train_every_queued_configuration_once_to_its_end(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the shipped data
    monkeypatch.setenv("HPS_STUDIES_DIR", str(tmp_path))  # inherited by the spawned workers
    distributions = parse_search_space(OmegaConf.to_container(OmegaConf.load(DEFAULT_SPACE))).distributions
    configurations = sobol_configurations(distributions, 6, seed=0)
    storage = f"sqlite:///{tmp_path}/curves.db"
    tiny = ["model=tiny_bert", "model.config_overrides.num_hidden_layers=6", "data.max_train_examples=48"]
    tiny += ["training.num_epochs=1", "training.evals_per_epoch=2"]  # 6 layers: freeze_layers goes to 6
    record(["tweet_eval_emotion"], configurations[:3], storage, [*tiny, "training.threads=1"], workers=1)
    record(["tweet_eval_emotion"], configurations, storage, [*tiny, "training.threads=1"], workers=2)  # grows it

    study = optuna.load_study(study_name="curves-tweet_eval_emotion", storage=storage)
    trials = study.get_trials()
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}  # nothing pruned, failed or sampled anew
    assert sorted(t.user_attrs["config"] for t in trials) == list(range(6))
    for trial in trials:
        assert trial.params == pytest.approx(configurations[trial.user_attrs["config"]])
    assert write_table({"tweet_eval_emotion": study}, list(distributions), tmp_path / "table.csv") == 6

    # A table grown on another machine (--start) merges: rows of configurations these studies lack are kept.
    table = tmp_path / "table.csv"
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    grown = [row | {"config": "100"} for row in rows if row["config"] == "0"]
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(grown + rows)
    assert write_table({"tweet_eval_emotion": study}, list(distributions), table) == 7
    with table.open(newline="") as handle:
        merged = list(csv.DictReader(handle))
    assert len(merged) == len(rows) + len(grown)
    assert [row["config"] for row in merged][-len(grown) :] == ["100"] * len(grown)  # sorted by configuration


def test_paired_differences_take_each_task_and_seed_against_itself(capsys):
    def run(name: str, task: str, seed: int, regret: float) -> Run:
        return Run(name, "settings", task, seed, regret, regret, regret, math.nan, 10, 0, 1.0)

    # the tasks differ by 0.4, far more than the configurations; paired, the reference is 0.1 lower on both
    runs = [
        run("new", "easy", 0, 0.1),
        run("new", "hard", 0, 0.5),
        run("old", "hard", 0, 0.6),
        run("old", "easy", 0, 0.2),
    ]
    summarise_paired(runs, "new")
    line = capsys.readouterr().out.splitlines()[-1].split()
    assert line[0] == "old" and line[1:5] == ["-0.1000", "±0.0000", "2/0", "-0.1000"]
