"""The README and docs/ as a newcomer reads them: every command they show composes, and every link leads somewhere.

Commands come from the ```bash / ```sh / ```shell / ```console blocks of README.md and docs/*.md, and from the lines
of untagged blocks and the inline code that start with one of our commands (a synopsis with ``[--flag X]`` or a
placeholder such as ``<study>`` or ``OVERRIDES`` is not a command). Each of ours is checked without running a trial:

* ``hps-finetune``, ``hps-synthetic``, ``hps-lcbench`` (and ``python -m hps.objectives.<task>``): the overrides are
  composed in-process with Hydra's compose API, as ``--cfg job`` would compose them. Hydra refuses ``--cfg`` with
  ``-m``, so a multirun is checked as the sweeper plans it: each combination of its experiment sweeps (``a,b``,
  ``choice``, ``range``) is composed, and every ``interval(...)`` parameter, ``hydra.sweeper.params`` entry and
  ``search_space`` entry must name a key of the composed config. An unknown key, group option or flag fails, and
  so does an unquoted parenthesis, which bash refuses.
* ``hps <command>``: the arguments are parsed by the real parser, :func:`hps.search.cli.parse_arguments`.
* ``python benchmarks/<script>.py``: the script exists.

Commands of other tools (pip, apt-get, sbatch, ...) are skipped by name (:data:`NOT_OURS`); any other command fails,
so a new one is either checked or listed there. A YAML block whose first line is ``# conf/<group>/<name>.yaml`` is
a config the docs ask the reader to write (``data=my_tickets``): it is put on Hydra's search path, so commands that
use it compose, and every key it offers must be one of the config it inherits. Where a doc needs an exported config
(``--config-dir studies/<study> --config-name best``), the test exports the default composition the way
``hps export`` writes a trial's config.

Links in README.md, docs/ and benchmarks/RESULTS.md must lead to a file and, with ``#anchor``, to a heading there;
pointers in comments and docstrings such as ``(benchmarks/RESULTS.md, "Search quality")`` must name a heading.
"""

from __future__ import annotations

import importlib.resources
import itertools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINKED = [*DOCS, REPO / "benchmarks" / "RESULTS.md"]
CONF = Path(str(importlib.resources.files("hps.conf")))

