"""A task that catches Ctrl-C and returns, as a training loop that saves a checkpoint on Ctrl-C would.

The sweeper must still stop (tests/test_sweep.py); its config is the synthetic objective's.
"""

from __future__ import annotations

import time

import hydra
from omegaconf import DictConfig

from hps.search.trial import TrialLink


@hydra.main(version_base="1.3", config_path="../conf", config_name="synthetic")
def main(cfg: DictConfig) -> float:
    link = TrialLink.from_config(cfg)
    try:
        for step in range(1, cfg.steps + 1):
            time.sleep(cfg.step_seconds)
            link.report(step, 0.5, can_prune=False)
    except KeyboardInterrupt:
        pass  # "checkpoint saved", and the run ends as if it had finished
    return 0.5


if __name__ == "__main__":
    main()
