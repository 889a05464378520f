"""hps: pruned hyperparameter search over fine-tuning of pretrained transformers.

The Python API, composed from the same configs as the command line (docs/python-api.md):

- :func:`sweep`            run or resume a study as ``hps-finetune -m`` does, and return it
- :func:`objective`        the fine-tuning task as an objective for a study of your own (``study.optimize``)
- :func:`default_sampler`  the sweeper's default sampler; :func:`default_pruner` its default pruner
- :func:`load_study`, :func:`export`, :func:`report`, :func:`compare`: the ``hps`` commands around studies

The platform is :mod:`hps.search`, what trials run is :mod:`hps.objectives`, the configs are ``hps.conf``.
Importing hps loads none of them: each name loads its module when first used, and nothing at import changes the
process (no environment variable, no library's logging).
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "sweep": "hps._sweep",
    "SweepError": "hps._sweep",
    "objective": "hps._objective",
    "default_sampler": "hps._config",
    "default_pruner": "hps._config",
    "load_study": "hps._studies",
    "export": "hps._studies",
    "report": "hps._studies",
    "compare": "hps._studies",
    "ConfigError": "hps.search.errors",
}

__all__ = list(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'hps' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
