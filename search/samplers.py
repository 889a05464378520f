"""Samplers of our own, on Optuna's sampler interface.

:class:`FocusedTPESampler` is the default's sampler (README, "Search quality").
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import optuna

from search.errors import is_whole_number


class FocusedTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE with at most ``max_good_trials`` trials in its good group (Optuna's limit is 25).

    TPE splits the finished trials into a good group (the best 10%) and the rest, and samples where the good
    group is dense and the rest is not. Pruned trials count as finished, so under a pruner the group grows faster
    than the complete trials: on lcbench, after 100 full trainings' worth of epochs the default pruner has
    finished about 200 trials, 73 of them complete, and the good group holds the best 21 of those. A lower
    limit keeps TPE sampling around the best few once a study is long. Up to ``10 * max_good_trials`` finished
    trials it samples exactly as Optuna's TPE (for a single objective, as the platform's studies have, and a
    limit of at most 25). Every other argument is ``TPESampler``'s, but ``gamma``, which this one sets.
    """

    def __init__(self, *, max_good_trials: int = 25, **tpe_arguments: Any) -> None:
        if not is_whole_number(max_good_trials, 1):
            raise ValueError(f"max_good_trials is {max_good_trials!r}; allowed: a whole number >= 1")
        if "gamma" in tpe_arguments:
            raise ValueError("gamma is not an argument of FocusedTPESampler; allowed: max_good_trials, its limit")
        with warnings.catch_warnings():
            # Optuna 4.9 deprecated `gamma` for removal in 6.0 (pyproject: optuna<6); once removed, this raises.
            warnings.filterwarnings("ignore", message="`gamma` has been deprecated", category=FutureWarning)
            super().__init__(gamma=functools.partial(good_group_size, limit=max_good_trials), **tpe_arguments)


def good_group_size(finished_trials: int, limit: int) -> int:
    """Optuna's size of TPE's good group, 10% of the finished trials rounded up, but at most ``limit``."""
    return min(math.ceil(0.1 * finished_trials), limit)
