"""Live progress of a study and of its running trial, and the closing table of top trials.

A :class:`StudyView` shows two rows while a study runs: the study (trials done of the budget, best value so
far, pruned, failed and interrupted counts) and the running trial (training step, epoch, loss, latest metric).
The training loop writes its row through :func:`training_progress`, which joins the active study view when the
trial runs in the sweeper's process and otherwise opens a row of its own (one-off training, or a launcher
that runs jobs elsewhere). Each finished trial leaves one line in the scrollback; where the output is not a
terminal, so does each evaluation.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from hps.search.study import counted_trials, ranked_complete_trials, state_counts

# Logs (not a terminal) get wide lines rather than rich's 80-column default, so tables are not truncated.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_active_view: StudyView | None = None


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    )


class TrainingProgress:
    """The row of one training run: step of total, epoch, running loss, latest validation metric.

    Where the output is not a terminal (a log file, a pipe, a scheduler's job output) no row is drawn, so each
    evaluation prints a line instead: a redirected sweep or training run says what it is doing.
    """

    def __init__(self, progress: Progress, task: TaskID, description: str) -> None:
        self._progress, self._task, self._description = progress, task, description
        self._epoch = self._epochs = self._evaluations = 0
        self._loss: float | None = None
        self._metric: tuple[str, float] | None = None

    def start(self, total_steps: int, epochs: int, evaluations: int) -> None:
        self._epochs, self._evaluations = epochs, evaluations
        self._progress.reset(self._task, total=total_steps, completed=0, info="")

    def step(self, step: int, epoch: int, loss: float) -> None:
        self._epoch, self._loss = epoch, loss
        self._progress.update(self._task, completed=step, info=self._info())

    def evaluated(self, name: str, value: float, evaluation: int) -> None:
        """Show the metric of evaluation number ``evaluation`` (of the ``evaluations`` given to :meth:`start`)."""
        self._metric = (name, value)
        self._progress.update(self._task, info=self._info())
        if not self._progress.console.is_terminal:
            self._progress.console.print(
                f"{self._description} · evaluation {evaluation}/{self._evaluations} · {self._info()}",
                highlight=False,
                markup=False,
            )

    def _info(self) -> str:
        parts = [f"epoch {self._epoch}/{self._epochs}"]
        if self._loss is not None:
            parts.append(f"loss {self._loss:.4g}")
        if self._metric is not None:
            parts.append(f"{self._metric[0]} {self._metric[1]:.4f}")
        return " · ".join(parts)


@contextmanager
def training_progress(description: str) -> Iterator[TrainingProgress]:
    """A progress row for one training run: inside the active study view, or standalone.

    Args:
        description: The row's label (``trial 7``, ``training``).
    """
    if _active_view is not None:
        progress = _active_view.progress
        task = progress.add_task(description, total=None, info="")
        try:
            yield TrainingProgress(progress, task, description)
        finally:
            progress.remove_task(task)
        return
    with _progress() as progress:
        yield TrainingProgress(progress, progress.add_task(description, total=None, info=""), description)


class StudyView:
    """The live view of one study; use as a context manager around its trial loop.

    Args:
        study: The study whose trials run.
        n_trials: Its budget, the row's total.
        done: Trials already done (a resumed study), where the row starts.
        metric: The metric's name, as the row and each finished trial's line show it.
    """

    def __init__(self, study: optuna.Study, n_trials: int, done: int, metric: str) -> None:
        self.study, self.metric = study, metric
        self.progress = _progress()
        self._row = self.progress.add_task(f"study {escape(study.study_name)}", total=n_trials, info="")
        self.refresh(done)

    def __enter__(self) -> StudyView:
        global _active_view
        self.progress.start()
        _active_view = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _active_view
        _active_view = None
        self.progress.stop()

    def refresh(self, done: int) -> None:
        """Show ``done`` trials of the budget, the best so far, and the pruned, failed and interrupted counts."""
        best = best_trial(self.study)
        info = f"best {self.metric} {best.value:.4f} (trial {best.number})" if best else "no complete trial yet"
        info += "".join(f" · {part}" for part in _other_outcomes(self.study))
        self.progress.update(self._row, completed=done, info=info)

    def waiting(self, running: list[int]) -> None:
        """The budget is spent here; show the trials other workers are still running."""
        self.refresh(counted_trials(self.study))
        self.progress.update(self._row, info=f"waiting for trial(s) {running} in other workers")

    def trial_finished(self, trial: FrozenTrial, done: int, note: str = "") -> None:
        """Leave one line for a finished trial and update the study row."""
        value = "" if trial.value is None else f"{self.metric} {trial.value:.4f}"
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        colour = {TrialState.COMPLETE: "green", TrialState.PRUNED: "yellow"}.get(trial.state, "red")
        self.progress.console.print(
            f"trial {trial.number:>3} [{colour}]{trial.state.name:<8}[/] {value:<22} {seconds:6.1f}s  "
            f"{escape(note)}".rstrip(),
            highlight=False,
        )
        self.refresh(done)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial, or ``None`` when there is none yet."""
    try:
        return study.best_trial
    except ValueError:
        return None


def top_trials_table(study: optuna.Study, metric: str, limit: int = 10) -> Table:
    """The best complete trials, best first, with their parameters and cost.

    Args:
        study: The study.
        metric: The metric's name, the value column's heading.
        limit: The most rows: a long study's table stays on a screen.
    """
    complete = ranked_complete_trials(study)
    names = sorted({name for t in complete for name in t.params})
    table = Table(
        title=f"study {escape(study.study_name)}: top {min(limit, len(complete))} of {len(complete)} complete "
        f"trials ({', '.join(_other_outcomes(study))})"
    )
    table.add_column("rank", justify="right")
    table.add_column("trial", justify="right")
    table.add_column(metric, justify="right")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("seconds", justify="right")
    for rank, trial in enumerate(complete[:limit], start=1):
        seconds = trial.duration.total_seconds() if trial.duration else float("nan")
        cells = [format_value(trial.params.get(name)) for name in names]
        table.add_row(str(rank), str(trial.number), f"{trial.value:.4f}", *cells, f"{seconds:.0f}")
    return table


def _other_outcomes(study: optuna.Study) -> list[str]:
    """``N pruned``, ``N failed`` and, when there are any, ``N interrupted`` (stopped or lost, and run again)."""
    counts = state_counts(study)
    shown = ["pruned", "failed", *(["interrupted"] if counts["interrupted"] else [])]
    return [f"{counts[outcome]} {outcome}" for outcome in shown]


def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)
