"""``hps compare``: every study of a storage (or those matching a pattern) side by side.

One row per study: dataset and model (the objective identity the sweeper stored), metric, best value,
trials complete / pruned / failed / interrupted (stopped or lost, and run again), the compute spent (sum of
the finished trials' wall times) and the compute pruning saved. The saving is an estimate: each pruned
trial's time scaled up to the number of evaluations a complete trial of the study made, minus the time it
did run. A plotly figure draws each study's best value so far against the compute spent so far, which is
how samplers and pruners should be compared (per trial counts hide that pruned trials are cheap).
"""

from __future__ import annotations

import csv
import fnmatch
import html
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from hps.search.errors import ConfigError
from hps.search.registry import study_models
from hps.search.report import html_page
from hps.search.storage import display_url, open_storage
from hps.search.study import IDENTITY, ranked_complete_trials, state_counts, study_names

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class StudyRow:
    study: str
    data: str
    model: str
    metric: str
    direction: str
    best: float | None
    best_trial: int | None
    complete: int
    pruned: int
    failed: int
    interrupted: int  # stopped by Ctrl-C or SIGTERM, or lost with their worker, and run again: not failures
    compute_s: float  # wall time of finished trials
    saved_s: float | None  # estimated; None when no trial completed (no full length to scale to)
    models: str  # production models trained from its trials, by registry id; * marks a promoted one


def select_studies(url: str, pattern: str | None) -> list[optuna.Study]:
    """The studies whose names match the shell-style ``pattern`` (all when None), oldest first."""
    names = study_names(url)
    chosen = [name for name in names if pattern is None or fnmatch.fnmatchcase(name, pattern)]
    if not chosen:
        raise ConfigError(f"no study in {display_url(url)} matches {pattern!r}; it holds: {', '.join(names)}")
    storage = open_storage(url, create=False)
    return [optuna.load_study(study_name=name, storage=storage) for name in chosen]


def seconds(trial: FrozenTrial) -> float:
    return trial.duration.total_seconds() if trial.duration else 0.0


def pruning_savings_s(trials: list[FrozenTrial]) -> float | None:
    """Estimated seconds pruning saved: each pruned trial scaled to a complete trial's evaluations."""
    full_length = [len(t.intermediate_values) for t in trials if t.state == TrialState.COMPLETE]
    if not full_length or not median(full_length):
        return None
    evaluations = median(full_length)
    return sum(
        seconds(t) * max(evaluations / len(t.intermediate_values) - 1, 0.0)
        for t in trials
        if t.state == TrialState.PRUNED and t.intermediate_values
    )


def study_row(study: optuna.Study) -> StudyRow:
    trials = study.get_trials(deepcopy=False)
    identity = study.user_attrs.get(IDENTITY, {})
    ranked = ranked_complete_trials(study)
    return StudyRow(
        study=study.study_name,
        data=str(identity.get("data", "")),
        model=str(identity.get("model", "")),
        metric=(study.metric_names or ["value"])[0],
        direction=study.direction.name.lower(),
        best=ranked[0].value if ranked else None,
        best_trial=ranked[0].number if ranked else None,
        **state_counts(study),
        compute_s=sum(seconds(t) for t in trials if t.state in FINISHED),
        saved_s=pruning_savings_s(trials),
        models=", ".join(f"{m.id}{'*' if m.promoted else ''} (trial {m.trial})" for m in study_models(study)),
    )


def best_so_far_by_compute(study: optuna.Study) -> tuple[list[float], list[float]]:
    """(compute spent in minutes, best value so far) after each finished trial, in the order they finished."""
    finished = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state in FINISHED and t.datetime_complete),
        key=lambda t: t.datetime_complete,
    )
    better = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    spent, best, xs, ys = 0.0, None, [], []
    for trial in finished:
        spent += seconds(trial) / 60
        if trial.state == TrialState.COMPLETE:
            best = trial.value if best is None else better(best, trial.value)
        if best is not None:
            xs.append(spent)
            ys.append(best)
    return xs, ys


def comparison_figure(studies: list[optuna.Study]) -> go.Figure:
    figure = go.Figure()
    for study in studies:
        xs, ys = best_so_far_by_compute(study)
        figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line_shape="hv", name=study.study_name))
    metrics = sorted({(s.metric_names or ["value"])[0] for s in studies})
    figure.update_layout(
        title="Best value so far against compute spent",
        xaxis_title="compute spent (minutes of trial wall time)",
        yaxis_title=" / ".join(metrics),
        legend_title_text="study",
    )
    return figure


def write_comparison(rows: list[StudyRow], figure: go.Figure, folder: Path) -> list[Path]:
    """``comparison.csv`` (the table) and ``comparison.html`` (table and figure, self-contained)."""
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "comparison.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(StudyRow.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    head = "".join(f"<th>{name}</th>" for name in StudyRow.__dataclass_fields__)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(value))}</td>" for value in asdict(row).values()) + "</tr>"
        for row in rows
    )
    page = folder / "comparison.html"
    plot = figure.to_html(full_html=False, include_plotlyjs=True, div_id="figure-comparison")
    page.write_text(
        html_page("Study comparison", f"<h1>Study comparison</h1><table><tr>{head}</tr>{body}</table>{plot}")
    )
    return [table, page]
