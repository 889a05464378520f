"""hps: pruned hyperparameter search over fine-tuning of pretrained transformers.

The platform is :mod:`hps.search`, what trials run is :mod:`hps.objectives`, the configs are ``hps.conf``.
"""
