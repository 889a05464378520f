"""``hps``: the platform's commands around studies (sweeps themselves run with ``hps-finetune -m``).

hps dashboard [--storage URL] [--host H] [--port P] [--artifact-dir DIR]
hps report    [--storage URL] [--study NAME | --all] [--png]
hps compare   [--storage URL] [--pattern GLOB]
hps export    [--storage URL] [--study NAME] [--top-k N | --trial N] [--format yaml|json]
hps models    [--storage URL] [--lineage NAME]
hps check     MODEL --data CSV_OR_FOLDER [--json] [--report] [--alpha A] [--storage URL]
hps retune    MODEL --data FOLDER [--n-trials N] [--top-k K] [--storage URL] [-- OVERRIDE ...]

Every command reads ``--storage`` (default: the sweeper's default, ``sqlite:///<studies>/hps.db``) and writes
below the studies folder (``HPS_STUDIES_DIR``, default ``studies``). ``check`` and ``retune`` read the model's
own database (its ``provenance.json``) unless ``--storage`` says otherwise. ``check`` exits 1 when action is
needed (degraded or drift), 0 when not, 2 on bad input: ready for cron and CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hps.search.drift import ALPHA
from hps.search.errors import exit_on_config_error
from hps.search.export import FORMATS, Selection, export
from hps.search.storage import default_storage, studies_dir


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="hps", description=__doc__.splitlines()[0])
    storage = argparse.ArgumentParser(add_help=False)
    storage.add_argument("--storage", help="SQLAlchemy URL (default: sqlite:///<studies>/hps.db)")
    commands = main.add_subparsers(dest="command", required=True)

    dashboard = commands.add_parser("dashboard", parents=[storage], help="optuna-dashboard with trial artifacts")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default: localhost only)")
    dashboard.add_argument("--port", type=int, default=8080)
    dashboard.add_argument("--artifact-dir", type=Path, help="artifact folder (default: <studies>/artifacts)")

    report = commands.add_parser("report", parents=[storage], help="one self-contained HTML report per study")
    which = report.add_mutually_exclusive_group()
    which.add_argument("--study", help="study name (default: the newest study)")
    which.add_argument("--all", action="store_true", help="a report for every study in the storage")
    report.add_argument("--png", action="store_true", help="also write each figure as a PNG")

    compare = commands.add_parser("compare", parents=[storage], help="compare studies: table and plot")
    compare.add_argument("--pattern", help="only studies whose names match this shell pattern, e.g. 'smoke-*'")

    export_command = commands.add_parser(
        "export", parents=[storage], help="write the best trial's complete config, ready for production training"
    )
    export_command.add_argument("--study", help="study name (default: the newest study in the storage)")
    choice = export_command.add_mutually_exclusive_group()
    choice.add_argument("--top-k", type=int, help="export the k best complete trials, one file each")
    choice.add_argument("--trial", type=int, help="export this trial (by number)")
    export_command.add_argument("--format", choices=FORMATS, default="yaml")

    models_command = commands.add_parser(
        "models", parents=[storage], help="the registry: production models and lineage"
    )
    models_command.add_argument("--lineage", help="only this lineage's models")

    check_command = commands.add_parser("check", help="is a production model still good on new data?")
    check_command.add_argument("model", type=Path, help="a production run folder, or studies/<lineage>/production")
    check_command.add_argument("--data", type=Path, required=True, help="a CSV, labelled or not, or a data folder")
    check_command.add_argument("--json", action="store_true", help="print the stored check as JSON")
    check_command.add_argument("--report", action="store_true", help="write an HTML page of the model's checks")
    check_command.add_argument("--alpha", type=_probability, default=ALPHA, help="false-alarm rate of drift tests")
    check_command.add_argument("--storage", help="the registry's database (default: the model's provenance.json)")

    retune_command = commands.add_parser("retune", help="re-tune on new data; promote the new model if better")
    retune_command.add_argument("model", type=Path, help="a production run folder, or studies/<lineage>/production")
    retune_command.add_argument("--data", type=Path, required=True, help="a folder laid out as the model's data.dir")
    retune_command.add_argument("--n-trials", type=_positive, default=12, help="the re-tuning study's trials")
    retune_command.add_argument("--top-k", type=_positive, default=3, help="the old study's best trials run first")
    retune_command.add_argument("--storage", help="the registry's database (default: the model's provenance.json)")
    retune_command.epilog = "Overrides for the study and its training go after --, e.g. -- training.num_epochs=3"
    return main


def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text}; allowed: a number between 0 and 1")
    return value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text}; allowed: a whole number >= 1")
    return int(text)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """The command line parsed; what follows ``--`` is Hydra's overrides (``hps retune`` only), not ours."""
    cut = argv.index("--") if "--" in argv else len(argv)
    commands = parser()
    arguments = commands.parse_args(argv[:cut])
    arguments.overrides = argv[cut + 1 :]
    if arguments.overrides and arguments.command != "retune":
        commands.error(f"overrides after -- are for hps retune only, not hps {arguments.command}")
    return arguments


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    folder = studies_dir()
    storage = arguments.storage or default_storage()
    with exit_on_config_error():
        if arguments.command == "dashboard":
            from hps.search.dashboard import serve  # the commands' imports are heavy: load only the one run

            serve(storage, arguments.host, arguments.port, arguments.artifact_dir or folder / "artifacts")
        elif arguments.command == "report":
            _report(storage, arguments, folder)
        elif arguments.command == "compare":
            _compare(storage, arguments.pattern, folder)
        elif arguments.command == "models":
            _models(storage, arguments.lineage)
        elif arguments.command == "check":
            _check(arguments)
        elif arguments.command == "retune":
            _retune(arguments)
        else:
            selection = Selection(top_k=arguments.top_k, trial=arguments.trial)
            for path in export(storage, arguments.study, selection, arguments.format, folder):
                print(path)


