"""hf_vit: a Vision Transformer that is a first-class transformers model.

Importing the package registers `HfViTConfig` and the models with transformers' Auto classes in this process, and
marks them for `auto_map`, so that `save_pretrained` writes the code files a Hub repository needs for
`trust_remote_code=True`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_hf_vit import HfViTConfig
from .modeling_hf_vit import HfViTForImageClassification, HfViTModel, HfViTPreTrainedModel
from .presets import PRESETS, preset_config
from .processing import build_image_processor, save_model_folder

__version__ = "0.1.0"

AutoConfig.register(HfViTConfig.model_type, HfViTConfig, exist_ok=True)
AutoModel.register(HfViTConfig, HfViTModel, exist_ok=True)
AutoModelForImageClassification.register(HfViTConfig, HfViTForImageClassification, exist_ok=True)

HfViTConfig.register_for_auto_class()
HfViTModel.register_for_auto_class("AutoModel")
HfViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "PRESETS",
    "preset_config",
    "HfViTConfig",
    "HfViTModel",
    "HfViTForImageClassification",
    "HfViTPreTrainedModel",
    "build_image_processor",
    "save_model_folder",
]
