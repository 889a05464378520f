"""A config written for the Hydra Optuna sweeper runs with only its sweeper line changed.

The file below is lightning-hydra-template's ``configs/hparams_search/mnist_optuna.yaml``, verbatim; a user moving
to this sweeper changes its ``override /hydra/sweeper`` line, its ``_target_`` (ours, or left out) and, since this
task is not MNIST, the keys its parameters point at.
"""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hps.objectives.finetune import main as finetune_main
from hps.search.components import build_sampler
from hps.search.errors import ConfigError
from hps.search.hydra_optuna_syntax import parse_optuna_search_space, parse_sweeper_params
from hps.search.planning import plan_sweep
from hps.search.settings import sweeper_settings
from hps.search.storage import STORAGE_ENV, default_storage
from hps.search.sweeper import PruningSweeper
from tests.conftest import composed, run_cli

LIGHTNING_MNIST_OPTUNA = """\
# @package _global_

# example hyperparameter optimization of some experiment with Optuna:
# python train.py -m hparams_search=mnist_optuna experiment=example

defaults:
  - override /hydra/sweeper: optuna

# choose metric which will be optimized by Optuna
# make sure this is the correct name of some metric logged in lightning module!
optimized_metric: "val/acc_best"

# here we define Optuna hyperparameter search
# it optimizes for value returned from function with @hydra.main decorator
# docs: https://hydra.cc/docs/next/plugins/optuna_sweeper
hydra:
  mode: "MULTIRUN" # set hydra to multirun by default if this config is attached

  sweeper:
    _target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper

    # storage URL to persist optimization results
    # for example, you can use SQLite if you set 'sqlite:///example.db'
    storage: null

    # name of the study to persist optimization results
    study_name: null

    # number of parallel workers
    n_jobs: 1

    # 'minimize' or 'maximize' the objective
    direction: maximize

    # total number of runs that will be executed
    n_trials: 20

    # choose Optuna hyperparameter sampler
    # you can choose bayesian sampler (tpe), random search (without optimization), grid sampler, and others
    # docs: https://optuna.readthedocs.io/en/stable/reference/samplers.html
    sampler:
      _target_: optuna.samplers.TPESampler
      seed: 1234
      n_startup_trials: 10 # number of random sampling runs before optimization starts

    # define hyperparameter search space
    params:
      model.optimizer.lr: interval(0.0001, 0.1)
      data.batch_size: choice(32, 64, 128, 256)
      model.net.lin1_size: choice(64, 128, 256)
      model.net.lin2_size: choice(64, 128, 256)
      model.net.lin3_size: choice(32, 64, 128, 256)
"""

# Each MNIST model's key, and the key of this task's config it becomes (the values are the file's own, but for
# the 2 layers tiny_bert has to freeze and the learning-rate schedules this task knows).
KEYS = {
    "model.optimizer.lr": "training.learning_rate",
    "data.batch_size": "training.batch_size",
    "model.net.lin1_size": "training.max_length",
    "model.net.lin2_size: choice(64, 128, 256)": "training.freeze_layers: choice(0, 1, 2)",
    "model.net.lin3_size: choice(32, 64, 128, 256)": "training.lr_schedule: choice(linear, cosine, constant)",
}
EXPECTED = {
    "training.learning_rate": FloatDistribution(0.0001, 0.1),
    "training.batch_size": CategoricalDistribution([32, 64, 128, 256]),
    "training.max_length": CategoricalDistribution([64, 128, 256]),
    "training.freeze_layers": CategoricalDistribution([0, 1, 2]),
    "training.lr_schedule": CategoricalDistribution(["linear", "cosine", "constant"]),
}
OUR_TARGET = "hydra_plugins.hps_sweeper.pruning_sweeper.PruningSweeper"


def moved(text: str = LIGHTNING_MNIST_OPTUNA, target: str | None = OUR_TARGET) -> str:
    """The file as a user moving to this sweeper writes it: the sweeper line, the ``_target_``, the keys."""
    text = text.replace("override /hydra/sweeper: optuna", "override /hydra/sweeper: hps")
    theirs = "    _target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper\n"
    text = text.replace(theirs, f"    _target_: {target}\n" if target else "")
    for old, new in KEYS.items():
        text = text.replace(old, new)
    return text


