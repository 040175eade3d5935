"""The selected checkpoint of a run: ``model.safetensors`` (state_dict) + ``config.json``, and loading it back."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gaqat_recipes.config import TrainConfig
from gaqat_recipes.models.build import build_model, input_spec
from gaqat_wrap import quantize_model

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_checkpoint(folder: str | Path, state: Mapping[str, torch.Tensor], config: TrainConfig, classes: Sequence[str]) -> Path:
    """Write ``state`` as safetensors and the run's config (plus class names) as JSON into ``folder``.

    Examples:
        >>> import tempfile
        >>> from gaqat_recipes.models import MnistCNN
        >>> folder = save_checkpoint(tempfile.mkdtemp(), MnistCNN(width=8).state_dict(), TrainConfig(test_domain="0"),
        ...                          [str(i) for i in range(10)])
        >>> sorted(p.name for p in folder.iterdir())
        ['config.json', 'model.safetensors']
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(folder / WEIGHTS_FILE))
    payload = {"train_config": config.to_dict(), "classes": list(classes)}
    (folder / CONFIG_FILE).write_text(json.dumps(payload, indent=2))
    return folder


def load_checkpoint(folder: str | Path) -> tuple[torch.nn.Module, TrainConfig, list[str]]:
    """Rebuild the model of a checkpoint folder (quantized again when its method quantizes) and load its weights.

    Returns ``(model in eval mode, TrainConfig, class names)``.

    Examples:
        >>> import tempfile
        >>> from gaqat_recipes.models import build_model
        >>> cfg = TrainConfig(test_domain="0", model="mnist_cnn_small", method="fp")
        >>> net = build_model("mnist_cnn_small", num_classes=10)
        >>> folder = save_checkpoint(tempfile.mkdtemp(), net.state_dict(), cfg, [str(i) for i in range(10)])
        >>> loaded, config, classes = load_checkpoint(folder)
        >>> torch.equal(loaded.conv1.weight, net.conv1.weight), config.method, len(classes)
        (True, 'fp', 10)
    """
    folder = Path(folder)
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint folder: expected {WEIGHTS_FILE} and {CONFIG_FILE} "
                                "(written by train_dg into <output_dir>/checkpoint)")
    payload = json.loads((folder / CONFIG_FILE).read_text())
    config = TrainConfig.from_dict(payload["train_config"])
    classes = list(payload["classes"])
    spec = input_spec(config.model, pretrained=config.pretrained, image_size=config.image_size)
    model = build_model(config.model, num_classes=len(classes), image_size=config.image_size, in_chans=spec.channels)
    if config.quantized:
        quantize_model(model, bits=config.bits)
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    return model.eval(), config, classes
