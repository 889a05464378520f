"""``hps report``: one self-contained HTML page per study with Optuna's plots, and PNGs where wanted.

The page holds the study's set-up (as the sweeper recorded it), its trial counts, the top trials, and
Optuna's plotly figures: optimization history, intermediate values (pruned curves dashed, so what the pruner
stopped is visible), parallel coordinate, parameter importances (fANOVA, seeded), slice, and a contour over
the two most important parameters. plotly.js is embedded, so the file opens offline and can be mailed.
A figure that the study cannot support yet (importances need two complete trials that differ) is replaced
by a line saying why. ``--png`` also writes each figure with Optuna's matplotlib backend.
"""

from __future__ import annotations

import html
import statistics
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import optuna
import optuna.visualization as plotly_plots
import optuna.visualization.matplotlib as matplotlib_plots
import plotly.graph_objects as go
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import TrialState

from hps.search.figures import save_figure
from hps.search.notes import SETUP
from hps.search.progress import format_value
from hps.search.registry import study_models
from hps.search.study import SEARCH_SPACE, ranked_complete_trials, state_counts

STATE_STYLE = {  # intermediate-value curves by how the trial ended
    TrialState.COMPLETE: ("complete", "#1f77b4", "solid"),
    TrialState.PRUNED: ("pruned", "#d62728", "dash"),
    TrialState.FAIL: ("failed", "#7f7f7f", "dot"),
    TrialState.RUNNING: ("running", "#2ca02c", "solid"),
}
MATPLOTLIB_DASH = {"solid": "-", "dash": "--", "dot": ":"}
FIGURES = ("history", "intermediate_values", "parallel_coordinate", "importances", "slice", "contour")


def _importances(study: optuna.Study) -> dict[str, float]:
    """Parameter importances (seeded fANOVA, so the page is reproducible); raises when they cannot be computed."""
    return optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))


def top_parameters(study: optuna.Study, count: int = 2) -> list[str]:
    """The ``count`` most important parameters; [] when importances cannot be computed yet."""
    try:
        return list(_importances(study))[:count]
    except (RuntimeError, ValueError):
        return []


def _figure_makers(study: optuna.Study, backend) -> dict[str, Callable[[], object]]:
    """Figure name -> a function drawing it with ``backend`` (plotly or matplotlib visualization module)."""
    contour_params = top_parameters(study)
    return {
        "history": lambda: backend.plot_optimization_history(study),
        "intermediate_values": lambda: backend.plot_intermediate_values(study),
        "parallel_coordinate": lambda: backend.plot_parallel_coordinate(study),
        "importances": lambda: backend.plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0)),
        "slice": lambda: backend.plot_slice(study),
        "contour": lambda: _contour(backend, study, contour_params),
    }


def _contour(backend, study: optuna.Study, params: list[str]) -> object:
    if len(params) < 2:
        raise ValueError("a contour needs two parameters with importances (at least 2 complete trials that differ)")
    return backend.plot_contour(study, params=params)


def _draw(make: Callable[[], object]) -> tuple[object | None, str | None]:
    """(figure, None), or (None, why) when the study cannot support the figure yet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-API and "too few trials" warnings: the page says why
        try:
            return make(), None
        except (RuntimeError, ValueError, ZeroDivisionError) as error:
            return None, str(error).splitlines()[0]


def report_figures(study: optuna.Study) -> dict[str, go.Figure | str]:
    """Each plotly figure of the report, or the reason it is missing."""
    figures: dict[str, go.Figure | str] = {}
    for name, make in _figure_makers(study, plotly_plots).items():
        figure, why = _draw(make)
        figures[name] = why if figure is None else figure
    if isinstance(figures["intermediate_values"], go.Figure):
        _style_curves_by_state(figures["intermediate_values"], study)
    return figures


def _curve_styles(study: optuna.Study) -> dict[str, tuple[int, str, str, str]]:
    """Optuna's curve label (``Trial3``) -> (trial number, state label, colour, plotly dash)."""
    return {
        f"Trial{t.number}": (t.number, *STATE_STYLE.get(t.state, ("other", "#bcbd22", "solid")))
        for t in study.get_trials(deepcopy=False)
    }


