"""A config group as a hyperparameter: each trial picks one of the group's options (the pretrained model).

``model: {group: model, choices: [minilm, tiny_bert]}`` (or, in the Hydra Optuna sweeper's spelling,
``hydra.sweeper.params: {model: choice(minilm, tiny_bert)}``: a categorical parameter whose key is a config group)
is a parameter whose values are options of the group; a trial applies its value as a group override
(``model=tiny_bert``), so its job is composed with that option's whole config.

Before any trial the sweeper composes the task config once per option and reads the search space in each
composition. A numeric bound that resolves differently per option (``high: ${encoder_depth:${model}}``, the
chosen model's depth) makes a *dependent* parameter: a trial draws the group's option first, then that parameter
from the option's own range (:meth:`SearchSpace.suggest_dependent`), so no trial gets a value its option refuses.
The objective's preflight runs on every option's composition with that option's ranges. The checks here:
the group exists, each choice is one of its options, at most one group per study, and the space differs between
options only in numeric ranges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from hydra.core.config_loader import ConfigLoader
from hydra.core.object_type import ObjectType
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from hps.search.errors import ConfigError
from hps.search.space import Parameter, SearchSpace


class ConfigGroups:
    """The config groups and options Hydra finds for a sweep: its config's search path, ``--config-dir`` and
    ``hydra.searchpath`` included, so a user's own ``model/*.yaml`` is an option like the shipped ones.

    Args:
        loader: Hydra's config loader.
        config_name: The sweep's primary config (``finetune``).
        overrides: The overrides its jobs are composed with (they may add to the search path).
    """

    def __init__(self, loader: ConfigLoader, config_name: str | None, overrides: list[str]) -> None:
        self.loader, self.config_name, self.overrides = loader, config_name, overrides

    def options(self, group: str) -> list[str]:
        """The options of ``group`` (``minilm``, ``tiny_bert``); empty when it is no group."""
        return self._list(group, ObjectType.CONFIG)

    def groups(self) -> list[str]:
        """The top-level config groups, ``hydra`` left out."""
        return [name for name in self._list("", ObjectType.GROUP) if name != "hydra"]

    def _list(self, group: str, kind: ObjectType) -> list[str]:
        return sorted(self.loader.get_group_options(group, kind, self.config_name, self.overrides))


def with_group_parameters(space: SearchSpace, groups: ConfigGroups) -> SearchSpace:
    """``space`` with each categorical parameter whose key is a config group made a group parameter, checked.

    Refused in one line: a group that does not exist, a choice that is not an option of its group, and a
    second group parameter (a study searches one group; sweep another as an experiment, ``data=a,b``).

    Args:
        space: The parsed search space: ``group:`` entries are group parameters already; a categorical entry
            on a group's key (``hydra.sweeper.params: {model: choice(a, b)}``) becomes one, as Hydra's
            override ``model=a`` would choose an option.
        groups: What the config repository holds.
    """
    parameters = []
    for p in space.parameters.values():
        if not p.group and _may_be_group(p) and groups.options(p.key):
            p = replace(p, group=True)
        if p.group:
            _check_options(p, groups)
        parameters.append(p)
    searched = [p for p in parameters if p.group]
    if len(searched) > 1:
        first, second = searched[:2]
        raise ConfigError(
            f"search space parameters {first.name!r} and {second.name!r} both choose a config group; a study "
            f"searches one: sweep the other as an experiment ({second.key}=a,b), one study per option"
        )
    return SearchSpace(parameters)


def _may_be_group(parameter: Parameter) -> bool:
    """Whether the parameter could choose a group's option: categorical, of strings, on a key without dots."""
    distribution = parameter.distribution
    return (
        isinstance(distribution, CategoricalDistribution)
        and "." not in parameter.key
        and all(isinstance(choice, str) for choice in distribution.choices)
    )


def group_options(parameter: Parameter) -> list[str]:
    """The options a group parameter chooses from, as its overrides name them."""
    assert isinstance(parameter.distribution, CategoricalDistribution)
    return [str(choice) for choice in parameter.distribution.choices]


