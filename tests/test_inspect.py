"""Inspecting studies: trial artifacts and notes, the HTML report, the comparison, and the dashboard in a browser."""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import optuna_dashboard
import plotly.graph_objects as go
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hps.objectives.metrics import metric_function
from hps.search._compat import trial_id
from hps.search.artifacts import artifact_store, attached_files
from hps.search.cli import main as hps
from hps.search.compare import best_so_far_by_compute, select_studies, study_row
from hps.search.notes import SETUP
from hps.search.report import FIGURES, report_figures, write_report
from hps.search.storage import RETRY_OF
from hps.search.study import INTERRUPTED
from hps.search.trial import record
from tests.conftest import REPO, run_cli
from tests.test_storage_and_study import damaged_study, digest

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("HPS_SCREENSHOT_DIR", REPO / "studies" / "screenshots"))
ATTACHED = {"learning_curve.png", "learning_curve.csv", "confusion_matrix.png", "confusion_matrix.csv", "config.yaml"}


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """A smoke study of 8 trials, some pruned, each with its files attached; returns its studies folder."""
    studies = tmp_path_factory.mktemp("inspect") / "studies"
    result = run_cli("-m", "experiment=smoke", "training.num_epochs=2", studies=studies)
    assert result.returncode == 0, result.stderr
    return studies


def smoke(studies: Path) -> optuna.Study:
    return optuna.load_study(study_name="smoke", storage=f"sqlite:///{studies}/hps.db")


def test_every_trial_has_its_curve_confusion_matrix_and_config_attached(swept):
    study = smoke(swept)
    store = artifact_store(swept / "artifacts")
    states = {t.state for t in study.trials}
    assert {TrialState.COMPLETE, TrialState.PRUNED} <= states
    for trial in study.trials:
        files = attached_files(study, trial)
        assert set(files) == ATTACHED, trial.number

        rows = list(csv.DictReader(io.StringIO(_download(store, files["learning_curve.csv"]).decode())))
        curve = record(trial, "curve")
        assert [int(r["step"]) for r in rows] == [p["step"] for p in curve] == sorted(trial.intermediate_values)
        assert [float(r["macro_f1"]) for r in rows] == [trial.intermediate_values[p["step"]] for p in curve]

        matrix = list(csv.reader(io.StringIO(_download(store, files["confusion_matrix.csv"]).decode())))
        assert matrix[0] == ["true \\ predicted", "anger", "joy", "optimism", "sadness"]
        counts = [[int(c) for c in row[1:]] for row in matrix[1:]]
        assert sum(map(sum, counts)) == 374  # every validation tweet, at the trial's last evaluation
        pairs = [
            (true, predicted) for true, row in enumerate(counts) for predicted, n in enumerate(row) for _ in range(n)
        ]
        labels, predictions = zip(*pairs, strict=True)
        last = trial.intermediate_values[max(trial.intermediate_values)]
        assert metric_function("macro_f1")(list(labels), list(predictions)) == pytest.approx(last, abs=1e-12)

        assert _download(store, files["learning_curve.png"]).startswith(b"\x89PNG")
        assert b"learning_rate: " + repr(trial.params["learning_rate"]).encode() in _download(
            store, files["config.yaml"]
        )


def _download(store, artifact_id: str) -> bytes:
    with store.open_reader(artifact_id) as reader:
        return reader.read()