def _style_curves_by_state(figure: go.Figure, study: optuna.Study) -> None:
    """Colour and dash each trial's curve by its state, one legend entry per state (click to hide pruned)."""
    styles = _curve_styles(study)
    metric = (study.metric_names or ["value"])[0]
    shown: set[str] = set()
    for trace in figure.data:
        number, label, colour, dash = styles[trace.name]
        trace.update(
            name=label,
            legendgroup=label,
            showlegend=label not in shown,
            line={"color": colour, "dash": dash},
            marker={"color": colour},
            hovertemplate=f"trial {number} ({label})<br>step %{{x}}<br>{metric} %{{y}}<extra></extra>",
        )
        shown.add(label)
    figure.update_layout(showlegend=True, yaxis_title=metric, legend_title_text="trial state")


def _style_lines_by_state(axes, study: optuna.Study) -> None:
    """The same styling for Optuna's matplotlib plot of intermediate values."""
    styles = _curve_styles(study)
    handles = {}
    for line in axes.get_lines():
        _, label, colour, dash = styles[line.get_label()]
        line.set_color(colour)
        line.set_linestyle(MATPLOTLIB_DASH[dash])
        handles.setdefault(label, line)
    axes.legend(handles.values(), handles.keys(), title="trial state")
    axes.set_ylabel((study.metric_names or ["value"])[0])


