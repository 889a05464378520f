"""What ``hps check`` and ``hps retune`` show of the registry: a check in words, a model's checks over time as an
HTML page, and a study's production models in its optuna-dashboard note. Reads registry rows only: no model."""

from __future__ import annotations

import html
from pathlib import Path

import optuna

from hps.search.notes import record_models
from hps.search.registry import CheckEntry, ModelEntry, checks, checks_by_model, models
from hps.search.storage import open_storage, studies_dir


def describe(origin: ModelEntry, entry: CheckEntry) -> list[str]:
    """The check in a few lines, for people."""
    numbers = entry.numbers
    source = f"study {origin.study} trial {origin.trial}" if origin.study else "no study"
    lines = [f"model {origin.id} ({origin.lineage}; {source}) on {entry.data}: {entry.examples} examples, {entry.kind}"]
    if "metric" in numbers:
        m = numbers["metric"]
        lines.append(
            f"  {numbers['metric_name']} {m['value']:.4f} [{m['low']:.4f}, {m['high']:.4f}] against "
            f"{m['reference']:.4f} on its test split: difference {m['difference']:+.4f} [{m['difference_low']:+.4f},"
            f" {m['difference_high']:+.4f}]: {m['verdict']}"
        )
    d = numbers["drift"]
    lines.append(
        f"  drift: predicted labels p={d['predicted_labels']['p_value']:.3g} (total variation "
        f"{d['predicted_labels']['total_variation']:.3f}), confidence p={d['confidence']['p_value']:.3g} (mean "
        f"{d['confidence']['reference_mean']:.3f} -> {d['confidence']['new_mean']:.3f}), embeddings p="
        f"{d['embeddings']['p_value']:.3g} (MMD² {d['embeddings']['mmd2']:.4f}); each against {d['threshold']:.4g}: "
        f"{d['verdict']}"
    )
    action = "action needed" if entry.action_needed else "no action needed"
    lines.append(f"verdict: {entry.verdict}: {action} (check {entry.id}, stored in the registry)")
    return lines


def report_path(studies: Path, origin: ModelEntry) -> Path:
    """Where ``hps check --report`` writes the page of ``origin``'s checks: beside its lineage's production link."""
    return studies / origin.lineage / f"checks_model_{origin.id}.html"


def write_check_report(url: str, origin: ModelEntry, studies: Path) -> Path:
    """An HTML page of the model's checks over time: its metric with intervals against its test metric, and the
    drift tests' p-values against their threshold."""
    import plotly.graph_objects as go  # plotly: only for the page, not for each production training's note
    from plotly.subplots import make_subplots

    from hps.search.report import html_page

    stored = checks(url, origin.id)
    figure = make_subplots(rows=2, cols=1, subplot_titles=("metric on new data", "drift tests (p-value)"))
    labelled = [c for c in stored if "metric" in c.numbers]
    if labelled:
        values = [c.numbers["metric"] for c in labelled]
        figure.add_trace(
            go.Scatter(
                x=[c.created for c in labelled],
                y=[v["value"] for v in values],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [v["high"] - v["value"] for v in values],
                    "arrayminus": [v["value"] - v["low"] for v in values],
                },
                text=[f"check {c.id}: {c.verdict}<br>{c.data}" for c in labelled],
                mode="markers+lines",
                name=origin.metric,
            ),
            row=1,
            col=1,
        )
        if origin.test is not None:
            figure.add_hline(y=origin.test, line_dash="dot", annotation_text="test metric", row=1, col=1)
    drifts = [c for c in stored if "drift" in c.numbers]  # a re-tune's comparison has no drift tests
    for test in ("predicted_labels", "confidence", "embeddings"):
        figure.add_trace(
            go.Scatter(
                x=[c.created for c in drifts],
                y=[max(c.numbers["drift"][test]["p_value"], 1e-6) for c in drifts],
                text=[f"check {c.id}: {c.numbers['drift']['verdict']}<br>{c.data}" for c in drifts],
                mode="markers+lines",
                name=test.replace("_", " "),
            ),
            row=2,
            col=1,
        )
    if drifts:
        figure.add_hline(
            y=drifts[-1].numbers["drift"]["threshold"], line_dash="dot", annotation_text="threshold", row=2, col=1
        )
    figure.update_yaxes(type="log", row=2, col=1)
    figure.update_layout(height=800, title=f"model {origin.id} ({origin.lineage}): checks")
    rows = "".join(
        f"<tr><td>{c.id}</td><td>{c.created:%Y-%m-%d %H:%M}</td><td>{c.kind}</td><td>{c.examples}</td>"
        f"<td>{c.verdict}</td><td>{html.escape(c.data)}</td></tr>"
        for c in stored
    )
    head = "".join(f"<th>{name}</th>" for name in ("check", "time", "kind", "examples", "verdict", "data"))
    table = f"<table><tr>{head}</tr>{rows}</table>"
    path = report_path(studies, origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = figure.to_html(full_html=False, include_plotlyjs=True) + table
    path.write_text(html_page(f"Checks of model {origin.id}", body))
    return path


def note_models(url: str, study_name: str | None) -> None:
    """List the study's production models, their checks and reports in its dashboard note."""
    if study_name is None:
        return
    lines = ["", "### Production models", ""]
    stored_checks = checks_by_model(url)
    for entry in (e for e in models(url) if e.study == study_name):
        stored = stored_checks.get(entry.id, [])
        last = f"last {stored[-1].verdict} ({stored[-1].created:%Y-%m-%d})" if stored else "none yet"
        report = report_path(studies_dir(), entry)
        lines.append(
            f"- model {entry.id}{' (production)' if entry.promoted else ''}: trial {entry.trial}, test "
            f"{entry.metric} {entry.test}; `{entry.folder}`; checks: {len(stored)}, {last}"
            + (f"; report `{report.resolve()}`" if report.is_file() else "")
        )
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(url, create=False))
    except KeyError:  # the model's study is in another database: no note to add to
        return
    record_models(study, "\n".join(lines) + "\n")
