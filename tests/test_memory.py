"""A worker runs many trials in one process: nothing a finished trial held may stay (model, optimizer, cached
features, CUDA memory), or a long study ends out of memory."""

from __future__ import annotations

import optuna

from tests.conftest import run_cli

TRIALS, WARM_UP = 20, 5


def test_twenty_trials_in_one_process_leave_its_memory_where_it_was(studies):
    result = run_cli(
        "-m",
        "experiment=smoke",
        f"hydra.sweeper.n_trials={TRIALS}",
        f"hydra.sweeper.pruner.n_startup_trials={TRIALS}",  # none pruned: each trains to the end, the most it can leave
        "hydra.sweeper.artifact_dir=null",
        studies=studies,
    )
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="smoke", storage=f"sqlite:///{studies}/hps.db").trials
    rss = [t.user_attrs["rss_mb"] for t in trials]
    assert len(rss) == TRIALS and all(t.user_attrs["max_rss_mb"] > 0 for t in trials)
    # The first trials load libraries, tokenizers and allocator pools once; after them a leak of even one tiny
    # model per trial (about 1 MB) would add 15 MB over 15 trials, a leaked feature cache or optimizer more.
    growth = max(rss[WARM_UP:]) - rss[WARM_UP - 1]
    assert growth < 50, rss
