"""End to end: the real command line, a tiny random-weight model, and the study database checked after.

Each test runs ``hps-finetune -m experiment=smoke ...`` in a subprocess, as a user would,
and reads what it stored with Optuna.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import optuna_dashboard
import pytest
import yaml
from optuna.trial import TrialState

from hps.objectives.finetune import main as finetune_main
from hps.search.study import FAIL_REASON, INTERRUPTED, RETRY_OF
from hps.search.sweeper import StopSignals
from hps.search.trial import record
from tests.conftest import REPO, SHIPPED_DATA, run_cli, write_csv

SMOKE = ["-m", "experiment=smoke"]


def load(studies: Path, name: str = "smoke") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{studies}/hps.db")


def dashboard_view(database: Path) -> dict:
    """The study as optuna-dashboard's API serves it, read through its WSGI app."""
    app = optuna_dashboard.wsgi(f"sqlite:///{database}")
    environ: dict = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = "/api/studies/1"
    statuses: list[str] = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    assert statuses == ["200 OK"]
    return json.loads(body)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def test_sweep_prunes_and_stores_each_trial_with_its_curve(studies):
    result = run_cli(*SMOKE, studies=studies)
    assert_ok(result)
    study = load(studies)
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert len(trials) == 8
    assert "trial 0 · evaluation 1/4 · epoch 1/1 · loss " in result.stderr  # a redirected sweep says what it does
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    assert study.metric_names == ["macro_f1"]
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE

    for trial in trials:
        curve = record(trial, "curve")
        assert [point["step"] for point in curve] == sorted(trial.intermediate_values)
        assert [point["metric"] for point in curve] == [
            trial.intermediate_values[s] for s in sorted(trial.intermediate_values)
        ]
        assert trial.value == curve[-1]["metric"]
        assert trial.user_attrs["seed"] == 0
        assert set(record(trial, "versions")) >= {"torch", "transformers", "optuna"}
        assert trial.user_attrs["wall_time_s"] > 0 and trial.user_attrs["train_examples_per_s"] > 0
        config = record(trial, "config")
        assert config["training"]["learning_rate"] == trial.params["learning_rate"]
        assert config["training"]["freeze_layers"] == trial.params["freeze_layers"]
        assert "experiment=smoke" in record(trial, "overrides")
        assert f"training.learning_rate={trial.params['learning_rate']!r}" in record(trial, "overrides")
        assert not any("trial=" in override for override in record(trial, "overrides"))
        job_config = yaml.safe_load(
            (studies / "smoke" / f"trial_{trial.number}" / ".hydra" / "config.yaml").read_text()
        )
        assert job_config["training"]["batch_size"] == trial.params["batch_size"]
        assert job_config["trial"] == {"study": "smoke", "number": trial.number}

    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    full_length = max(len(t.intermediate_values) for t in trials if t.state == TrialState.COMPLETE)
    assert all(len(t.intermediate_values) < full_length for t in pruned)  # stopped early, curve kept
    dashboard = dashboard_view(studies / "hps.db")  # what optuna-dashboard shows of the same file
    assert [t["state"] for t in dashboard["trials"]] == [t.state.name.capitalize() for t in trials]
    assert dashboard["has_intermediate_values"]

    complete = states.count(TrialState.COMPLETE)
    title = f"top {complete} of {complete} complete trials ({states.count(TrialState.PRUNED)} pruned, 0 failed)"
    assert title in result.stderr


def test_same_command_resumes_and_n_trials_is_the_total_and_trial_folders_are_never_overwritten(studies):
    assert_ok(run_cli(*SMOKE, "hydra.sweeper.n_trials=3", studies=studies))
    assert len(load(studies).trials) == 3
    resumed = run_cli(*SMOKE, "hydra.sweeper.n_trials=5", studies=studies)
    assert_ok(resumed)
    assert "3 of 5 trials done" in resumed.stderr
    assert [t.number for t in load(studies).trials] == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in (studies / "smoke").iterdir()) == [f"trial_{n}" for n in range(5)]

    again = run_cli(*SMOKE, "hydra.sweeper.n_trials=5", studies=studies)
    assert_ok(again)
    assert "5 of 5 trials done" in again.stderr
    assert len(load(studies).trials) == 5

    # A new database, whose trial 0 must not overwrite trial_0/. Its -wal and -shm files go too: this process's
    # connections still hold them, and SQLite would read the new file with the old log.
    for database_file in studies.glob("hps.db*"):
        database_file.unlink()
    assert_ok(run_cli(*SMOKE, "hydra.sweeper.n_trials=1", studies=studies))
    assert sorted(p.name for p in (studies / "smoke").iterdir()) == sorted(
        [*(f"trial_{n}" for n in range(5)), "trial_0.2"]
    )
    assert load(studies).trials[0].user_attrs["output_dir"].endswith("trial_0.2")


