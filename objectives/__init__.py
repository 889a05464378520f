"""What trials run: the fine-tuning task and the pieces it is made of.

Importing this package makes model loading offline (no Hugging Face Hub at run time) and registers the
``model_package_path`` config resolver, which names the model folder a Python package ships.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from omegaconf import OmegaConf

from objectives.model import model_package_path

OmegaConf.register_new_resolver("model_package_path", model_package_path, replace=True)