TASKS = {"hps-finetune": "finetune", "hps-synthetic": "synthetic", "hps-lcbench": "lcbench"}
MODULES = {f"hps.objectives.{task}": f"hps-{task}" for task in ("finetune", "synthetic", "lcbench")}
MODULES["hps.search.cli"] = "hps"
NOT_OURS = {
    *("apt-get", "pip", "pip3", "git", "psql", "sbatch", "scancel", "squeue", "nvidia-smi", "playwright"),
    *("export", "cd", "cat", "echo", "for", "done", "wait", "source", ".", "ls", "rm", "mkdir", "bash", "sh"),
}
NOT_OUR_MODULES = {"pytest", "venv", "pip"}
WRAPPERS = {"srun", "do", "then", "else", "time", "nohup", "!"}
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
OUR_INLINE = re.compile(
    r"^(hps-finetune|hps-synthetic|hps-lcbench|hps (dashboard|report|compare|export)|python -m hps\.)\b"
)
HYDRA_FLAGS_WITH_VALUE = {"--config-dir", "-cd", "--config-name", "-cn", "--cfg", "-c", "--package", "-p"}
HYDRA_FLAGS = {"-m", "--multirun", "--resolve"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class DocError(AssertionError):
    """A command or link of the docs that does not work as shown."""


@dataclass(frozen=True)
class Shown:
    """A command line as a doc shows it, and where."""

    file: str
    line: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


# --- finding what the docs show ------------------------------------------------------------------------------


def code_blocks(path: Path) -> list[tuple[str, int, list[str]]]:
    """Each fenced block of ``path``: its language, the line number of its first line, its lines."""
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fence = re.match(r"^\s*```(\S*)", line)
        if fence and language is None:
            language, start, lines = fence.group(1), number + 1, []
        elif fence:
            blocks.append((language, start, lines))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def is_ours(text: str) -> bool:
    """A command line of ours, not a synopsis (``[--flag X]``) or a line with a placeholder (``<study>``, ``ARGS``)."""
    placeholder = re.search(r"[\[<]|\.\.\.|(^|\s)[A-Z][A-Z_]+(\s|$)", text)
    return bool(OUR_INLINE.match(text)) and not placeholder


def shown_commands(path: Path) -> list[Shown]:
    """Every command line of ``path``: the lines of its shell blocks (continuations joined), and the lines of its
    other blocks and the inline code that start with a command of ours."""
    name = path.relative_to(REPO).as_posix()
    shown = []
    for language, start, lines in code_blocks(path):
        pending, first = "", 0
        for offset, line in enumerate(lines):
            if language == "console":
                if not line.startswith("$ ") and not pending:
                    continue  # output, not a command
                line = line.removeprefix("$ ")
            if not pending:
                first = start + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text = (pending + line).strip()
            pending = ""
            shell_line = language in SHELL_BLOCKS and text and not text.startswith("#")
            if shell_line or (not language and is_ours(text)):
                shown.append(Shown(name, first, text))
    in_block = False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if re.match(r"^\s*```", line):
            in_block = not in_block
        elif not in_block:
            shown += [Shown(name, number, span) for span in re.findall(r"`([^`]+)`", line) if is_ours(span)]
    return shown


def simple_commands(text: str) -> list[list[str]]:
    """The simple commands of a shell line: words split as bash splits them, at ; & && | || and newlines."""
    text = re.sub(r"\$\([^()]*\)", "SUBSTITUTED", text)  # $(cat file): its output is one word here
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, words = [], []
    try:
        tokens = list(lexer)
    except ValueError as error:
        raise DocError(f"{text!r}: the shell cannot split it ({error})") from None
    tokens_iter = iter(tokens)
    for token in tokens_iter:
        if token in (";", "&", "&&", "|", "||"):
            commands.append(words)
            words = []
        elif set(token) <= set("<>"):
            next(tokens_iter, None)  # a redirection and its target
        elif set(token) <= set("()"):  # a quoted parenthesis stays inside its word
            raise DocError(f"{text!r}: an unquoted parenthesis is a bash syntax error; quote the override")
        else:
            words.append(token)
    commands.append(words)
    return [words for words in commands if words]


# --- checking one command -------------------------------------------------------------------------------------


def doc_config_blocks() -> list[tuple[str, str, list[str]]]:
    """The configs the docs ask the reader to write, a yaml block whose first line is ``# conf/<path>.yaml``: where
    each is shown, its path under ``conf/``, and its lines."""
    found = []
    for path in DOCS:
        for language, start, lines in code_blocks(path):
            named = re.match(r"^#\s*conf/([\w/.-]+\.yaml)\s*$", lines[0]) if lines and language == "yaml" else None
            if named:
                found.append((f"{path.relative_to(REPO).as_posix()}:{start}", named.group(1), lines))
    return found


def doc_configs(tmp: Path) -> Path:
    """The configs the docs ask the reader to write, as a config folder for Hydra's search path."""
    tmp.mkdir(parents=True, exist_ok=True)
    for _, relative, lines in doc_config_blocks():
        (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp / relative).write_text("\n".join(lines) + "\n")
    return tmp


def exported_config_dir(tmp: Path, task: str) -> Path:
    """A folder holding ``best.yaml`` as ``hps export`` writes it: a trial's whole config, production switched on."""
    folder = tmp / "exported"
    if not (folder / "best.yaml").exists():
        folder.mkdir(parents=True, exist_ok=True)
        with initialize_config_module(config_module="hps.conf", version_base="1.3"):
            config = OmegaConf.to_container(compose(task), resolve=False)
        config["production"]["enabled"] = True
        config["hydra"] = {"run": {"dir": str(folder / "runs")}}
        (folder / "best.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def compose_task(task: str, overrides: list[str], searchpath: Path, config_dir: Path | None = None) -> DictConfig:
    """The config Hydra composes for ``task`` (or ``config_dir``'s config) with ``overrides``, hydra node included."""
    overrides = [f"hydra.searchpath=[file://{searchpath}]", *overrides]
    try:
        if config_dir is None:
            with initialize_config_module(config_module="hps.conf", version_base="1.3"):
                return compose(task, overrides=overrides, return_hydra_config=True)
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            return compose(task, overrides=overrides, return_hydra_config=True)
    except HydraException as error:
        raise DocError(f"{overrides[1:]}: {str(error).splitlines()[0]}") from None


def has_key(config: DictConfig, key: str) -> bool:
    """Whether ``key`` (dotted) is in ``config``, without resolving anything (``${oc.env:UNSET}`` is a key too)."""
    node = OmegaConf.to_container(config, resolve=False)
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def check_search_keys(config: DictConfig, parameters: list[str], parser: OverridesParser) -> None:
    """Every search parameter the study would get (command line, ``params``, ``search_space``) names a key."""
    sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=False)
    params = sweeper.get("params") or {}
    for key, value in params.items():
        try:
            parser.parse_override(f"{key}={value}")  # the Optuna sweeper's syntax, as the sweeper reads it
        except HydraException as error:
            raise DocError(f"hydra.sweeper.params: {str(error).splitlines()[0]}") from None
    space = OmegaConf.to_container(config, resolve=False).get("search_space") or {}
    entries = [entry for entry in space.values() if isinstance(entry, dict)]
    groups = [entry["group"] for entry in entries if "group" in entry]  # a config group's options: the sweeper checks
    keys = [*parameters, *params, *(entry["key"] for entry in entries if "key" in entry), *groups]
    missing = [key for key in keys if not has_key(config, key)]
    if missing:
        raise DocError(f"search parameters name keys the composed config does not have: {missing}")


def check_hydra_task(command: str, arguments: list[str], tmp: Path) -> None:
    task, multirun, config_dir, overrides = TASKS[command], False, None, []
    arguments = iter(arguments)
    for argument in arguments:
        flag, _, value = argument.partition("=") if argument.startswith("--") else (argument, "", "")
        if flag in HYDRA_FLAGS_WITH_VALUE:
            value = value or next(arguments, "")
            if flag in ("--config-dir", "-cd"):
                config_dir = value
            elif flag in ("--config-name", "-cn"):
                task = value
        elif flag in HYDRA_FLAGS:
            multirun = multirun or flag in ("-m", "--multirun")
        elif argument.startswith("-"):
            raise DocError(f"{command}: unknown flag {argument!r}")
        else:
            overrides.append(argument)
    folder = None
    if config_dir is not None:
        folder = REPO / config_dir
        if not (folder / f"{task}.yaml").exists():
            if not config_dir.startswith("studies/"):
                raise DocError(f"{command}: --config-dir {config_dir} has no {task}.yaml")
            folder = exported_config_dir(tmp, TASKS[command])  # written by `hps export` in the reader's clone
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except HydraException as error:
        raise DocError(f"{command}: {str(error).splitlines()[0]}") from None
    fixed, parameters, dimensions = [], [], []
    for override in parsed:
        if multirun and isinstance(override.value(), IntervalSweep):
            parameters.append(override.get_key_element())
        elif multirun and override.is_discrete_sweep():
            key = override.get_key_element()
            dimensions.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            fixed.append(override.input_line)
    searchpath = doc_configs(tmp / "conf")
    for combination in itertools.product(*dimensions):
        config = compose_task(task, [*fixed, *combination], searchpath, folder)
        check_overridden_keys(config, parsed)
        if multirun:
            check_search_keys(config, parameters, parser)


def check_overridden_keys(config: DictConfig, parsed: list) -> None:
    """A ``key=value`` override names a key of the composed config, also where a node is not in struct mode."""
    groups = set(config.hydra.runtime.choices)
    for override in parsed:
        key = override.get_key_element()
        if override.is_add() or override.is_force_add() or override.is_delete() or key in groups:
            continue
        if not re.search(r"[/@]", key) and not has_key(config, key):
            raise DocError(f"{override.input_line}: the composed config has no key {key!r}")


def check_hps(arguments: list[str]) -> None:
    from hps.search.cli import parse_arguments

    try:
        parse_arguments(arguments)
    except SystemExit as error:
        raise DocError(f"hps {shlex.join(arguments)}: the hps parser refuses it (exit status {error.code})") from None


def check_command(words: list[str], tmp: Path) -> None:
    """Check one simple command as the docs show it; raises :class:`DocError` where it would not work."""
    while words and (ENV_ASSIGNMENT.match(words[0]) or words[0] in WRAPPERS):
        words = words[1:]
    if not words:
        return
    command, arguments = Path(words[0]).name, words[1:]
    if command in ("python", "python3"):
        if arguments[:1] == ["-m"] and len(arguments) > 1:
            module = arguments[1]
            if module in NOT_OUR_MODULES:
                return
            if module not in MODULES:
                raise DocError(f"python -m {module}: not a module of ours, nor in NOT_OUR_MODULES")
            command, arguments = MODULES[module], arguments[2:]
        elif arguments and arguments[0].endswith(".py"):
            if not (REPO / arguments[0]).is_file():
                raise DocError(f"{arguments[0]} does not exist")
            return
        else:
            raise DocError(f"{shlex.join(words)}: a python command this test cannot check")
    if command in TASKS:
        check_hydra_task(command, arguments, tmp)
    elif command == "hps":
        check_hps(arguments)
    elif command not in NOT_OURS:
        raise DocError(f"{command}: not a command of ours, nor in NOT_OURS (add it there if it is another tool's)")


def check_line(text: str, tmp: Path) -> None:
    for words in simple_commands(text):
        check_command(words, tmp)


# --- the tests ------------------------------------------------------------------------------------------------

SHOWN = [shown for path in DOCS for shown in shown_commands(path)]


def test_the_docs_show_commands():
    assert len(SHOWN) > 40, [s.id for s in SHOWN]


@pytest.mark.parametrize("shown", SHOWN, ids=[s.id for s in SHOWN])
def test_every_shown_command_composes(shown, tmp_path):
    check_line(shown.text, tmp_path)


@pytest.mark.parametrize(
    "line, why",
    [
        ("hps-finetune training.no_such_key=1", "Could not override 'training.no_such_key'"),
        ("hps-finetune -m hydra/sweeper/sampler=bayes", "Could not find 'hydra/sweeper/sampler/bayes'"),
        ("hps-finetune -m data=sst2,no_such_data", "Could not find 'data/no_such_data'"),
        ("hps-finetune -m 'training.no_such_key=interval(0.1, 1.0)'", "no key 'training.no_such_key'"),
        ("hps-finetune -m '+search_space.x={key: training.nope, type: float, low: 0, high: 1}'", "['training.nope']"),
        ("hps-finetune -m training.max_grad_norm=interval(0.5, 2.0)", "unquoted parenthesis"),
        ("hps-finetune -m hydra.sweeper.no_such_setting=1", "no_such_setting"),
        ("hps-finetune --cfg-job", "unknown flag"),
        ("hps export --best", "the hps parser refuses it"),
        ("hps report --study a --all", "the hps parser refuses it"),
        ("python benchmarks/no_such_benchmark.py", "does not exist"),
        ("hps-tune -m", "not a command of ours"),
    ],
)
def test_the_check_refuses_what_would_not_work(line, why, tmp_path):
    with pytest.raises(DocError) as caught:
        check_line(line, tmp_path)
    assert why in str(caught.value)


def test_a_shown_multirun_composes_on_the_real_command_line_too(tmp_path):
    """The in-process check agrees with the console script: a multirun line of the README, run with ``--cfg job``."""
    line = next(s for s in SHOWN if s.file == "README.md" and "hydra/sweeper/pruner=" in s.text)
    arguments = [word for word in shlex.split(line.text, comments=True)[1:] if word != "-m"]
    env = os.environ | {"HPS_STUDIES_DIR": str(tmp_path)}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "hps-finetune"), *arguments, "--cfg", "job"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "name: tweet_eval_emotion" in result.stdout