def test_experiment_sweep_gives_one_study_per_combination(studies, tmp_path):
    data_root = tmp_path / "data"
    shutil.copytree(SHIPPED_DATA / "tweet_eval_emotion", data_root / "tweet_eval_emotion")
    questions = [[f"what is question {i} about {'thing ' * (i % 4)}?", i % 6] for i in range(120)]
    write_csv(data_root / "trec" / "train.csv", ["text", "label"], questions)  # no validation file: held out
    result = run_cli(
        *SMOKE,
        "data=tweet_eval_emotion,trec",
        "hydra.sweeper.n_trials=2",
        studies=studies,
        data_root=data_root,
    )
    assert_ok(result)
    names = sorted(optuna.get_all_study_names(f"sqlite:///{studies}/hps.db"))
    assert names == ["smoke-data=trec", "smoke-data=tweet_eval_emotion"]
    trec = load(studies, "smoke-data=trec")
    assert trec.metric_names == ["accuracy"]
    assert trec.user_attrs["objective_identity"]["data"] == "trec"
    assert len(trec.trials) == 2
    assert record(trec.trials[0], "config")["data"]["name"] == "trec"


def test_failed_trials_are_stored_with_their_reason_and_the_study_goes_on(studies):
    # Two ways to fail that no preflight can see: a loss that diverges, a model whose heads do not divide it.
    result = run_cli(
        *SMOKE,
        "~search_space.learning_rate",
        "+search_space.lr={key:training.learning_rate,type:categorical,choices:[0.001,1.0e30]}",
        "+search_space.hidden={key:model.config_overrides.hidden_size,type:categorical,choices:[32,33]}",
        studies=studies,
    )
    assert_ok(result)
    trials = load(studies).trials
    assert len(trials) == 8
    failed = {t.number: t.user_attrs[FAIL_REASON] for t in trials if t.state == TrialState.FAIL}
    odd_model = [t.number for t in trials if t.params["hidden"] == 33]
    diverging = [t.number for t in trials if t.params["lr"] == 1e30 and t.params["hidden"] == 32]
    assert odd_model and diverging
    assert set(failed) == set(odd_model) | set(diverging)
    assert all("hidden size (33) is not a multiple of the number of attention heads" in failed[n] for n in odd_model)
    assert all(failed[n].startswith("FloatingPointError: training loss became") for n in diverging)
    assert "Traceback" not in result.stderr