def _check_options(parameter: Parameter, groups: ConfigGroups) -> None:
    where = f"search space parameter {parameter.name!r}"
    options = groups.options(parameter.key)
    if not options:
        raise ConfigError(
            f"{where}: config group {parameter.key!r} does not exist; groups: {', '.join(groups.groups())}"
        )
    assert isinstance(parameter.distribution, CategoricalDistribution)
    missing = next((c for c in parameter.distribution.choices if c not in options), None)
    if missing is not None:
        raise ConfigError(
            f"{where}: {missing!r} is not an option of config group {parameter.key!r}; options: {', '.join(options)} "
            f"(your own: {parameter.key}/{missing}.yaml in a folder given with --config-dir)"
        )


def with_dependent_ranges(space: SearchSpace, per_option: Mapping[str, SearchSpace]) -> SearchSpace:
    """``space`` with each parameter whose range differs between the group's options made dependent on it.

    Args:
        space: The space with its group parameter (:func:`with_group_parameters`).
        per_option: Each option of the group to the space read in the task config composed with that option.
            It must have the same parameters on the same keys; a range may differ (bounds, step), nothing else:
            Optuna takes other bounds for one parameter name, but neither another kind, scale nor choices.
    """
    group = space.group
    if group is None:
        return space
    parameters = []
    for p in space.parameters.values():
        if p.group:
            parameters.append(p)
            continue
        by_option = {}
        for option, other in per_option.items():
            q = other.parameters.get(p.name)
            if q is None or q.key != p.key:
                raise ConfigError(
                    f"search space parameter {p.name!r}: with {group.key}={option} the search space "
                    + ("lacks it" if q is None else f"points it at {q.key!r}, not {p.key!r}")
                    + "; a group's options may change a parameter's range, not the parameters"
                )
            by_option[option] = q.distribution
        extra = sorted(set().union(*(other.parameters for other in per_option.values())) - set(space.parameters))
        if extra:
            raise ConfigError(
                f"search space parameter {extra[0]!r} exists only with some options of config group {group.key!r}; "
                "a group's options may change a parameter's range, not the parameters"
            )
        distributions = list(by_option.values())
        if all(d == distributions[0] for d in distributions):
            parameters.append(replace(p, distribution=distributions[0]))
            continue
        parameters.append(
            replace(p, distribution=_span(p.name, group.key, distributions), depends_on=group.name, by_option=by_option)
        )
    return SearchSpace(parameters)


def _span(name: str, group: str, distributions: list[BaseDistribution]) -> BaseDistribution:
    """The distribution spanning ``distributions``, which must differ only in their bounds and step."""
    first = distributions[0]
    same_kind = all(type(d) is type(first) for d in distributions) and not isinstance(first, CategoricalDistribution)
    if not same_kind or any(d.log != first.log for d in distributions):  # type: ignore[attr-defined]
        raise ConfigError(
            f"search space parameter {name!r} has another type, scale or choices for another option of config "
            f"group {group!r}; only a numeric range (its bounds and step) may depend on the option"
        )
    low = min(d.low for d in distributions)  # type: ignore[attr-defined]
    high = max(d.high for d in distributions)  # type: ignore[attr-defined]
    step = first.step if all(d.step == first.step for d in distributions) else None  # type: ignore[attr-defined]
    if isinstance(first, IntDistribution):
        return IntDistribution(low, high, log=first.log, step=step or 1)
    assert isinstance(first, FloatDistribution)
    return FloatDistribution(low, high, log=first.log, step=step)


def merged_identity(per_option: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """A study's identity over a group's options: a value that differs between options is all of them.

    ``{model: all-MiniLM-L6-v2 | tiny-bert-random}``: a resume with the same search passes, one with a single
    model (fixed on the command line) is refused, as it would mix another objective's trials in.

    Args:
        per_option: Each option to the identity (``objective.identity``) of the config composed with it.
    """
    keys = dict.fromkeys(key for identity in per_option.values() for key in identity)
    merged = {}
    for key in keys:
        values = sorted({identity.get(key, "") for identity in per_option.values()})
        merged[key] = " | ".join(values)
    return merged
