"""Hydra configs. A package so that Hydra finds them as the installed console scripts' config module."""