def write_report(study: optuna.Study, folder: Path, png: bool = False) -> list[Path]:
    """Write ``report.html`` (and with ``png`` a ``report_png/`` folder) for ``study``; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    figures = report_figures(study)
    parts = [_header(study), _top_trials(study), _models(study), *_per_option_tables(study)]
    first_plot = True
    for name in FIGURES:
        figure = figures[name]
        parts.append(f"<h2>{name.replace('_', ' ')}</h2>")
        if isinstance(figure, str):
            parts.append(f'<p class="missing">Not drawn: {html.escape(figure)}</p>')
            continue
        parts.append(figure.to_html(full_html=False, include_plotlyjs=first_plot, div_id=f"figure-{name}"))
        first_plot = False
    page = folder / "report.html"
    page.write_text(html_page(f"Study {study.study_name}", "\n".join(parts)))
    written = [page]
    if png:
        written.extend(_write_pngs(study, folder / "report_png"))
    return written


def _write_pngs(study: optuna.Study, folder: Path) -> list[Path]:
    folder.mkdir(exist_ok=True)
    written = []
    for name, make in _figure_makers(study, matplotlib_plots).items():
        axes, _ = _draw(make)
        if axes is None:
            continue
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        if name == "intermediate_values":
            _style_lines_by_state(first, study)
        written.append(save_figure(first.figure, folder / f"{name}.png"))
    return written


def _header(study: optuna.Study) -> str:
    counts = state_counts(study)
    setup = study.user_attrs.get(SETUP, {})
    rows = "".join(f"<tr><th>{html.escape(key)}</th><td>{_cell(value)}</td></tr>" for key, value in setup.items())
    summary = ", ".join(f"{count} {state}" for state, count in counts.items())
    return f"<h1>Study {html.escape(study.study_name)}</h1><p>{len(study.trials)} trials: {summary}.</p>" + (
        f"<table class='setup'>{rows}</table>" if rows else "<p>No set-up recorded (not run by hps).</p>"
    )


def _cell(value: object) -> str:
    if isinstance(value, Mapping):
        return "<br>".join(f"<code>{html.escape(k)}</code> {html.escape(str(v))}" for k, v in value.items())
    return html.escape(str(value))


HARDWARE_ATTRS = ("device", "precision", "max_rss_mb", "cuda_peak_mb")  # user attributes fine-tuning records


def _top_trials(study: optuna.Study, limit: int = 10) -> str:
    """The best complete trials as a table: rank, trial, value, each parameter, seconds, and where each trained
    (device, precision, peak memory) when its objective recorded it."""
    ranked = ranked_complete_trials(study)[:limit]
    if not ranked:
        return "<h2>top trials</h2><p>No complete trial yet.</p>"
    metric = (study.metric_names or ["value"])[0]
    names = sorted({name for trial in ranked for name in trial.params})
    hardware = [key for key in HARDWARE_ATTRS if any(trial.user_attrs.get(key) is not None for trial in ranked)]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["rank", "trial", metric, *names, "seconds", *hardware])
    rows = []
    for rank, trial in enumerate(ranked, start=1):
        seconds = trial.duration.total_seconds() if trial.duration else float("nan")
        cells = [rank, trial.number, f"{trial.value:.4f}", *(format_value(trial.params.get(n)) for n in names)]
        cells += [f"{seconds:.1f}", *(format_value(trial.user_attrs.get(key)) for key in hardware)]
        rows.append("".join(f"<td>{html.escape(str(c))}</td>" for c in cells))
    body = "".join(f"<tr>{row}</tr>" for row in rows)
    return f"<h2>top trials</h2><table class='trials'><tr>{head}</tr>{body}</table>"


def _models(study: optuna.Study) -> str:
    """The production models trained from the study's trials, with their lineage (model -> trial -> data) and
    checks (docs/model-maintenance.md); nothing before the first."""
    entries = study_models(study)
    if not entries:
        return ""
    head = "".join(
        f"<th>{h}</th>" for h in ("model", "trial", "data (fingerprint)", "validation", "test", "parent", "promoted")
    )
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(cell))}</td>"
            for cell in (
                m.id,
                m.trial,
                f"{m.data} ({m.fingerprint[:8]}; {m.sizes.get('train')} train examples)",
                format_value(m.validation),
                format_value(m.test),
                "-" if m.parent is None else m.parent,
                "yes" if m.promoted else "",
            )
        )
        + "</tr>"
        for m in entries
    )
    return f"<h2>production models</h2><table class='trials'><tr>{head}</tr>{rows}</table>"


def group_parameters(study: optuna.Study) -> list[str]:
    """The study's parameters that chose a config group's option per trial (the model), from its stored space."""
    stored = study.user_attrs.get(SEARCH_SPACE) or {}
    return [name for name, parameter in stored.items() if isinstance(parameter, Mapping) and parameter.get("group")]


def per_option(study: optuna.Study, name: str) -> list[dict[str, object]]:
    """One row per option of group parameter ``name`` that trials ran: its trials by state, best and median value.

    Args:
        study: A single-objective study.
        name: A parameter of :func:`group_parameters`.
    """
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = [t for t in study.get_trials(deepcopy=False) if name in t.params]
    rows = []
    for option in sorted({t.params[name] for t in trials}, key=str):
        ran = [t for t in trials if t.params[name] == option]
        values = [t.value for t in ran if t.state == TrialState.COMPLETE and t.value is not None]
        states = [t.state for t in ran]
        rows.append(
            {
                name: option,
                "trials": len(ran),
                "complete": states.count(TrialState.COMPLETE),
                "pruned": states.count(TrialState.PRUNED),
                "failed": states.count(TrialState.FAIL),
                "best": (max(values) if maximize else min(values)) if values else None,
                "median": statistics.median(values) if values else None,
            }
        )
    return rows


def _per_option_tables(study: optuna.Study) -> list[str]:
    """A table per group parameter (``model``) whose trials ran more than one option: how each option did."""
    if len(study.directions) > 1:
        return []
    metric = (study.metric_names or ["value"])[0]
    tables = []
    for name in group_parameters(study):
        rows = per_option(study, name)
        if len(rows) < 2:
            continue
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in [name, "trials", "complete", "pruned", "failed"])
        head += f"<th>best {html.escape(metric)}</th><th>median {html.escape(metric)} (complete)</th>"
        cells = (_shown(value) for row in rows for value in row.values())
        width = len(rows[0])
        shown = [f"<td>{html.escape(cell)}</td>" for cell in cells]
        body = "".join(f"<tr>{''.join(shown[i : i + width])}</tr>" for i in range(0, len(shown), width))
        tables.append(f"<h2>by {html.escape(name)}</h2><table class='trials'><tr>{head}</tr>{body}</table>")
    return tables


def _shown(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def html_page(title: str, body: str) -> str:
    """A standalone HTML page with the reports' style."""
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "table.trials td{text-align:right}.missing{color:#888;font-style:italic}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )
