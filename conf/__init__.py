"""The Hydra configs, as a package so that Hydra finds them as ``pkg://hps.conf`` in any install."""
