"""Every option of every config group composes, and every sampler and pruner builds."""

from __future__ import annotations

import optuna
import pytest
from hydra.utils import instantiate

from hps.search.notes import study_setup
from hps.search.samplers import PruningAwareGPSampler
from hps.search.space import parse_search_space
from hps.search.study import StudySpec
from tests.conftest import REPO, composed


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (REPO / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("name", [n for n in options("data") if n != "csv"])
def test_every_data_config_composes(name):
    data = composed(f"data={name}").data
    assert data.name == name
    assert data.dir == f"data/{name}"
    assert data.metric in ("accuracy", "macro_f1", "mcc")
    assert 1 <= len(data.text_columns) <= 2
    assert isinstance(data.num_labels, int)


@pytest.mark.parametrize("name", options("hydra/sweeper/sampler"))
def test_every_sampler_builds(name):
    sampler = instantiate(composed(f"hydra/sweeper/sampler={name}").hydra.sweeper.sampler)
    assert isinstance(sampler, optuna.samplers.BaseSampler)


@pytest.mark.parametrize("name", options("hydra/sweeper/pruner"))
def test_every_pruner_builds(name):
    pruner = instantiate(composed(f"hydra/sweeper/pruner={name}").hydra.sweeper.pruner)
    assert isinstance(pruner, optuna.pruners.BasePruner)


def test_default_sampler_and_pruner():
    sweeper = composed().hydra.sweeper
    assert isinstance(instantiate(sweeper.sampler), PruningAwareGPSampler)
    assert isinstance(instantiate(sweeper.pruner), optuna.pruners.SuccessiveHalvingPruner)
    assert sweeper.storage == "sqlite:///studies/hps.db"


@pytest.mark.parametrize(
    ("overrides", "pruner"),
    [
        ([], "SuccessiveHalvingPruner(min_resource=2, reduction_factor=2, "),
        (["hydra/sweeper/pruner=incumbent"], "IncumbentPruner(wrapped_pruner=SuccessiveHalvingPruner(min_resource=2, "),
    ],
)
def test_the_study_s_note_shows_the_pruner_with_the_one_it_wraps(overrides, pruner):
    config = composed(*overrides)
    space = parse_search_space(config.search_space)
    spec = StudySpec(name="s", direction="maximize", metric="macro_f1")
    setup = study_setup(spec, space, config.hydra.sweeper.sampler, config.hydra.sweeper.pruner, 12, "sqlite:///x")
    assert setup["pruner"].startswith(pruner)
    assert setup["sampler"].startswith("PruningAwareGPSampler(n_startup_trials=3")


@pytest.mark.parametrize("name", options("search_space"))
def test_every_search_space_parses_and_points_at_existing_keys(name):
    config = composed(f"search_space={name}", task="lcbench" if name.startswith("lcbench") else "finetune")
    space = parse_search_space(config.search_space)
    space.check_against(config)


@pytest.mark.parametrize("name", options("experiment"))
def test_every_experiment_composes(name):
    config = composed(f"experiment={name}")
    assert config.hydra.sweeper.study_name == name
