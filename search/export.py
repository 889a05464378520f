"""Export a study's best trial(s) as complete configs that train the production model.

Each trial stores the composed config it ran (``user_attrs.config``). An export writes it, with every tuned
value applied, to ``<studies>/<study>/best.yaml`` (or ``top_<k>``, ``trial_<n>``, ``pareto_<n>``), behind a
provenance header, so that::

    hps-finetune --config-dir studies/<study> --config-name best

trains from it. Where the task config has a ``production`` node, the export switches ``production.enabled``
on; ``hydra.run.dir`` is set to a ``runs/`` folder beside the exported file.
"""

from __future__ import annotations

import copy
import datetime
import json
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from hps.search.errors import ConfigError
from hps.search.storage import absolute_url, display_url, has_password
from hps.search.study import load_study, ranked_complete_trials, state_counts
from hps.search.trial import package_versions, record

FORMATS = ("yaml", "json")


@dataclass(frozen=True)
class Selection:
    """Which trials to export: the best, the top k, one trial by number, or (multi-objective) the Pareto set."""

    top_k: int | None = None
    trial: int | None = None


def select_trials(study: optuna.Study, selection: Selection) -> dict[str, FrozenTrial]:
    """The trials to export, keyed by the file stem each is written to."""
    trials = study.get_trials(deepcopy=False)
    if selection.trial is not None:
        chosen = next((t for t in trials if t.number == selection.trial), None)
        if chosen is None or chosen.state != TrialState.COMPLETE:
            state = "does not exist" if chosen is None else f"is {chosen.state.name}"
            raise ConfigError(f"trial {selection.trial} of study {study.study_name!r} {state}; export a COMPLETE trial")
        return {f"trial_{chosen.number}": chosen}
    if not any(t.state == TrialState.COMPLETE for t in trials):
        raise ConfigError(f"study {study.study_name!r} has no COMPLETE trial to export yet")
    if len(study.directions) > 1:
        return {f"pareto_{t.number}": t for t in study.best_trials}
    ranked = ranked_complete_trials(study)
    if selection.top_k is None:
        return {"best": ranked[0]}
    if selection.top_k < 1:
        raise ConfigError(f"--top-k is {selection.top_k}; it must be a positive integer")
    return {f"top_{rank}": trial for rank, trial in enumerate(ranked[: selection.top_k], start=1)}


def exported_config(trial: FrozenTrial, folder: Path, source: dict | None = None) -> dict:
    """The trial's composed config, ready to run as production training from ``folder``, with ``source`` (where
    the trial is, :func:`model_source`) for the model registry."""
    config = copy.deepcopy(record(trial, "config"))
    if config is None:
        raise ConfigError(f"trial {trial.number} stored no config; it was not run by hps")
    if isinstance(config.get("production"), dict):
        config["production"]["enabled"] = True
        if "best_step" in trial.user_attrs:  # objective.value=best: train on train + validation as far as the best
            config["production"]["best_step"] = trial.user_attrs["best_step"]
        if source is not None:
            config["production"]["source"] = source
    config["hydra"] = {"run": {"dir": str(folder / "runs" / "${now:%Y-%m-%d_%H-%M-%S}")}}
    return config


def model_source(study: optuna.Study, trial: FrozenTrial, url: str) -> dict:
    """Where production training from the trial registers its model: the study's database and lineage."""
    return {
        "study": study.study_name,
        "trial": trial.number,
        "storage": None if has_password(url) else absolute_url(url),  # a password is read from HPS_STORAGE
        "lineage": study.study_name,
        "parent": None,
    }


def provenance(study: optuna.Study, trial: FrozenTrial, url: str) -> dict:
    """Where an exported config comes from: study, trial, metric, counts, storage, versions, date."""
    directions = [d.name.lower() for d in study.directions]
    single = len(directions) == 1
    return {
        "study": study.study_name,
        "trial": trial.number,
        "metric": (study.metric_names or ["value"])[0] if single else study.metric_names,
        "value": trial.value if single else trial.values,
        "direction": directions[0] if single else directions,
        "params": trial.params,
        "trials": state_counts(study),
        "storage": display_url(url),
        "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "trial_versions": record(trial, "versions", {}),
        "export_versions": package_versions("optuna", "hydra-core"),
        "overrides": record(trial, "overrides", []),
    }


def export(url: str, study_name: str | None, selection: Selection, output_format: str, studies_dir: Path) -> list[Path]:
    """Write the selected trials' configs; returns the files written."""
    if output_format not in FORMATS:
        raise ConfigError(f"--format is {output_format!r}; allowed: {', '.join(FORMATS)}")
    study = load_study(url, study_name)
    folder = studies_dir / study.study_name
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, trial in select_trials(study, selection).items():
        path = folder / f"{stem}.{output_format}"
        config = exported_config(trial, folder, model_source(study, trial, url))
        origin = provenance(study, trial, url)
        if output_format == "json":
            path.write_text(json.dumps({"provenance": origin, "config": config}, indent=2) + "\n")
        else:
            header = yaml.safe_dump({"provenance": origin}, sort_keys=False).splitlines()
            run = f"hps-finetune --config-dir {folder} --config-name {stem}"
            lines = [f"# Exported by hps export. Train the production model: {run}", *(f"# {h}" for h in header)]
            path.write_text("\n".join(lines) + "\n" + yaml.safe_dump(config, sort_keys=False))
        written.append(path)
    return written
