"""The pretrained model as a hyperparameter: a config group's option chosen per trial, each with its own ranges.

One real sweep over two tiny models of different depth (tiny_bert: 2 layers, and a 1-layer one written to a
``--config-dir``), then what it stored, its resume, report and export; the spelling and its checks in-process.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

import hps
from hps.search.distributions import describe_json
from hps.search.errors import ConfigError
from hps.search.export import Selection, export
from hps.search.groups import ConfigGroups, merged_identity, with_dependent_ranges, with_group_parameters
from hps.search.hydra_optuna_syntax import parse_sweeper_params
from hps.search.report import per_option, write_report
from hps.search.space import SearchSpace, parse_parameter, parse_search_space
from hps.search.storage import open_storage
from hps.search.study import IDENTITY, SEARCH_SPACE, StudySpec, open_study
from hps.search.trial import record
from tests.conftest import REPO, composed, run_cli

DEPTHS = {"tiny_bert": 2, "tiny_bert1": 1}
ONE_LAYER = """\
defaults:
  - tiny_bert
  - _self_
name: tiny-bert-1-layer
config_overrides:
  num_hidden_layers: 1
"""
TWO_MODELS = """\
# @package _global_
defaults:
  - override /model: tiny_bert
  - override /search_space: none
  - override /hydra/sweeper/pruner: none
data:
  max_train_examples: 64
training:
  num_epochs: 1
  evals_per_epoch: 1
  threads: 1
  precision: fp32
search_space:
  model: {group: model, choices: [tiny_bert, tiny_bert1]}
  learning_rate: {key: training.learning_rate, type: float, low: 1.0e-4, high: 3.0e-2, log: true}
  freeze_layers: {key: training.freeze_layers, type: int, low: 0, high: "${encoder_depth:${model}}"}
hydra:
  sweeper:
    study_name: models
    n_trials: 4
    sampler:
      seed: 0