def test_study_and_trial_notes_say_what_ran_and_how_it_ended(swept):
    study = smoke(swept)
    setup = study.user_attrs[SETUP]
    assert setup["objective"] == "maximize macro_f1"
    assert setup["data"] == "tweet_eval_emotion" and setup["model"] == "tiny-bert-random"
    assert setup["search space"]["freeze_layers"] == "training.freeze_layers: int in [0, 2]"
    assert setup["sampler"] == "RandomSampler(seed=0)"
    assert setup["pruner"].startswith("MedianPruner(n_startup_trials=2, n_warmup_steps=0")
    assert setup["budget"] == "8 trials"
    assert optuna_dashboard.get_note(study).startswith("## smoke\n\n- **objective**: maximize macro_f1")
    for trial in study.trials:
        note = optuna_dashboard.get_note(optuna.Trial(study, trial_id(trial)))
        if trial.state == TrialState.PRUNED:
            last = max(trial.intermediate_values)
            count = len(trial.intermediate_values)
            assert note.startswith(f"**pruned** at step {last} ({count} evaluation{'s' if count > 1 else ''})")
        else:
            assert note.startswith(f"**complete**: macro_f1 {trial.value:.4f} after 8 evaluations")
        where = (
            f" s on cpu in {trial.user_attrs['precision']}, peak memory {trial.user_attrs['max_rss_mb']:.0f} MB host."
        )
        assert where in note and trial.user_attrs["precision"] in ("fp32", "bf16")


def test_report_command_writes_a_self_contained_page_with_the_pruned_curves(swept, monkeypatch):
    monkeypatch.setenv("HPS_STUDIES_DIR", str(swept))
    hps(["report", "--png"])
    page = (swept / "smoke" / "report.html").read_text()
    assert "<script src=" not in page and "Plotly.newPlot" in page  # plotly.js embedded: works offline
    assert 'id="figure-intermediate_values"' in page and '"name":"pruned"' in page and '"dash":"dash"' in page
    assert (swept / "smoke" / "report_png" / "intermediate_values.png").read_bytes().startswith(b"\x89PNG")
    assert "<th>device</th><th>precision</th><th>max_rss_mb</th></tr>" in page  # no GPU: no cuda_peak_mb column
    assert "<td>cpu</td>" in page


@pytest.fixture(scope="module")
def synthetic() -> optuna.Study:
    """A study with pruned trials and parameters that matter, made in milliseconds."""

    def objective(trial: optuna.Trial) -> float:
        rate = trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
        layers = trial.suggest_int("freeze_layers", 0, 6)
        quality = 0.9 - 0.05 * abs(math.log10(rate) + 3.5) - 0.02 * layers
        for step in range(1, 9):
            value = quality * (1 - math.exp(-step / 3))
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned
        return value

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=1),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3),
    )
    study.optimize(objective, n_trials=20)
    return study


def test_report_figures_hold_every_trial(synthetic, tmp_path):
    figures = report_figures(synthetic)
    assert all(isinstance(figures[name], go.Figure) for name in FIGURES)  # none replaced by a reason
    by_state = {t.number: t.state for t in synthetic.trials}
    curves = figures["intermediate_values"].data
    assert len(curves) == len(synthetic.trials)
    pruned = [t for t in synthetic.trials if t.state == TrialState.PRUNED]
    assert pruned
    for curve in curves:
        number = int(curve.hovertemplate.split()[1])
        trial = synthetic.trials[number]
        assert list(curve.y) == [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)]
        assert curve.name == ("pruned" if by_state[number] == TrialState.PRUNED else "complete")
        assert curve.line.dash == ("dash" if by_state[number] == TrialState.PRUNED else "solid")
    history = figures["history"].data[0]
    complete = [t for t in synthetic.trials if t.state == TrialState.COMPLETE]
    assert list(history.y) == [t.value for t in complete]
    contour_axes = {figures["contour"].layout.xaxis.title.text, figures["contour"].layout.yaxis.title.text}
    assert contour_axes == {"learning_rate", "freeze_layers"}

    page = write_report(synthetic, tmp_path)[0].read_text()
    best = synthetic.best_trial
    assert f"<td>1</td><td>{best.number}</td><td>{best.value:.4f}</td>" in page
    for name in FIGURES:
        assert f'id="figure-{name}"' in page


