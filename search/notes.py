"""What a study was set up to do, and how each trial ended, as optuna-dashboard notes.

The sweeper records the study's set-up (objective, search space, sampler, pruner, budget) in the study's user
attribute ``setup`` and writes it as the study's note; after each trial it writes a one-paragraph trial note
(outcome, value, where it was pruned, duration, why it failed). The dashboard shows both beside the plots,
and ``hps report`` prints the same set-up at the top of its page.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import optuna
import optuna_dashboard
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from hps.search._compat import trial_id
from hps.search.distributions import describe_json
from hps.search.reruns import WARM_START_FROM
from hps.search.space import SearchSpace
from hps.search.study import FAIL_REASON, RETRY_OF, StudySpec

SETUP = "setup"
MODELS = "models_note"  # the study's production models, as markdown below the set-up in its note


def study_setup(
    spec: StudySpec, space: SearchSpace, sampler: DictConfig, pruner: DictConfig, n_trials: int, storage: str
) -> dict[str, Any]:
    """The study's set-up as JSON-friendly text: what the note and the report show.

    Args:
        spec: What the study optimises.
        space: Its search space.
        sampler: The sampler's config, shown as a call (``TPESampler(seed=0)``).
        pruner: The pruner's config, likewise.
        n_trials: The budget.
        storage: The storage URL, its password masked.
    """
    return {
        "objective": f"{spec.direction} {spec.metric}",
        **{key: str(value) for key, value in spec.identity.items()},
        "search space": {name: describe_json(stored) for name, stored in space.as_json().items()},
        "sampler": _component(sampler),
        "pruner": _component(pruner),
        "budget": f"{n_trials} trials",
        "storage": storage,
    }


def _component(config: DictConfig | dict) -> str:
    """``TPESampler(multivariate=False, n_startup_trials=5)`` from a sampler or pruner config (nested ones too)."""
    values = dict(config) if isinstance(config, dict) else OmegaConf.to_container(config, resolve=True)
    target = str(values.pop("_target_", "?")).rsplit(".", 1)[-1]

    def shown(value: Any) -> str:
        return _component(value) if isinstance(value, dict) and "_target_" in value else repr(value)

    return f"{target}({', '.join(f'{key}={shown(value)}' for key, value in values.items())})"


def setup_markdown(study_name: str, setup: Mapping[str, Any]) -> str:
    """The set-up as the study's note: a heading, one line per item, one per searched parameter."""
    lines = [f"## {study_name}", ""]
    for key, value in setup.items():
        if isinstance(value, Mapping):
            lines.append(f"- **{key}**:")
            lines.extend(f"    - `{name}`: {text}" for name, text in value.items())
        else:
            lines.append(f"- **{key}**: {value}")
    return "\n".join(lines) + "\n"


def record_setup(study: optuna.Study, setup: Mapping[str, Any]) -> None:
    """Store the set-up with the study and as its dashboard note (again on resume, so the budget stays true).

    Args:
        study: The study.
        setup: Its set-up (:func:`study_setup`); left alone when unchanged, so a resume writes nothing.
    """
    if study.user_attrs.get(SETUP) == setup:
        return
    study.set_user_attr(SETUP, dict(setup))
    optuna_dashboard.save_note(study, setup_markdown(study.study_name, setup) + study.user_attrs.get(MODELS, ""))


def record_models(study: optuna.Study, markdown: str) -> None:
    """Add ``markdown`` (the study's production models and their checks, :mod:`hps.search.check_report`) to the study's
    note, after its set-up; kept when a resumed sweep rewrites the set-up."""
    study.set_user_attr(MODELS, markdown)
    setup = study.user_attrs.get(SETUP)
    head = setup_markdown(study.study_name, setup) if setup else f"## {study.study_name}\n"
    optuna_dashboard.save_note(study, head + markdown)


_PEAKS = (("max_rss_mb", "host"), ("cuda_peak_mb", "GPU"))


def trial_markdown(trial: FrozenTrial, metric: str) -> str:
    """How the trial ended, in one paragraph.

    Args:
        trial: The finished trial.
        metric: The metric's name, as the note shows its values.
    """
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    steps = sorted(trial.intermediate_values)
    if trial.state == TrialState.COMPLETE:
        text = f"**complete**: {metric} {trial.value:.4f} after {_evaluations(len(steps))}"
    elif trial.state == TrialState.PRUNED and steps:
        text = f"**pruned** at step {steps[-1]} ({_evaluations(len(steps))}): "
        text += f"{metric} {trial.intermediate_values[steps[-1]]:.4f}"
    else:
        reason = trial.user_attrs.get(FAIL_REASON)
        text = f"**{trial.state.name.lower()}**" + (f": {reason}" if reason else "")
    text += f"; {seconds:.1f} s"
    attrs = trial.user_attrs
    if "device" in attrs:  # what the objective recorded of its hardware (fine-tuning does)
        text += f" on {attrs['device']} in {attrs.get('precision')}"
        peaks = [f"{attrs[key]:.0f} MB {what}" for key, what in _PEAKS if attrs.get(key) is not None]
        text += f", peak memory {', '.join(peaks)}" if peaks else ""
    text += "."
    origin = trial.user_attrs.get(WARM_START_FROM)
    if origin is not None:
        text += f" Warm start from {origin}."
    if trial.user_attrs.get(RETRY_OF) is not None:
        text += f" Re-run of trial {trial.user_attrs[RETRY_OF]}, which did not finish (interrupted, or worker lost)."
    return text + "\n"


def _evaluations(count: int) -> str:
    return f"{count} evaluation" + ("" if count == 1 else "s")


def record_trial_note(study: optuna.Study, trial: FrozenTrial, metric: str) -> None:
    """Write :func:`trial_markdown` as the trial's dashboard note.

    Args:
        study: The trial's study.
        trial: The finished trial.
        metric: The metric's name.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna_dashboard.save_note(optuna.Trial(study, trial_id(trial)), trial_markdown(trial, metric))
