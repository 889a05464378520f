"""The README's recipe for your own CSV files works as written: a data config from it trains and saves a model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.conftest import REPO, run_cli, write_csv

SECTION = "### Your own CSV files\n"


def readme_recipe() -> str:
    """The one yaml block of the README's "Your own CSV files" section, as written there."""
    section = (REPO / "README.md").read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```yaml\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)
    assert len(blocks) == 1, f"the section should hold one yaml recipe, not {len(blocks)}"
    return blocks[0]


def write_recipe_data(folder: Path, recipe: dict, names: list[str], rows_per_label: int) -> None:
    """The split files the recipe names, with its text, label and label-name columns, every label in each."""
    header = [*recipe["text_columns"], recipe["label_column"], recipe["label_name_column"]]
    for key in ("train_file", "validation_file", "test_file"):
        rows = [
            [*(f"{key} {column} {index} about {names[label]}" for column in recipe["text_columns"]), label, name]
            for index in range(rows_per_label)
            for label, name in enumerate(names)
        ]
        write_csv(folder / recipe[key], header, rows)


def test_the_readme_csv_recipe_trains_and_saves_a_model_with_a_test_metric_and_label_names(tmp_path):
    text = readme_recipe()
    recipe = yaml.safe_load(text)
    names = [f"queue {label}: {'urgent?' if label % 2 else 'later'}" for label in range(recipe["num_labels"])]
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / f"{recipe['name']}.yaml").write_text(text)
    write_recipe_data(tmp_path / "data" / recipe["name"], recipe, names, rows_per_label=4)

    result = run_cli(
        *("--config-dir", str(tmp_path / "conf"), f"data={recipe['name']}", "model=tiny_bert"),
        *("training.num_epochs=1", "training.evals_per_epoch=1", "training.batch_size=8", "training.threads=1"),
        *("production.enabled=true", f"hydra.run.dir={tmp_path / 'run'}"),
        studies=tmp_path / "studies",
        data_root=tmp_path / "data",
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"] is not None and metrics["test_examples"] == 4 * len(names)
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["id2label"] == {str(label): name for label, name in enumerate(names)}
