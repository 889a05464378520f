"""The built wheel: one package, ``hps``, beside Hydra's plugin namespace, with its configs, working where installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO


def test_a_wheel_installs_only_hps_and_the_sweeper_plugin_and_runs_from_there(tmp_path: Path):
    source = tmp_path / "source"  # a copy, so that building leaves no build/ or egg-info in the clone
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(".venv", ".git", "studies", "build", "*.egg-info", "__pycache__", "outputs"),
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path, source],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("hps-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {
        "hps",
        "hydra_plugins",
    }
    assert {"hps/search/sweeper.py", "hps/objectives/finetune.py", "hps/conf/finetune.yaml"} <= set(names)
    assert "hps/conf/hydra/sweeper/sampler/gp.yaml" in names  # configs in sub-folders travel too
    assert {name for name in names if name.startswith("hydra_plugins/")} >= {"hydra_plugins/hps_sweeper/__init__.py"}

    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr
    assert not {"search", "objectives", "conf"} & {path.name for path in target.iterdir()}
    # The installed copy comes first on the path: Hydra must compose from the wheel's hps.conf, not the clone's.
    env = os.environ | {"PYTHONPATH": str(target)}
    composed = subprocess.run(
        [sys.executable, "-m", "hps.objectives.finetune", "--cfg", "job", "model=tiny_bert", "search_space=default"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert composed.returncode == 0, composed.stderr
    assert "tiny_bert" in composed.stdout or "tiny-bert" in composed.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import hps.conf, hps.search.sweeper; print(hps.conf.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert Path(where.stdout.strip()).is_relative_to(target), where
