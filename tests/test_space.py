"""Search spaces: our YAML spelling, the Hydra Optuna sweeper's, and every validation error."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hps.search.errors import ConfigError
from hps.search.hydra_optuna_syntax import parse_sweeper_params
from hps.search.space import SearchSpace, parse_parameter, parse_search_space


def test_parses_every_type():
    space = parse_search_space(
        {
            "lr": {"key": "training.learning_rate", "type": "float", "low": 1e-5, "high": 1e-3, "log": True},
            "layers": {"key": "training.freeze_layers", "type": "int", "low": 0, "high": 6, "step": 2},
            "bs": {"key": "training.batch_size", "type": "categorical", "choices": [16, 32]},
            "wd": {"key": "training.weight_decay", "type": "float", "low": 0.0, "high": 0.1, "step": 0.05},
        }
    )
    assert space.distributions == {
        "lr": FloatDistribution(1e-5, 1e-3, log=True),
        "layers": IntDistribution(0, 6, step=2),
        "bs": CategoricalDistribution([16, 32]),
        "wd": FloatDistribution(0.0, 0.1, step=0.05),
    }
    assert space.by_key()["training.batch_size"].name == "bs"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"key": "a", "type": "float", "low": 1.0, "high": 0.1}, "low (1.0) is greater than high (0.1)"),
        ({"key": "a", "type": "float", "low": 0.0, "high": 0.1, "log": True}, "a log scale needs low > 0"),
        ({"key": "a", "type": "int", "low": -1, "high": 4, "log": True}, "a log scale needs low > 0"),
        (
            {"key": "a", "type": "floatt", "low": 0, "high": 1},
            "unknown type 'floatt'; allowed: float, int, categorical",
        ),
        ({"key": "a", "type": "categorical", "choices": []}, "'choices' is empty"),
        ({"key": "a", "type": "categorical"}, "'choices' must be a non-empty list"),
        ({"type": "float", "low": 0, "high": 1}, "'key' must name a config key"),
        (
            {"key": "a", "type": "float", "low": 0, "high": 1, "choices": [1]},
            "unknown field 'choices' for type float",
        ),
        ({"key": "a", "type": "float", "low": "x", "high": 1}, "'low' must be a finite number"),
        ({"key": "a", "type": "int", "low": 0.5, "high": 4}, "'low' must be an integer for type int"),
        (
            {"key": "a", "type": "float", "low": 1e-3, "high": 1, "log": True, "step": 0.1},
            "'step' and a log scale",
        ),
        ({"key": "a", "type": "int", "low": 0, "high": 4, "step": 0}, "'step' must be a positive number"),
        ({"key": "a", "type": "int", "low": 0, "high": 4, "step": 0.5}, "'step' must be an integer for type int"),
        ("0.1", "expected a mapping"),
    ],
)
def test_rejects_bad_parameter_with_one_line(spec, message):
    with pytest.raises(ConfigError) as error:
        parse_parameter("p", spec)
    assert message in str(error.value)
    assert str(error.value).startswith("search space parameter 'p'")
    assert "\n" not in str(error.value)


def test_two_parameters_on_one_key_are_rejected():
    spec = {"key": "training.dropout", "type": "float", "low": 0.0, "high": 0.3}
    with pytest.raises(ConfigError, match=r"key 'training\.dropout' is used by more than one parameter"):
        parse_search_space({"a": spec, "b": spec})


def test_sweeper_params_syntax_maps_like_the_hydra_optuna_sweeper():
    space, fixed = parse_sweeper_params(
        {
            "training.learning_rate": "tag(log, interval(1e-5, 1e-3))",
            "training.warmup_ratio": "interval(0.0, 0.2)",
            "training.freeze_layers": "range(0, 6)",
            "training.num_epochs": "interval(1, 3)",
            "training.batch_size": "choice(16, 32)",
            "training.lr_schedule": "linear,cosine",
            "training.seed": 3,
        }
    )
    assert space.distributions == {
        "training.learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
        "training.warmup_ratio": FloatDistribution(0.0, 0.2),
        "training.freeze_layers": IntDistribution(0, 6),
        "training.num_epochs": FloatDistribution(1.0, 3.0),  # interval() is always float, as in Hydra
        "training.batch_size": CategoricalDistribution([16, 32]),
        "training.lr_schedule": CategoricalDistribution(["linear", "cosine"]),
    }
    assert fixed == {"training.seed": "3"}


def test_sweeper_params_are_validated_too():
    with pytest.raises(ConfigError, match="a log scale needs low > 0"):
        parse_sweeper_params({"training.learning_rate": "tag(log, interval(0.0, 1e-3))"})
    with pytest.raises(ConfigError, match="cannot parse search parameter"):
        parse_sweeper_params({"training.learning_rate": "interval(1e-5"})


def test_overrides_parse_back_to_the_sampled_values():
    space = parse_search_space(
        {
            "lr": {"key": "training.learning_rate", "type": "float", "low": 1e-7, "high": 1e-3, "log": True},
            "schedule": {
                "key": "training.lr_schedule",
                "type": "categorical",
                "choices": ["it's", "a,b", None, True],
            },
        }
    )
    values = {"lr": 1.2345678901234567e-06, "schedule": "it's"}
    for line, expected in zip(space.overrides(values), values.values(), strict=True):
        assert OverridesParser.create().parse_override(line).value() == expected
    for choice in ["a,b", None, True]:
        (line,) = space.overrides({"schedule": choice})
        assert OverridesParser.create().parse_override(line).value() == choice


def test_merge_and_fix():
    base = parse_search_space({"lr": {"key": "training.learning_rate", "type": "float", "low": 0.1, "high": 1}})
    extra, _ = parse_sweeper_params({"training.learning_rate": "interval(0.2, 0.3)"})
    merged = base.merged(extra)
    assert merged.distributions == {"training.learning_rate": FloatDistribution(0.2, 0.3)}
    assert len(merged.without_keys({"training.learning_rate"})) == 0


def test_keys_must_exist_in_the_composed_config():
    config = OmegaConf.create({"training": {"learning_rate": 0.1, "dropout": None}})
    ok = parse_search_space({"d": {"key": "training.dropout", "type": "float", "low": 0, "high": 1}})
    ok.check_against(config)  # a key whose value is null still exists
    bad = parse_search_space({"x": {"key": "training.lr", "type": "float", "low": 0, "high": 1}})
    with pytest.raises(ConfigError, match=r"search space parameter 'x': key 'training\.lr' does not exist"):
        bad.check_against(config)


def test_a_float_parameter_cannot_set_an_integer_key():
    config = OmegaConf.create({"training": {"max_length": 128}})
    space, _ = parse_sweeper_params({"training.max_length": "interval(32, 128)"})
    with pytest.raises(ConfigError, match=r"holds an integer \(128\) but the parameter is float; use type int"):
        space.check_against(config)
    integers, _ = parse_sweeper_params({"training.max_length": "range(32, 128)"})
    integers.check_against(config)


def test_log_scale_int_range_is_accepted():
    space, _ = parse_sweeper_params({"training.batch_size": "tag(log, range(8, 64))"})
    assert space.distributions == {"training.batch_size": IntDistribution(8, 64, log=True)}


def test_two_parameters_with_one_name_are_rejected():
    one = parse_parameter("p", {"key": "a", "type": "float", "low": 0, "high": 1})
    two = parse_parameter("p", {"key": "b", "type": "float", "low": 0, "high": 1})
    with pytest.raises(ConfigError, match="name 'p' is used by more than one parameter"):
        SearchSpace([one, two])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"key": "training.batch_size", "type": "categorical", "choices": [8, "16", None, 32.5]},
            r"choice '16' is a string, but key 'training\.batch_size' holds an integer \(16\); give integers",
        ),
        (
            {"key": "training.batch_size", "type": "categorical", "choices": [8, 32.5]},
            r"choice 32\.5 is a number, but key 'training\.batch_size' holds an integer",
        ),
        (
            {"key": "training.lr_schedule", "type": "categorical", "choices": ["linear", 3]},
            r"choice 3 is an integer, but key 'training\.lr_schedule' holds a string \('linear'\); give strings",
        ),
        (
            {"key": "training.lr_schedule", "type": "float", "low": 0, "high": 1},
            r"key 'training\.lr_schedule' holds a string \('linear'\) but the parameter is numeric",
        ),
    ],
)
def test_values_must_be_of_the_kind_the_key_holds(spec, message):
    config = OmegaConf.create({"training": {"batch_size": 16, "lr_schedule": "linear", "dropout": 0.1}})
    with pytest.raises(ConfigError, match=message):
        parse_search_space({"p": spec}).check_against(config)


def test_integers_and_null_fit_a_number_key():
    config = OmegaConf.create({"training": {"dropout": 0.1, "cap": 600}})
    parse_search_space(
        {
            "d": {"key": "training.dropout", "type": "categorical", "choices": [0, 0.1, None]},
            "c": {"key": "training.cap", "type": "categorical", "choices": [None, 600]},
        }
    ).check_against(config)


def test_a_check_runs_on_every_value_the_space_can_give_and_names_the_one_it_refuses():
    config = OmegaConf.create({"training": {"batch_size": 16, "dropout": 0.1}})
    space = parse_search_space(
        {
            "batch": {"key": "training.batch_size", "type": "categorical", "choices": [8, 0, 32]},
            "dropout": {"key": "training.dropout", "type": "float", "low": 0.0, "high": 0.5},
        }
    )
    seen = []

    def check(candidate):
        seen.append((candidate.training.batch_size, candidate.training.dropout))
        if candidate.training.batch_size < 1:
            raise ConfigError(f"training.batch_size is {candidate.training.batch_size}; it must be >= 1")

    with pytest.raises(ConfigError, match=r"^search space parameter 'batch' = 0: training\.batch_size is 0; "):
        space.check_candidates(config, check)
    assert seen == [(16, 0.1), (8, 0.1), (0, 0.1)]
    seen.clear()
    space.without_keys({"training.batch_size"}).check_candidates(config, check)
    assert seen == [(16, 0.1), (16, 0.0), (16, 0.5)]
    assert config.training == {"batch_size": 16, "dropout": 0.1}  # the config itself is left as it was