def test_a_figure_the_study_cannot_support_yet_says_why(tmp_path):
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(params={"x": 1.0}, distributions={"x": FloatDistribution(0, 2)}, value=1))
    page = write_report(study, tmp_path)[0].read_text()
    assert 'id="figure-history"' in page
    assert "Not drawn: a contour needs two parameters" in page


T0 = datetime.datetime(2026, 1, 1, 12, 0, 0)


def _trial(
    state: TrialState, start_s: float, seconds: float, curve: list[float], rate: float, **user_attrs: object
) -> optuna.trial.FrozenTrial:
    return optuna.trial.FrozenTrial(
        number=0,
        state=state,
        value=curve[-1] if state == TrialState.COMPLETE else None,
        values=None,
        datetime_start=T0 + datetime.timedelta(seconds=start_s),
        datetime_complete=T0 + datetime.timedelta(seconds=start_s + seconds),
        params={"learning_rate": rate},
        distributions={"learning_rate": FloatDistribution(1e-5, 1e-2, log=True)},
        user_attrs=user_attrs,
        system_attrs={},
        intermediate_values={step: v for step, v in enumerate(curve, start=1)},
        trial_id=0,
    )


def _build_studies(url: str) -> None:
    first = optuna.create_study(study_name="sst2-tpe", storage=url, direction="maximize")
    first.set_user_attr("objective_identity", {"data": "sst2", "model": "minilm"})
    first.set_metric_names(["accuracy"])
    for trial in [
        _trial(TrialState.COMPLETE, 0, 40, [0.6, 0.7, 0.8, 0.85], 1e-4),
        _trial(TrialState.PRUNED, 40, 10, [0.5], 1e-2),  # 1 of 4 evaluations: would have cost 30 s more
        _trial(TrialState.COMPLETE, 50, 60, [0.6, 0.7, 0.8, 0.9], 3e-4),
        _trial(TrialState.PRUNED, 110, 20, [0.5, 0.55], 1e-5),  # 2 of 4: 20 s more
        _trial(TrialState.FAIL, 130, 5, [0.1], 5e-3),
        _trial(TrialState.FAIL, 135, 3, [0.2], 2e-3, **{INTERRUPTED: True}),  # Ctrl-C: not a failure
        _trial(TrialState.FAIL, 138, 2, [0.3], 1e-3),  # its worker was lost, and it is queued again below
    ]:
        first.add_trial(trial)
    first.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params={"learning_rate": 1e-3},
            distributions={"learning_rate": FloatDistribution(1e-5, 1e-2, log=True)},
            user_attrs={RETRY_OF: 6},
        )
    )
    second = optuna.create_study(study_name="trec-random", storage=url, direction="minimize")
    second.set_user_attr("objective_identity", {"data": "trec", "model": "minilm"})
    second.add_trial(_trial(TrialState.PRUNED, 0, 12, [0.4], 1e-3))  # no complete trial: saving unknown


def test_comparison_rows_match_the_database(tmp_path):
    database = tmp_path / "hps.db"
    url = f"sqlite:///{database}"
    _build_studies(url)
    rows = {row.study: row for row in map(study_row, select_studies(url, None))}
    tpe = rows["sst2-tpe"]
    assert (tpe.data, tpe.model, tpe.metric, tpe.direction) == ("sst2", "minilm", "accuracy", "maximize")
    assert (tpe.best, tpe.best_trial) == (0.9, 2)
    assert (tpe.complete, tpe.pruned, tpe.failed, tpe.interrupted) == (2, 2, 1, 2)
    assert tpe.compute_s == 140.0 and tpe.saved_s == 50.0
    trec = rows["trec-random"]
    assert (trec.best, trec.pruned, trec.compute_s, trec.saved_s) == (None, 1, 12.0, None)

    # The same numbers straight from the tables Optuna writes.
    with sqlite3.connect(database) as connection:
        query = (
            "SELECT s.study_name, t.state, COUNT(*), SUM((julianday(t.datetime_complete) - "
            "julianday(t.datetime_start)) * 86400) FROM trials t JOIN studies s USING (study_id) "
            "WHERE t.datetime_complete IS NOT NULL GROUP BY 1, 2"
        )
        stored = {(name, state): (count, seconds) for name, state, count, seconds in connection.execute(query)}
    for name, row in rows.items():
        for state, count in (
            ("COMPLETE", row.complete),
            ("PRUNED", row.pruned),
            ("FAIL", row.failed + row.interrupted),  # both stored as FAIL
        ):
            assert stored.get((name, state), (0, 0))[0] == count
        assert sum(seconds for (study, _), (_, seconds) in stored.items() if study == name) == pytest.approx(
            row.compute_s, abs=1e-3
        )

    xs, ys = best_so_far_by_compute(select_studies(url, "sst2-*")[0])
    assert [round(x * 60) for x in xs] == [40, 50, 110, 130, 135, 138, 140]  # minutes -> seconds
    assert ys == [0.85, 0.85, 0.9, 0.9, 0.9, 0.9, 0.9]


