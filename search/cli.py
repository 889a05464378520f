"""``hps``: the platform's commands around studies (sweeps themselves run with ``hps-finetune -m``).

hps dashboard [--storage URL] [--host H] [--port P] [--artifact-dir DIR]
hps report    [--storage URL] [--study NAME | --all] [--png]
hps compare   [--storage URL] [--pattern GLOB]
hps export    [--storage URL] [--study NAME] [--top-k N | --trial N] [--format yaml|json]

Every command reads ``--storage`` (default: the sweeper's default, ``sqlite:///<studies>/hps.db``) and writes
below the studies folder (``HPS_STUDIES_DIR``, default ``studies``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

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
    return main


def main(argv: list[str] | None = None) -> None:
    arguments = parser().parse_args(argv)
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
    for row in rows:
        best = "-" if row.best is None else f"{row.best:.4f} ({row.best_trial})"
        saved = "-" if row.saved_s is None else f"{_duration(row.saved_s)} ({_share(row.saved_s, row.compute_s)})"
        cells = [row.study, row.data, row.model, row.metric, best, *(getattr(row, count) for count in counts)]
        table.add_row(*(escape(str(cell)) for cell in cells), _duration(row.compute_s), saved)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    for path in write_comparison(rows, comparison_figure(studies), folder):
        print(path)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def _share(saved: float, spent: float) -> str:
    """What the saving is as a share of what the study would have cost without pruning."""
    return f"{saved / (saved + spent):.0%}" if saved + spent else "0%"


if __name__ == "__main__":
    main()