def test_a_sweep_whose_first_trials_all_fail_alike_stops_with_the_reason(studies):
    result = run_cli(
        *SMOKE, "search_space.learning_rate.low=1e30", "search_space.learning_rate.high=1e31", studies=studies
    )
    assert result.returncode == 2
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "the first 3 trials of study 'smoke' all failed alike (FloatingPointError: training loss became" in error
    assert [t.state for t in load(studies).trials] == [TrialState.FAIL] * 3  # not the whole budget of 8
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.dir=/nonexistent"], "train split: file '/nonexistent/train.csv' not found"),
        (["data.label_column=gold"], "column 'gold' not in"),
        (["data.num_labels=2", "data.label_names=null"], "labels must be integers 0..1"),
        (["model.path=/nonexistent"], "path '/nonexistent' is not a Hugging Face model folder"),
        (["hydra.sweeper.storage=not-a-url"], "storage 'not-a-url' is not a database URL"),
        (["data.metric=bleu"], "data.metric is 'bleu'; allowed: accuracy, macro_f1, mcc"),
        (["search_space.learning_rate.low=1.0"], "low (1.0) is greater than high (0.03)"),
        (["search_space.learning_rate.low=0"], "a log scale needs low > 0"),
        (["search_space.batch_size.choices=[]"], "'choices' is empty"),
        (["search_space.dropout.type=uniform"], "unknown type 'uniform'"),
        (
            ["+search_space.x={key:training.nope,type:float,low:0,high:1}"],
            "key 'training.nope' does not exist",
        ),
        (
            ["search_space.freeze_layers.high=5"],
            "'freeze_layers' = 5: training.freeze_layers is 5; allowed: integers 0..2 (model 'tiny-bert-random' has 2",
        ),
        (["hydra.sweeper.n_trials=0"], "n_trials is 0; it must be a positive integer"),
        (["hydra.sweeper.warm_start={study:nope}"], "hydra.sweeper.warm_start.study: no study 'nope' in sqlite:///"),
        (["training.num_epochs=0"], "training.num_epochs is 0; it must be an integer >= 1"),
        (["model.path=${model_package_path:no_such_package}"], "model package 'no_such_package' is not installed"),
        (["training.max_length=interval(16, 64)"], "key 'training.max_length' holds an integer (128)"),
        (
            ["hydra.sweeper.sampler._target_=optuna.samplers.NoSuch"],
            "cannot build the sampler 'optuna.samplers.NoSuch'",
        ),
        (
            ["hydra.sweeper.sampler.seed=1.5"],
            "hydra.sweeper.sampler.seed is 1.5; allowed: a whole number >= 0, or null",
        ),
        (["hydra.sweeper.fail_fast=0"], "hydra.sweeper.fail_fast is 0; allowed: a whole number >= 1, or null"),
        (
            ["hydra.sweeper.direction=[maximize,minimize]"],
            "hydra.sweeper.direction is ['maximize', 'minimize']; allowed: maximize, minimize (one objective",
        ),
        (["training.lr_schedule=cosinus"], "training.lr_schedule is 'cosinus'; allowed: linear, cosine,"),
        (["training.precision=fp16"], "training.precision is 'fp16', which needs a GPU; on the CPU: fp32 or bf16"),
        (
            ["+search_space.schedule={key:training.lr_schedule,type:categorical,choices:[linear,cosinus]}"],
            "search space parameter 'schedule' = 'cosinus': training.lr_schedule is 'cosinus'; allowed: linear",
        ),
        (
            ['search_space.batch_size.choices=[8,"16",null,32.5]'],
            "parameter 'batch_size': choice '16' is a string, but key 'training.batch_size' holds an integer (16)",
        ),
        (
            ["search_space.batch_size.choices=[8,null]"],
            "parameter 'batch_size' = None: training.batch_size is None; it must be an integer >= 1",
        ),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(studies, overrides, message, monkeypatch, capfd):
    # In this process (the same entry point as the console script, without 6 s of imports per case); any
    # traceback would fail the test as an exception. test_empty_split_is_refused checks a real subprocess.
    monkeypatch.setenv("HPS_STUDIES_DIR", str(studies))
    monkeypatch.setattr(sys, "argv", ["hps-finetune", *SMOKE, *overrides])
    with pytest.raises(SystemExit) as stopped:
        finetune_main()
    assert stopped.value.code == 2
    stderr = capfd.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], stderr


def test_unknown_config_option_is_hydras_message_without_a_traceback(studies):
    result = run_cli(*SMOKE, "data=nope", studies=studies)
    assert result.returncode == 1
    assert "Could not find 'data/nope'" in result.stderr
    assert "Available options in 'data':" in result.stderr and "sst2" in result.stderr
    assert "Traceback" not in result.stderr


def test_empty_split_is_refused(studies, tmp_path):
    data_root = tmp_path / "data"
    shutil.copytree(SHIPPED_DATA / "tweet_eval_emotion", data_root / "tweet_eval_emotion")
    write_csv(data_root / "tweet_eval_emotion" / "validation.csv", ["text", "label"], [])
    result = run_cli(*SMOKE, studies=studies, data_root=data_root)
    assert result.returncode == 2
    assert "validation split:" in result.stderr and "has no rows" in result.stderr
    assert "Traceback" not in result.stderr


def test_one_training_run_without_a_study(studies):
    result = run_cli("experiment=smoke", studies=studies)
    assert_ok(result)
    assert "macro_f1 on validation:" in result.stderr
    # the output is not a terminal: each evaluation prints a line instead of redrawing a progress row
    evaluations = [line for line in result.stderr.splitlines() if line.startswith("training · evaluation ")]
    assert [line.split(" · ")[1] for line in evaluations] == [f"evaluation {k}/4" for k in range(1, 5)]
    assert all("macro_f1 0." in line and "loss " in line for line in evaluations)
    assert not (studies / "hps.db").exists()
    bad = run_cli("experiment=smoke", "data.dir=/nonexistent", studies=studies)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: data 'tweet_eval_emotion'")


def test_hydra_optuna_sweeper_syntax_and_command_line_intervals(studies):
    params = (
        "hydra.sweeper.params={training.learning_rate:'tag(log, interval(1e-4, 1e-2))',"
        "training.batch_size:'choice(8, 16)'}"
    )
    result = run_cli(
        *SMOKE,
        "search_space=none",
        params,
        "training.dropout=interval(0.0, 0.2)",
        "hydra.sweeper.n_trials=2",
        studies=studies,
    )
    assert_ok(result)
    trial = load(studies).trials[0]
    assert trial.distributions == {  # the smoke experiment's freeze_layers, its learning rate replaced
        "freeze_layers": optuna.distributions.IntDistribution(0, 2),
        "training.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "training.batch_size": optuna.distributions.CategoricalDistribution([8, 16]),
        "training.dropout": optuna.distributions.FloatDistribution(0.0, 0.2),
    }
    assert record(trial, "config")["training"]["dropout"] == trial.params["training.dropout"]


