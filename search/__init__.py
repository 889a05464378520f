"""The platform: an Optuna-backed Hydra sweeper that prunes, and the pieces it is made of.

- :mod:`search.space`     search spaces from YAML (ours and the Hydra Optuna sweeper's syntax)
- :mod:`search.storage`   opening study storages from SQLAlchemy URLs
- :mod:`search.study`     creating and resuming studies, budget and metadata checks
- :mod:`search.trial`     the link a running task uses to report to its trial
- :mod:`search.samplers`  the default's sampler: Optuna's Gaussian process, fitted also to pruned trials
- :mod:`search.pruners`   the default's pruner: successive halving plus stops behind the best trial
- :mod:`search.sweeper`   the Hydra sweeper that ties them together
- :mod:`search.progress`  the live view of a study and its running trial
- :mod:`search.export`    the best trial(s) as complete configs for production training (``hps export``)

Nothing here knows about transformers: objectives live in :mod:`objectives`.
"""