def test_compare_command_prints_the_table_and_writes_csv_and_plot(tmp_path, monkeypatch, capsys):
    studies = tmp_path / "studies"
    studies.mkdir()
    _build_studies(f"sqlite:///{studies}/hps.db")
    monkeypatch.setenv("HPS_STUDIES_DIR", str(studies))
    hps(["compare", "--pattern", "sst2-*"])
    out = capsys.readouterr().out
    assert "sst2-tpe" in out and "trec-random" not in out
    assert "0.9000 (2)" in out and "2.3 min" in out and "50.0 s (26%)" in out
    assert "┃ interrupted ┃" in out and "│        2 │      2 │      1 │           2 │" in out
    rows = list(csv.DictReader((studies / "comparison.csv").open()))
    assert [(r["study"], r["complete"], r["pruned"], r["failed"], r["interrupted"], r["saved_s"]) for r in rows] == [
        ("sst2-tpe", "2", "2", "1", "2", "50.0")
    ]
    page = (studies / "comparison.html").read_text()
    assert 'id="figure-comparison"' in page and "sst2-tpe" in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "--study", "nope"], "error: no study 'nope' in sqlite:///"),
        (["compare", "--pattern", "nope*"], "error: no study in sqlite:///"),
        (
            ["report", "--storage", "sqlite:////nonexistent/x.db"],
            "error: storage 'sqlite:////nonexistent/x.db': no such",
        ),
    ],
)
def test_inspection_errors_are_one_line(swept, monkeypatch, capsys, args, message):
    monkeypatch.setenv("HPS_STUDIES_DIR", str(swept))
    with pytest.raises(SystemExit) as stopped:
        hps(args)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(message) and error.count("\n") == 1
    assert not Path("/nonexistent").exists()