def _report(storage: str, arguments: argparse.Namespace, folder: Path) -> None:
    from hps.search.report import write_report
    from hps.search.study import load_study, study_names

    names = study_names(storage) if arguments.all else [load_study(storage, arguments.study).study_name]
    for name in names:
        for path in write_report(load_study(storage, name), folder / name, png=arguments.png):
            print(path)


def _compare(storage: str, pattern: str | None, folder: Path) -> None:
    from hps.search.compare import comparison_figure, select_studies, study_row, write_comparison

    studies = select_studies(storage, pattern)
    rows = [study_row(study) for study in studies]
    table = Table(title=f"{len(rows)} studies")
    counts = ("complete", "pruned", "failed", "interrupted")
    for column in ("study", "data", "model", "metric", "best (trial)", *counts):
        table.add_column(column, justify="right" if column in counts else "left")
    table.add_column("compute", justify="right")
    table.add_column("saved by pruning", justify="right")
    table.add_column("models")
    for row in rows:
        best = "-" if row.best is None else f"{row.best:.4f} ({row.best_trial})"
        saved = "-" if row.saved_s is None else f"{_duration(row.saved_s)} ({_share(row.saved_s, row.compute_s)})"
        cells = [row.study, row.data, row.model, row.metric, best, *(getattr(row, count) for count in counts)]
        table.add_row(*(escape(str(cell)) for cell in cells), _duration(row.compute_s), saved, row.models or "-")
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    for path in write_comparison(rows, comparison_figure(studies), folder):
        print(path)


def _models(storage: str, lineage: str | None) -> None:
    from hps.search.registry import checks_by_model, models

    table = Table(title="production models (lineage: model -> study -> trial -> data)")
    for column in (
        "model",
        "lineage",
        "from",
        "data (fingerprint)",
        "sizes",
        "validation",
        "test",
        "checks",
        "trained",
    ):
        table.add_column(column, no_wrap=column in ("model", "from", "checks"))  # the lineage reads on one line
    stored_checks = checks_by_model(storage)
    for entry in models(storage, lineage):
        stored = stored_checks.get(entry.id, [])
        origin = f"{entry.study} #{entry.trial}" if entry.study else "-"
        if entry.parent is not None:
            origin += f" (re-tune of {entry.parent})"
        sizes = "/".join(str(entry.sizes.get(split, 0)) for split in ("train", "validation", "test"))
        cells = [
            f"{entry.id}{' *' if entry.promoted else ''}",
            entry.lineage,
            origin,
            f"{entry.data} ({entry.fingerprint[:8]})",
            sizes,
            _value(entry.validation),
            _value(entry.test),
            f"{len(stored)}, last {stored[-1].verdict}" if stored else "0",
            f"{entry.created:%Y-%m-%d %H:%M}",
        ]
        table.add_row(*(escape(str(cell)) for cell in cells))
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    print("* promoted: studies/<lineage>/production points at it; sizes: train/validation/test examples")


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _check(arguments: argparse.Namespace) -> None:
    from hps.objectives.checks import check, open_model  # runs the model: transformers, loaded only here
    from hps.search.check_report import describe, note_models, write_check_report

    production = open_model(arguments.model, arguments.storage)
    entry = check(production, arguments.data, alpha=arguments.alpha)
    report = write_check_report(production.url, production.entry, studies_dir()) if arguments.report else None
    note_models(production.url, production.entry.study)
    if arguments.json:
        print(json.dumps(vars(entry) | {"report": str(report) if report else None}, default=str, indent=2))
    else:
        print("\n".join(describe(production.entry, entry)))
        if report:
            print(report)
    raise SystemExit(1 if entry.action_needed else 0)


def _retune(arguments: argparse.Namespace) -> None:
    from hps.objectives.checks import open_model
    from hps.objectives.retune import retune
    from hps.search.check_report import note_models

    production = open_model(arguments.model, arguments.storage)
    outcome = retune(production, arguments.data, arguments.n_trials, arguments.top_k, arguments.overrides)
    note_models(production.url, production.entry.study)
    note_models(production.url, outcome.study)
    print(outcome.reason)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def _share(saved: float, spent: float) -> str:
    """What the saving is as a share of what the study would have cost without pruning."""
    return f"{saved / (saved + spent):.0%}" if saved + spent else "0%"


if __name__ == "__main__":
    main()