@pytest.fixture
def config_dir(tmp_path):
    """A config folder on Hydra's search path (``hydra.searchpath``) holding the moved file."""
    folder = tmp_path / "configs"
    (folder / "hparams_search").mkdir(parents=True)
    return folder


def add(config_dir, name: str, text: str) -> str:
    (config_dir / "hparams_search" / f"{name}.yaml").write_text(text)
    return f"hydra.searchpath=[file://{config_dir}]"


def sweeper_node(*overrides: str):
    """``hydra.sweeper`` as composed, and as Hydra hands it to the sweeper (without ``_target_``/``_recursive_``)."""
    node = composed(*overrides).hydra.sweeper
    settings = {key: node[key] for key in node if key not in ("_target_", "_recursive_")}
    return node, settings


@pytest.mark.parametrize("target", [OUR_TARGET, None], ids=["our target", "target left out"])
def test_the_moved_file_composes_into_our_sweeper_with_its_settings(config_dir, target, monkeypatch, capsys):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    searchpath = add(config_dir, "mnist_optuna", moved(target=target))
    node, written = sweeper_node(searchpath, "+hparams_search=mnist_optuna")
    assert node._target_ == OUR_TARGET
    assert isinstance(instantiate(node), PruningSweeper)  # every key of the Optuna sweeper is an argument
    settings = sweeper_settings(written)
    assert (settings.n_trials, settings.direction, settings.study_name, settings.n_jobs) == (20, "maximize", None, 1)
    assert settings.storage == default_storage() == "sqlite:///studies/hps.db"
    assert settings.job_overrides == ("hydra.sweeper.storage='sqlite:///studies/hps.db'",)
    said = "hydra.sweeper.storage is null: the study goes to the default database, sqlite:///studies/hps.db"
    assert capsys.readouterr().err.splitlines().count(said) == 1
    sampler = OmegaConf.to_container(settings.sampler)  # the file's sampler, nothing left of the default's
    assert sampler == {"_target_": "optuna.samplers.TPESampler", "seed": 1234, "n_startup_trials": 10}
    build_sampler(settings.sampler)
    plan = plan_sweep([], settings, None, "finetune")
    assert plan.space.distributions == EXPECTED
    assert plan.experiments[0].overrides == list(settings.job_overrides)
    assert plan.experiments[0].study_name == "finetune"  # study_name: null is the task's name


def test_the_older_search_space_spelling_gives_the_same_kind_of_space(config_dir):
    older = """\
# @package _global_
defaults:
  - override /hydra/sweeper: hps
hydra:
  sweeper:
    direction: maximize
    study_name: sphere
    storage: null
    n_trials: 20
    search_space:
      training.learning_rate:
        type: float
        low: 0.0001
        high: 0.1
        log: true
      training.warmup_ratio:
        type: float
        low: 0.0
        high: 0.2
        step: 0.05
      training.freeze_layers:
        type: int
        low: 0
        high: 2
        choices: null
      training.batch_size:
        type: categorical
        choices: [16, 32]
"""
    _, written = sweeper_node(add(config_dir, "older", older), "+hparams_search=older")
    settings = sweeper_settings(written)
    assert plan_sweep([], settings, None, "finetune").space.distributions == {
        "training.learning_rate": FloatDistribution(0.0001, 0.1, log=True),
        "training.warmup_ratio": FloatDistribution(0.0, 0.2, step=0.05),
        "training.freeze_layers": IntDistribution(0, 2),
        "training.batch_size": CategoricalDistribution([16, 32]),
    }


def test_both_spellings_and_the_command_line_combine_with_the_later_winning():
    older = OmegaConf.create(
        {"a.x": {"type": "float", "low": 0, "high": 1}, "a.y": {"type": "int", "low": 1, "high": 3}}
    )
    params = OmegaConf.create({"a.y": "range(1, 9)", "a.z": "choice(p, q)", "a.fixed": 4})
    settings = sweeper_settings(
        {
            "storage": "sqlite:///x.db",
            "n_trials": 3,
            "sampler": {},
            "pruner": {},
            "params": params,
            "search_space": older,
        }
    )
    plan = plan_sweep(["a.z=interval(0, 2)"], settings, None, "task")
    assert plan.space.distributions == {
        "a.x": FloatDistribution(0, 1),
        "a.y": IntDistribution(1, 9),
        "a.z": FloatDistribution(0, 2),
    }
    assert plan.fixed_keys == {"a.fixed"} and plan.experiments[0].overrides == ["a.fixed=4"]


