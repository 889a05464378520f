"""``hps``: the platform's commands around studies (sweeps themselves run with ``hps-finetune -m``).

hps export [--storage URL] [--study NAME] [--top-k N | --trial N] [--format yaml|json]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from search.errors import exit_on_config_error
from search.export import FORMATS, Selection, export


def studies_dir() -> Path:
    """Where studies live: ``HPS_STUDIES_DIR``, as in ``conf/paths/default.yaml``, else ``studies``."""
    return Path(os.environ.get("HPS_STUDIES_DIR", "studies"))


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="hps", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)
    export_command = commands.add_parser(
        "export", help="write the best trial's complete config, ready for production training"
    )
    export_command.add_argument("--storage", help="SQLAlchemy URL (default: sqlite:///<studies>/hps.db)")
    export_command.add_argument("--study", help="study name (default: the newest study in the storage)")
    choice = export_command.add_mutually_exclusive_group()
    choice.add_argument("--top-k", type=int, help="export the k best complete trials, one file each")
    choice.add_argument("--trial", type=int, help="export this trial (by number)")
    export_command.add_argument("--format", choices=FORMATS, default="yaml")
    return main


def main(argv: list[str] | None = None) -> None:
    arguments = parser().parse_args(argv)
    folder = studies_dir()
    with exit_on_config_error():
        storage = arguments.storage or f"sqlite:///{folder}/hps.db"
        selection = Selection(top_k=arguments.top_k, trial=arguments.trial)
        for path in export(storage, arguments.study, selection, arguments.format, folder):
            print(path)


if __name__ == "__main__":
    main()