DOC_CONFIGS = doc_config_blocks()


@pytest.mark.parametrize("where, relative, lines", DOC_CONFIGS, ids=[where for where, _, _ in DOC_CONFIGS])
def test_a_config_the_docs_ask_for_sets_only_keys_its_parent_has(where, relative, lines):
    """Hydra adds a key a config file sets; only the parent the recipe inherits says whether it means anything.
    Commented-out keys (``# encoding: cp1252``) are offered to the reader too, so they are checked as well."""
    content = yaml.safe_load("\n".join(lines))
    group = Path(relative).parent
    parents = [name for name in content.get("defaults", []) if isinstance(name, str) and name != "_self_"]
    assert parents, f"{where}: the recipe inherits no config of conf/{group}"
    known = set()
    for parent in parents:
        known |= set(yaml.safe_load((CONF / group / f"{parent}.yaml").read_text()))
    offered = set(content) | {m.group(1) for line in lines[1:] if (m := re.match(r"^#\s*([a-z_]+):\s", line))}
    assert offered - {"defaults"} <= known, (
        f"{where}: keys {sorted(offered - {'defaults'} - known)} are not in {parents}"
    )


# --- links and section pointers -------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but - and _ dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(path: Path) -> list[str]:
    text = re.sub(r"^\s*```.*?^\s*```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    return [match.group(1).strip() for match in re.finditer(r"^#{1,6}\s+(.+)$", text, flags=re.MULTILINE)]


def links(path: Path) -> list[tuple[int, str]]:
    found, in_block = [], False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if re.match(r"^\s*```", line):
            in_block = not in_block
        elif not in_block:
            found += [(number, target) for target in re.findall(r"\]\(([^)\s]+)\)", line)]
    return found


LINKS = [(path, number, target) for path in LINKED for number, target in links(path)]


@pytest.mark.parametrize("path, number, target", LINKS, ids=[f"{p.relative_to(REPO)}:{n}" for p, n, _ in LINKS])
def test_every_link_leads_to_a_file_and_section(path, number, target):
    if re.match(r"^[a-z]+:", target):
        return  # a web page
    file, _, anchor = target.partition("#")
    destination = (path.parent / file).resolve() if file else path
    assert destination.exists(), f"{path.name}:{number}: {file} does not exist"
    if anchor:
        anchors = {slug(heading) for heading in headings(destination)}
        assert anchor in anchors, f"{path.name}:{number}: no section #{anchor} in {file or path.name}"


POINTER = re.compile(r"\b(README(?:\.md)?|benchmarks/RESULTS\.md|docs/[\w.-]+\.md),\s*\"([^\"]+)\"")
POINTING = sorted(
    path
    for pattern in ("conf/**/*.yaml", "search/*.py", "objectives/*.py", "hps/*.py", "benchmarks/*", "docs/*.md")
    for path in REPO.glob(pattern)
    if path.is_file()
)
POINTERS = [
    (path, file, " ".join(section.split()))  # a pointer may wrap across comment or docstring lines
    for path in POINTING
    for file, section in POINTER.findall(re.sub(r"\n\s*#\s*", " ", path.read_text()))
]


@pytest.mark.parametrize("path, file, section", POINTERS, ids=[f"{p.relative_to(REPO)}:{s}" for p, _, s in POINTERS])
def test_every_pointer_to_a_section_names_one(path, file, section):
    """A comment's ``(benchmarks/RESULTS.md, "Search quality")`` names a section that is there."""
    target = REPO / ("README.md" if file == "README" else file)
    titles = [heading.replace("`", "") for heading in headings(target)]
    assert any(title.startswith(section) for title in titles), (
        f"{path.relative_to(REPO)}: no section {section!r} in {file}"
    )