"""


def config_dir(folder: Path) -> Path:
    """A --config-dir with a 1-layer tiny model (a second option of group model) and the two-model experiment."""
    (folder / "model").mkdir(parents=True)
    (folder / "experiment").mkdir()
    (folder / "model" / "tiny_bert1.yaml").write_text(ONE_LAYER)
    (folder / "experiment" / "two_models.yaml").write_text(TWO_MODELS)
    return folder


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, list[str]]:
    """A finished sweep over tiny_bert and tiny_bert1, and its command line."""
    root = tmp_path_factory.mktemp("models")
    command = ["-m", f"--config-dir={config_dir(root / 'conf')}", "experiment=two_models"]
    result = run_cli(*command, studies=root / "studies")
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "studies", command


def load(studies: Path) -> optuna.Study:
    return optuna.load_study(study_name="models", storage=f"sqlite:///{studies}/hps.db")


def test_each_trial_records_its_model_and_trains_it_within_that_model_s_depth(swept):
    studies, _ = swept
    study = load(studies)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert {t.params["model"] for t in trials} == set(DEPTHS)  # both models ran
    for trial in trials:
        model = trial.params["model"]
        assert 0 <= trial.params["freeze_layers"] <= DEPTHS[model]
        assert trial.distributions["freeze_layers"] == IntDistribution(0, DEPTHS[model])  # asked with its range
        config = record(trial, "config")  # what the trial's job composed and trained
        assert config["model"]["config_overrides"]["num_hidden_layers"] == DEPTHS[model]
        assert config["model"]["name"] == {"tiny_bert": "tiny-bert-random", "tiny_bert1": "tiny-bert-1-layer"}[model]
        assert f"model={model}" in record(trial, "overrides")
    assert study.user_attrs[IDENTITY]["model"] == "tiny-bert-1-layer | tiny-bert-random"
    stored = study.user_attrs["search_space"]
    assert describe_json(stored["model"]) == "config group model: one of tiny_bert, tiny_bert1"
    assert describe_json(stored["freeze_layers"]) == (
        "training.freeze_layers: int in [0, 2]; by model: tiny_bert [0, 2], tiny_bert1 [0, 1]"
    )


def test_the_same_command_resumes_and_one_fixed_model_is_refused(swept):
    studies, command = swept
    again = run_cli(*command, studies=studies)
    assert again.returncode == 0, again.stderr
    assert "4 of 4 trials done" in again.stderr
    # model=tiny_bert on the same command: the model leaves the space, and the identity names one model
    url = f"sqlite:///{studies}/hps.db"
    study = load(studies)
    fixed = StudySpec("models", "maximize", "macro_f1", {"model": "tiny-bert-random"}, study.user_attrs[SEARCH_SPACE])
    with pytest.raises(ConfigError) as refused:
        open_study(open_storage(url), url, fixed, optuna.samplers.RandomSampler(), optuna.pruners.NopPruner())
    assert str(refused.value) == (
        f"study 'models' in {url} was created for model='tiny-bert-1-layer | tiny-bert-random', not "
        "'tiny-bert-random'; run it with the same settings, or start a new study with hydra.sweeper.study_name=NEW_NAME"
    )
    assert len(load(studies).trials) == 4


def test_the_report_has_a_row_per_model_and_the_export_trains_the_chosen_model(swept):
    studies, _ = swept
    study = load(studies)
    rows = per_option(study, "model")
    assert [(row["model"], row["trials"], row["complete"]) for row in rows] == [
        (model, n, n) for model, n in sorted((m, sum(t.params["model"] == m for t in study.trials)) for m in DEPTHS)
    ]
    page = write_report(study, studies / "report")[0].read_text()
    assert "<h2>by model</h2>" in page and "<td>tiny_bert1</td>" in page
    (path,) = export(f"sqlite:///{studies}/hps.db", "models", Selection(), "yaml", studies)
    text = path.read_text()
    config = yaml.safe_load(text)
    best = study.best_trial
    assert f"#     model: {best.params['model']}" in text  # the provenance's params name the option
    assert config["model"]["config_overrides"]["num_hidden_layers"] == DEPTHS[best.params["model"]]


def test_a_model_that_is_no_option_is_refused_before_any_trial(tmp_path):
    command = ["-m", f"--config-dir={config_dir(tmp_path / 'conf')}", "experiment=two_models"]
    result = run_cli(*command, "search_space.model.choices=[tiny_bert,bert]", studies=tmp_path / "studies")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: search space parameter 'model': 'bert' is not an option of config group 'model'; options: minilm, "
        "tiny_bert, tiny_bert1 (your own: model/bert.yaml in a folder given with --config-dir)"
    ]
    assert not (tmp_path / "studies" / "hps.db").exists() or not optuna.get_all_study_names(
        f"sqlite:///{tmp_path}/studies/hps.db"
    )


@pytest.fixture
def groups(tmp_path) -> ConfigGroups:
    """The shipped config groups, and tiny_bert1 from a folder on Hydra's search path."""
    folder = config_dir(tmp_path / "conf")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        yield ConfigGroups(GlobalHydra.instance().config_loader(), "finetune", [f"hydra.searchpath=[file://{folder}]"])