def test_a_fixed_or_swept_value_on_the_command_line_takes_the_key_out_of_the_space(studies):
    fixed, swept = "training.freeze_layers=1", "training.batch_size=8,16"  # swept: one study per value
    assert_ok(run_cli(*SMOKE, fixed, swept, "hydra.sweeper.n_trials=1", studies=studies))
    for size in (8, 16):
        (trial,) = load(studies, f"smoke-training.batch_size={size}").trials
        assert "batch_size" not in trial.params and "freeze_layers" not in trial.params
        assert "learning_rate" in trial.params
        config = record(trial, "config")["training"]
        assert config["batch_size"] == size and config["freeze_layers"] == 1


def test_resuming_with_another_direction_is_refused_before_any_study_runs_a_trial(studies):
    assert_ok(run_cli(*SMOKE, "training.num_epochs=1,2", "hydra.sweeper.n_trials=1", studies=studies))
    result = run_cli(*SMOKE, "training.num_epochs=3,2", "objective.direction=minimize", studies=studies)
    assert result.returncode == 2
    assert "error: study 'smoke-training.num_epochs=2' in sqlite:///" in result.stderr
    assert "has direction maximize, not minimize" in result.stderr and "Traceback" not in result.stderr
    assert len(load(studies, "smoke-training.num_epochs=2").trials) == 1
    assert load(studies, "smoke-training.num_epochs=3").trials == []  # nothing ran before the refusal


def stop_after_first_evaluation(module: str, *args: str, studies: Path, stop: int, study: str) -> tuple[int, str]:
    """Run ``python -m MODULE ARGS`` as from a terminal and send ``stop`` once trial 0 has reported."""
    env = os.environ | {"HPS_STUDIES_DIR": str(studies)}
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Started as `pytest &` from a script, pytest ignores SIGINT and its children would too: the command's own
        # Ctrl-C handling is what is tested, so the child starts with SIGINT's default, as from a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:  # until the first trial has reported
        time.sleep(0.5)
        if not (studies / study / "trial_0").exists():  # the job starts after the study's tables exist
            continue
        if load(studies, study).trials[0].intermediate_values:
            break
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_leaves_the_study_consistent_and_resumable(studies, stop):
    args = (*SMOKE, "hydra.sweeper.n_trials=2", "training.num_epochs=200")
    returncode, stderr = stop_after_first_evaluation(
        "hps.objectives.finetune", *args, studies=studies, stop=stop, study="smoke"
    )
    assert returncode == 130, stderr
    assert "run the same command again to resume" in stderr and "Traceback" not in stderr
    (interrupted,) = load(studies).trials
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs[INTERRUPTED] is True
    if stop == signal.SIGTERM:  # resuming is the same after either signal: checked once, after Ctrl-C
        return

    assert_ok(run_cli(*SMOKE, "hydra.sweeper.n_trials=2", studies=studies))
    trials = load(studies).trials
    assert len(trials) == 3  # the interrupted one does not count against the budget
    assert trials[1].user_attrs[RETRY_OF] == 0 and trials[1].params == interrupted.params
    assert trials[1].state in (TrialState.COMPLETE, TrialState.PRUNED)


def test_stop_signals_are_remembered_and_leave_an_ignored_ctrl_c_ignored():
    before = signal.getsignal(signal.SIGTERM)
    ctrl_c = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as for a command started in the background
    try:
        with StopSignals() as stops:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            stops.raise_if_received()  # nothing received yet
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            with pytest.raises(KeyboardInterrupt):  # also after the code it interrupted swallowed it
                stops.raise_if_received()
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        signal.signal(signal.SIGINT, ctrl_c)


def test_ctrl_c_stops_the_sweep_even_when_the_trial_catches_it(studies):
    args = ("-m", "hydra.sweeper.n_trials=2", "steps=400", "step_seconds=0.05")
    returncode, stderr = stop_after_first_evaluation(
        "tests.catching_task", *args, studies=studies, stop=signal.SIGINT, study="synthetic"
    )
    assert returncode == 130, stderr
    assert "run the same command again to resume" in stderr and "Traceback" not in stderr
    (interrupted,) = load(studies, "synthetic").trials  # the trial that returned after Ctrl-C: no second one
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs[INTERRUPTED] is True