def test_compare_refuses_a_damaged_database_in_one_line(tmp_path, capsys):
    database = tmp_path / "hps.db"
    url = damaged_study(database)
    before = digest(database)
    with pytest.raises(SystemExit) as stopped:
        hps(["compare", "--storage", url])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: storage '{url}': the database file is damaged (SQLite's integrity check: Page ")
    assert error.count("\n") == 1 and "restore it from a backup" in error
    assert digest(database) == before


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_dashboard_refuses_a_port_out_of_range_in_one_line(port, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        hps(["dashboard", "--storage", f"sqlite:///{tmp_path}/none.db", "--port", port])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"error: --port is {port}; allowed: 0..65535 (0: any free port)\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_dashboard(studies: Path, port: int) -> subprocess.Popen:
    command = [str(Path(sys.executable).parent / "hps"), "dashboard", "--port", str(port)]
    env = os.environ | {"HPS_STUDIES_DIR": str(studies)}
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            assert server.poll() is None, server.communicate()
            time.sleep(0.2)
    server.kill()
    raise AssertionError("the dashboard did not start listening within 30 s")


def test_dashboard_refuses_a_port_in_use(swept, monkeypatch, capsys):
    monkeypatch.setenv("HPS_STUDIES_DIR", str(swept))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SystemExit) as stopped:
            hps(["dashboard", "--port", str(taken.getsockname()[1])])
    assert stopped.value.code == 2
    assert "is in use; choose another with --port" in capsys.readouterr().err


def test_dashboard_on_port_0_listens_on_a_free_port_and_names_it(swept):
    command = [str(Path(sys.executable).parent / "hps"), "dashboard", "--port", "0"]
    env = os.environ | {"HPS_STUDIES_DIR": str(swept), "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        started = server.stderr.readline()
        port = int(started.split("http://127.0.0.1:")[1].split("/")[0])
        assert port > 0, started
        with optuna_dashboard_client(port, "/api/studies/1") as body:
            assert len(json.loads(body)["trials"]) == len(smoke(swept).trials)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_dashboard_serves_the_study_and_trial_files(swept):
    port = _free_port()
    server = _start_dashboard(swept, port)
    try:
        study = smoke(swept)
        with optuna_dashboard_client(port, "/api/studies/1") as body:
            served = json.loads(body)
        assert [t["state"] for t in served["trials"]] == [t.state.name.capitalize() for t in study.trials]
        trial = served["trials"][0]
        (curve,) = [a for a in trial["artifacts"] if a["filename"] == "learning_curve.png"]
        with optuna_dashboard_client(port, f"/artifacts/1/{trial['trial_id']}/{curve['artifact_id']}") as body:
            assert body.startswith(b"\x89PNG")
    finally:
        server.terminate()
        server.wait(timeout=10)


class optuna_dashboard_client:
    """GET ``path`` from the dashboard on ``port``; the body as bytes."""

    def __init__(self, port: int, path: str) -> None:
        from urllib.request import urlopen

        self._response = urlopen(f"http://127.0.0.1:{port}{path}", timeout=30)

    def __enter__(self) -> bytes:
        return self._response.read()

    def __exit__(self, *exc: object) -> None:
        self._response.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)")
def test_dashboard_in_a_browser_shows_pruned_trials_and_their_artifacts(swept):
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e .[test])"
    )
    study = smoke(swept)
    pruned = next(t for t in study.trials if t.state == TrialState.PRUNED)
    port = _free_port()
    server = _start_dashboard(swept, port)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            page.goto(f"http://127.0.0.1:{port}/dashboard/studies/1/trials", wait_until="networkidle")
            page.get_by_text(f"Trial {pruned.number}", exact=True).click()
            heading = page.get_by_role("heading", name=f"Trial {pruned.number} (trial_id={trial_id(pruned)})")
            heading.wait_for(timeout=15000)
            n_pruned = sum(t.state == TrialState.PRUNED for t in study.trials)
            assert page.get_by_text("Pruned", exact=True).count() == n_pruned + 1  # the list, and this trial
            assert page.locator("strong", has_text="pruned").count() == 1  # its note, rendered from Markdown
            for image in ("learning_curve.png", "confusion_matrix.png"):  # previews, served by the dashboard
                page.locator(f"img[alt='{image}']").wait_for(timeout=15000)
                assert page.locator(f"img[alt='{image}']").evaluate("img => img.naturalWidth") > 100
            for name in ATTACHED:
                assert page.get_by_text(name, exact=True).count() == 1, name
            page.locator("img[alt='learning_curve.png']").scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOTS / "dashboard_pruned_trial.png"))
            page.goto(f"http://127.0.0.1:{port}/dashboard/studies/1", wait_until="networkidle")
            page.get_by_text("Intermediate values").first.wait_for(timeout=15000)
            page.screenshot(path=str(SCREENSHOTS / "dashboard_study.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert (SCREENSHOTS / "dashboard_pruned_trial.png").stat().st_size > 10_000