def test_a_group_entry_and_the_optuna_sweeper_s_choice_on_a_group_key_are_group_parameters(groups):
    ours = with_group_parameters(parse_search_space({"m": {"group": "model", "choices": ["tiny_bert1"]}}), groups)
    theirs, _ = parse_sweeper_params({"model": "choice(minilm, tiny_bert1)"})
    theirs = with_group_parameters(theirs, groups)
    assert ours.group.name == "m" and theirs.group.name == "model"
    assert theirs.overrides({"model": "tiny_bert1"}) == ["model=tiny_bert1"]  # a group override, as typed
    size, _ = parse_sweeper_params({"training.batch_size": "choice(16, 32)"})
    assert with_group_parameters(size, groups).group is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"m": {"group": "modle", "choices": ["minilm"]}},
            "search space parameter 'm': config group 'modle' does not exist; groups: data, experiment, model, "
            "paths, search_space, training",
        ),
        (
            {"m": {"group": "model", "choices": ["minilm", "bert"]}},
            "search space parameter 'm': 'bert' is not an option of config group 'model'; options: minilm, "
            "tiny_bert, tiny_bert1",
        ),
        (
            {"m": {"group": "model", "choices": ["minilm"]}, "d": {"group": "data", "choices": ["trec"]}},
            "search space parameters 'm' and 'd' both choose a config group; a study searches one: sweep the other "
            "as an experiment (data=a,b)",
        ),
    ],
)
def test_group_checks_are_one_line(groups, spec, message):
    with pytest.raises(ConfigError) as caught:
        with_group_parameters(parse_search_space(spec), groups)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"group": "model", "choices": ["minilm"], "low": 0}, "unknown field 'low' for a config group"),
        ({"group": "model", "choices": ["minilm"], "key": "model"}, "unknown field 'key' for a config group"),
        ({"group": "model", "type": "int", "choices": ["minilm"]}, "a config group is categorical"),
        ({"group": "model", "choices": [1]}, "choice 1 is not the name of an option"),
        ({"group": "model", "choices": []}, "'choices' is empty"),
        ({"group": "", "choices": ["minilm"]}, "'group' must name a config group"),
    ],
)
def test_a_bad_group_entry_is_one_line(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_parameter("m", spec)


def spaces(**highs: int) -> dict[str, SearchSpace]:
    return {
        option: parse_search_space(
            {
                "model": {"group": "model", "choices": list(highs)},
                "lr": {"key": "training.learning_rate", "type": "float", "low": 0.1, "high": 1.0},
                "layers": {"key": "training.freeze_layers", "type": "int", "low": 0, "high": high},
            }
        )
        for option, high in highs.items()
    }


def test_a_range_that_differs_by_option_depends_on_the_option():
    per_option = spaces(big=6, small=2)
    space = with_dependent_ranges(per_option["big"], per_option)
    layers = space.parameters["layers"]
    assert (layers.depends_on, layers.distribution) == ("model", IntDistribution(0, 6))
    assert space.parameters["lr"].depends_on is None
    assert space.independent_distributions == {
        "model": CategoricalDistribution(["big", "small"]),
        "lr": FloatDistribution(0.1, 1.0),
    }
    assert space.for_option("small").distributions == {
        "lr": FloatDistribution(0.1, 1.0),
        "layers": IntDistribution(0, 2),
    }
    assert space.admits("layers", 4, {"model": "big"}) and not space.admits("layers", 4, {"model": "small"})
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    for _ in range(12):
        trial = study.ask(space.independent_distributions)
        space.suggest_dependent(trial)
        assert trial.params["layers"] <= {"big": 6, "small": 2}[trial.params["model"]]
        study.tell(trial, trial.params["layers"] + trial.params["lr"])


def test_options_may_change_a_range_but_not_the_parameters():
    per_option = spaces(big=6, small=2)
    per_option["small"] = SearchSpace([p for p in per_option["small"].parameters.values() if p.name != "lr"])
    with pytest.raises(ConfigError, match="'lr': with model=small the search space lacks it"):
        with_dependent_ranges(per_option["big"], per_option)
    choices = {
        option: parse_search_space(
            {
                "model": {"group": "model", "choices": ["a", "b"]},
                "bs": {"key": "training.batch_size", "type": "categorical", "choices": sizes},
            }
        )
        for option, sizes in (("a", [8, 16]), ("b", [16, 32]))
    }
    with pytest.raises(ConfigError, match="only a numeric range"):
        with_dependent_ranges(choices["a"], choices)


def test_the_identity_of_a_study_over_models_names_every_model():
    assert merged_identity({"a": {"data": "x", "model": "A"}, "b": {"data": "x", "model": "B"}}) == {
        "data": "x",
        "model": "A | B",
    }
    assert merged_identity({None: {"data": "x", "model": "A"}}) == {"data": "x", "model": "A"}


@pytest.mark.parametrize(("model", "depth"), [("minilm", 6), ("tiny_bert", 2)])
def test_the_shipped_example_bounds_freeze_layers_by_each_model_s_depth(model, depth):
    space = parse_search_space(composed("search_space=models", f"model={model}").search_space)
    assert space.parameters["model"].group
    assert space.parameters["freeze_layers"].distribution == IntDistribution(0, depth)


def test_the_python_objective_refuses_a_group_parameter_in_one_line():
    space = {"model": {"group": "model", "choices": ["minilm", "tiny_bert"]}}
    with pytest.raises(hps.ConfigError, match=r"chooses an option of config group 'model', which hps\.objective does"):
        hps.objective(["experiment=smoke"], search_space=space)
