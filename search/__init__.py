"""The platform: an Optuna-backed Hydra sweeper that prunes, and the pieces it is made of.

- :mod:`hps.search.space`     search spaces from YAML (ours and the Hydra Optuna sweeper's syntax)
- :mod:`hps.search.groups`    a config group (the model) as a parameter, with ranges per option
- :mod:`hps.search.storage`   opening study storages from SQLAlchemy URLs
- :mod:`hps.search.study`     creating and resuming studies, budget and metadata checks
- :mod:`hps.search.trial`     the link a running task uses to report to its trial
- :mod:`hps.search.samplers`  the default's sampler: Optuna's Gaussian process, fitted also to pruned trials
- :mod:`hps.search.pruners`   ``IncumbentPruner``: successive halving plus a stop behind the best trial
- :mod:`hps.search.sweeper`   the Hydra sweeper that ties them together
- :mod:`hps.search.progress`  the live view of a study and its running trial
- :mod:`hps.search.export`    the best trial(s) as complete configs for production training (``hps export``)
- :mod:`hps.search.registry`  production models and their checks, in the study's database (``hps models``)
- :mod:`hps.search.drift`     the statistics of ``hps check`` and ``hps retune``

Nothing here knows about transformers: objectives live in :mod:`hps.objectives` (``hps check`` and ``hps retune``
load :mod:`hps.objectives.checks` to run a model).
"""
