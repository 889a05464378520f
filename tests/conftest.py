"""Shared helpers: running the real command line in a subprocess, small CSV datasets, a tiny run's config, and
the ``gpu`` marker."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import hps.objectives  # noqa: F401 - registers the model_package_path config resolver

REPO = Path(__file__).resolve().parents[1]
SHIPPED_DATA = REPO / "data"


def run_cli(
    *args: str, studies: Path, data_root: Path | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run the README's ``hps-finetune ARGS`` (the installed console script) from the repo root."""
    env = os.environ | {"HPS_STUDIES_DIR": str(studies), "PYTHONUNBUFFERED": "1"}
    if data_root is not None:
        env["HPS_DATA_ROOT"] = str(data_root)
    return subprocess.run(
        [str(Path(sys.executable).parent / "hps-finetune"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def composed(*overrides: str, task: str = "finetune") -> DictConfig:
    """The config of ``task`` (a config in conf/) as Hydra composes it for these overrides, with its hydra node."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(task, overrides=list(overrides), return_hydra_config=True)


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(autouse=True)
def default_paths(monkeypatch):
    """Tests see the configs' own default paths, whatever the shell exported."""
    monkeypatch.delenv("HPS_DATA_ROOT", raising=False)
    monkeypatch.delenv("HPS_STUDIES_DIR", raising=False)


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    return tmp_path / "studies"


@pytest.fixture
def run_config(tmp_path) -> DictConfig:
    config = composed(
        "model=tiny_bert",
        "data.max_train_examples=120",
        "training.num_epochs=2",
        "training.evals_per_epoch=2",
        "training.learning_rate=1e-3",
        "training.freeze_layers=1",
        "training.threads=1",
        # Tests compare numbers exactly, which only fp32 gives on every CPU; bf16 is tested in test_device.py.
        "training.precision=fp32",
        f"paths.cache_dir={tmp_path}/cache",
        f"paths.studies_dir={tmp_path}/studies",  # production training registers its model there
    )
    with open_dict(config):
        config.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(config)  # what Hydra does for a job
    with open_dict(config):
        del config["hydra"]  # a task sees its config without the hydra node
    return config


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` need CUDA: skipped, saying so, where there is none (benchmarks/gpu_check.sh runs them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible); benchmarks/gpu_check.sh runs these on one")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
