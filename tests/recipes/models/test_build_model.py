"""build_model resolves built-in names, timm names, Hugging Face configs and local weights into logits models."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from gaqat_recipes.models import LogitsOnly, MnistCNN, build_model, input_spec, load_weights_file, model_kind
from gaqat_wrap import quantize_model

TINY_VIT = {"image_size": 16, "patch_size": 8, "num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
            "intermediate_size": 64}


def test_builtin_cnn_is_domainbed_shaped_and_keeps_first_and_last_layers_full_precision():
    model = build_model("mnist_cnn", num_classes=10)
    widths = [m.out_channels for m in (model.conv1, model.conv2, model.conv3, model.conv4)]
    assert widths == [64, 128, 128, 128] and model.conv2.stride == (2, 2)
    quantize_model(model, bits=4)
    assert not hasattr(model.conv1, "weight_quantizer") and not hasattr(model.classifier, "weight_quantizer")
    assert hasattr(model.conv3, "weight_quantizer")
    assert input_spec("mnist_cnn").size == 28


def test_timm_name_builds_with_channels_and_classes():
    model = build_model("resnet18", num_classes=4, in_chans=1).eval()
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 4)
    assert model_kind("vit_tiny_patch16_224") == "timm"
    vit = build_model("vit_tiny_patch16_224", num_classes=3, image_size=32)
    assert vit(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_hugging_face_model_type_and_local_config_return_logits(tmp_path):
    from_type = build_model("hf:vit", num_classes=5, hf_options=TINY_VIT)
    assert isinstance(from_type, LogitsOnly)
    assert from_type(torch.zeros(2, 3, 16, 16)).shape == (2, 5)

    config = transformers.AutoConfig.for_model("vit", **TINY_VIT)
    config.save_pretrained(tmp_path / "cfg")
    assert model_kind(str(tmp_path / "cfg")) == "hf_path"
    from_folder = build_model(str(tmp_path / "cfg"), num_classes=3)
    assert from_folder(torch.zeros(1, 3, 16, 16)).shape == (1, 3)
    assert input_spec(str(tmp_path / "cfg")).size == 16

    json_file = tmp_path / "vit.json"
    json_file.write_text(json.dumps({"model_type": "vit", **TINY_VIT}))
    assert build_model(str(json_file), num_classes=2)(torch.zeros(1, 3, 16, 16)).shape == (1, 2)


def test_local_hugging_face_folder_with_weights_loads_them(tmp_path):
    config = transformers.AutoConfig.for_model("vit", **TINY_VIT, num_labels=3)
    saved = transformers.AutoModelForImageClassification.from_config(config)
    saved.save_pretrained(tmp_path / "model")
    loaded = build_model(str(tmp_path / "model"), num_classes=3)
    for (name, a), b in zip(saved.state_dict().items(), loaded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_local_weights_file_loads_backbone_and_replaces_a_head_of_another_size(tmp_path):
    source = MnistCNN(num_classes=10, width=16)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "w.pt")
    model = build_model("mnist_cnn_small", num_classes=3, pretrained=str(tmp_path / "w.pt"))
    assert torch.equal(model.conv3.weight, source.conv3.weight)
    assert model.classifier.out_features == 3

    from safetensors.torch import save_file

    save_file(MnistCNN(num_classes=10, width=8).state_dict(), str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ValueError, match="wrong shape"):
        load_weights_file(MnistCNN(num_classes=10, width=16), tmp_path / "wrong.safetensors")
    with pytest.raises(FileNotFoundError, match="no weights file"):
        build_model("mnist_cnn", num_classes=10, pretrained=str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("name", ["resnet_typo", "hf:not_a_model_type", "nobody/not-cached-model"])
def test_unknown_model_names_are_refused_with_the_accepted_forms(name):
    with pytest.raises(ValueError, match="unknown"):
        build_model(name, num_classes=2)


def test_the_committed_rotated_mnist_vit_config_builds_a_28px_one_channel_quantizable_vit():
    from pathlib import Path

    from gaqat_wrap import quant_report

    config = Path(__file__).resolve().parents[3] / "recipes" / "configs" / "vit_rmnist_tiny.json"
    spec = input_spec(str(config))
    assert (spec.size, spec.channels) == (28, 1)
    model = build_model(str(config), num_classes=10)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    quantize_model(model, bits=4)
    rows = {r.name: r for r in quant_report(model)}
    assert not rows["model.vit.embeddings.patch_embeddings.projection"].quantized
    assert not rows["model.classifier"].quantized
    assert sum(r.quantized for r in rows.values()) == 4 * 6  # q, k, v, o, fc1, fc2 in each of the 4 blocks