def test_each_spelling_of_a_parameter_maps_as_the_optuna_sweeper_maps_it():
    space, fixed = parse_sweeper_params(
        {
            "lr": "tag(log, interval(1e-5, 1e-2))",
            "size": "choice(32, 64)",
            "layers": "range(1, 4)",
            "ratio": "range(0.0, 0.3, 0.1)",
            "seed": 7,
        }
    )
    assert space.distributions == {
        "lr": FloatDistribution(1e-5, 1e-2, log=True),
        "size": CategoricalDistribution([32, 64]),
        "layers": IntDistribution(1, 4),
        "ratio": FloatDistribution(0.0, 0.3, step=0.1),
    }
    assert fixed == {"seed": "7"}
    older = parse_optuna_search_space(
        {
            "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True, "step": None, "choices": None},
            "layers": {"type": "int", "low": 1, "high": 4, "log": False},
            "size": {"type": "categorical", "choices": [32, 64]},
        }
    )
    assert older.distributions == {
        "lr": FloatDistribution(1e-5, 1e-2, log=True),
        "layers": IntDistribution(1, 4),
        "size": CategoricalDistribution([32, 64]),
    }
    assert {p.key for p in older.parameters.values()} == {"lr", "layers", "size"}
    with pytest.raises(ConfigError, match=r"parameter 'lr': unknown type 'uniform'; allowed: float, int, categorical"):
        parse_optuna_search_space({"lr": {"type": "uniform", "low": 0, "high": 1}})


def test_storage_null_from_hps_storage_stays_an_interpolation_in_the_jobs(monkeypatch, capsys):
    monkeypatch.setenv(STORAGE_ENV, "postgresql://user:secret@db/studies")
    settings = sweeper_settings({"storage": None, "n_trials": 1, "sampler": {}, "pruner": {}})
    assert settings.storage == "postgresql://user:secret@db/studies"
    assert settings.job_overrides == ("hydra.sweeper.storage=${oc.env:HPS_STORAGE}",)  # no password in a config
    assert "secret" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+hydra.sweeper.max_failure_rate=0.0",
            "hydra.sweeper.max_failure_rate is a Hydra Optuna sweeper setting this sweeper does not have "
            "(hydra.sweeper.fail_fast stops a sweep whose first trials all fail alike); drop it",
        ),
        (
            "+hydra.sweeper.n_trails=3",
            "hydra.sweeper.n_trails is not a setting of the hps sweeper; allowed: allow_space_change, artifact_dir,",
        ),
    ],
)
def test_an_unknown_sweeper_key_is_one_line_not_a_traceback(studies, override, message, monkeypatch, capfd):
    monkeypatch.setenv("HPS_STUDIES_DIR", str(studies))
    monkeypatch.setattr("sys.argv", ["hps-finetune", "-m", "experiment=smoke", override])
    with pytest.raises(SystemExit) as stopped:
        finetune_main()
    assert stopped.value.code == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]


def test_importing_the_sweeper_leaves_optuna_s_logging_alone():
    check = (
        "import optuna; before = optuna.logging.get_verbosity(); "
        "import hydra_plugins.hps_sweeper.pruning_sweeper; assert optuna.logging.get_verbosity() == before"
    )
    assert subprocess.run([sys.executable, "-c", check]).returncode == 0


def test_a_sweep_runs_from_the_moved_file_through_the_command_line(studies, config_dir):
    result = run_cli(
        "+hparams_search=mnist_optuna",
        add(config_dir, "mnist_optuna", moved()),
        "model=tiny_bert",
        "search_space=none",  # the file's params are the whole space (else they add to search_space=default)
        "data.max_train_examples=200",
        "training.num_epochs=1",
        "training.threads=1",
        "hydra.sweeper.n_trials=2",  # the file's 20, made short
        studies=studies,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"storage is null: the study goes to the default database, sqlite:///{studies}/hps.db" in result.stderr
    study = optuna.load_study(study_name="finetune", storage=f"sqlite:///{studies}/hps.db")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert len(study.trials) == 2
    assert all(trial.distributions == EXPECTED for trial in study.trials)
    assert all(trial.state.is_finished() for trial in study.trials)
