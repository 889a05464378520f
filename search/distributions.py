"""Optuna distributions from the fields a search space writes, checked, and described in words.

Every spelling of a search space (ours, and the Hydra Optuna sweeper's ``params`` and ``search_space``) ends
here, so a bound, a step or a choice is refused in the same one line whichever spelling gave it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    json_to_distribution,
)

from hps.search.errors import ConfigError


def categorical(where: str, choices: Any) -> CategoricalDistribution:
    """A categorical distribution over ``choices``, refused unless it is a non-empty list of plain values.

    Args:
        where: What the message names (``search space parameter 'batch_size'``), so that the user finds it.
        choices: The values as written; each must be a number, a string, a bool or null, which Optuna stores.
    """
    if not isinstance(choices, (list, tuple)) and not OmegaConf.is_list(choices):
        raise ConfigError(f"{where}: 'choices' must be a non-empty list, got {choices!r}")
    choices = list(choices)
    if not choices:
        raise ConfigError(f"{where}: 'choices' is empty; give at least one value")
    bad = [c for c in choices if not (c is None or isinstance(c, (bool, int, float, str)))]
    if bad:
        raise ConfigError(f"{where}: choice {bad[0]!r} is not a number, string, bool or null")
    return CategoricalDistribution(choices)


def numeric(where: str, kind: str, low: Any, high: Any, log: Any, step: Any) -> BaseDistribution:
    """An int or float distribution from ``low`` to ``high`` (both included), refused in one line when invalid.

    Args:
        where: What the message names, so that the user finds the entry.
        kind: ``int`` or ``float``: an int distribution needs whole bounds and steps.
        low: The lowest value, a finite number, at most ``high``; above 0 on a log scale.
        high: The highest value, a finite number.
        log: Whether to sample on a log scale (Optuna takes no step with one, but an int's step of 1).
        step: The spacing of the values, or None: any value for a float, every integer for an int.
    """
    for bound, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: '{bound}' must be a finite number, got {value!r}")
        if kind == "int" and not float(value).is_integer():
            raise ConfigError(f"{where}: '{bound}' must be an integer for type int, got {value!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: 'log' must be true or false, got {log!r}")
    if low > high:
        raise ConfigError(f"{where}: low ({low}) is greater than high ({high}); need low <= high")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got low={low}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise ConfigError(f"{where}: 'step' must be a positive number, got {step!r}")
        if kind == "int" and not float(step).is_integer():
            raise ConfigError(f"{where}: 'step' must be an integer for type int, got {step!r}")
        if log and step != 1:  # Optuna's log scale takes no step (an int one keeps step 1)
            raise ConfigError(f"{where}: 'step' and a log scale cannot be combined; drop one of them")
    if kind == "int":
        return IntDistribution(int(low), int(high), log=log, step=int(step) if step is not None else 1)
    return FloatDistribution(float(low), float(high), log=log, step=float(step) if step is not None else None)


def describe(distribution: BaseDistribution) -> str:
    """``float in [1e-05, 0.001], log`` / ``int in [0, 6]`` / ``one of 16, 32``."""
    if isinstance(distribution, CategoricalDistribution):
        return "one of " + ", ".join(str(choice) for choice in distribution.choices)
    kind = "float" if isinstance(distribution, FloatDistribution) else "int"
    text = f"{kind} in [{distribution.low:g}, {distribution.high:g}]"
    if distribution.log:
        text += ", log"
    if distribution.step not in (None, 1):
        text += f", step {distribution.step:g}"
    return text


def describe_json(parameter: Mapping[str, Any]) -> str:
    """``training.dropout: float in [0, 0.3]`` for a parameter as :meth:`SearchSpace.as_json` stores it.

    A config group reads ``config group model: one of minilm, tiny_bert``; a range that depends on its option
    adds each option's: ``training.freeze_layers: int in [0, 6]; by model: minilm [0, 6], tiny_bert [0, 2]``.
    """
    text = describe(json_to_distribution(parameter["distribution"]))
    if parameter.get("group"):
        return f"config group {parameter['key']}: {text}"
    by_option = parameter.get("by_option")
    if by_option:
        ranges = ", ".join(
            f"{option} {describe(json_to_distribution(d)).split(' in ', 1)[-1]}" for option, d in by_option.items()
        )
        text += f"; by {parameter.get('depends_on')}: {ranges}"
    return f"{parameter['key']}: {text}"
