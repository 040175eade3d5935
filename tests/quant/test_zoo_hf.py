"""transformers model zoo: ...ForImageClassification models from tiny configs (no download).

Same promises as the timm zoo (see test_zoo_timm.py): W4A4 forward + backward
(with ``labels``, so the model computes its own loss) reaches every step size;
W8A8 logits close to FP (relative L2 error below a measured per-model
tolerance); state_dict round trip; complete quant_report.

Weights are re-initialised with :func:`zoo_checks.fan_in_init`: the Hugging Face
default ``N(0, 0.02^2)`` makes CNN activations vanish to exactly zero in eval mode.
"""

from __future__ import annotations

import pytest
import torch
import transformers as T

from zoo_checks import (  # isort: skip
    assert_report_complete,
    assert_state_dict_round_trip,
    assert_w4a4_trains,
    fan_in_init,
    w8a8_error,
    wake_up,
)

VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
       "image_size": 32, "patch_size": 8, "num_labels": 3}

# name: (config class, model class, config kwargs, image size, W8A8 tolerance); comment: measured over seeds 0-3
MODELS = {
    "vit": (T.ViTConfig, T.ViTForImageClassification, VIT, 32, 0.1),                    # 0.022-0.050
    "deit": (T.DeiTConfig, T.DeiTForImageClassification, VIT, 32, 0.15),                # 0.029-0.077
    "beit": (T.BeitConfig, T.BeitForImageClassification, VIT, 32, 0.03),                # 0.002-0.009
    "dinov2": (T.Dinov2Config, T.Dinov2ForImageClassification, VIT, 32, 0.06),          # 0.011-0.031
    "convnext": (T.ConvNextConfig, T.ConvNextForImageClassification,
                 {"hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2, "image_size": 32, "num_labels": 3},
                 32, 0.05),                                                               # 0.013-0.025
    "resnet": (T.ResNetConfig, T.ResNetForImageClassification,
               {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "bottleneck", "num_labels": 3},
               32, 0.04),                                                                # 0.003-0.016
    "swin": (T.SwinConfig, T.SwinForImageClassification,
             {"image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4,
              "num_labels": 3}, 32, 0.05),                                               # 0.014-0.021
    # patch_size 1 at 64 px: every MobileViT transformer attends over more than one token
    "mobilevit": (T.MobileViTConfig, T.MobileViTForImageClassification,
                  {"image_size": 64, "patch_size": 1, "hidden_sizes": [16, 24, 32],
                   "neck_hidden_sizes": [8, 8, 16, 16, 24, 32, 64], "num_labels": 3}, 64, 0.4),  # 0.024-0.205
    "efficientnet": (T.EfficientNetConfig, T.EfficientNetForImageClassification,
                     {"image_size": 32, "width_coefficient": 0.25, "depth_coefficient": 0.25, "hidden_dim": 320,
                      "num_labels": 3}, 32, 1.2),                                        # 0.11-0.80
}


def build(name: str, seed: int = 0) -> torch.nn.Module:
    config_cls, model_cls, kwargs, _, _ = MODELS[name]
    torch.manual_seed(seed)
    return fan_in_init(wake_up(model_cls(config_cls(**kwargs)), seed), seed)


def batches(name: str, seed: int = 100) -> tuple[dict, dict]:
    size = MODELS[name][3]
    gen = torch.Generator().manual_seed(seed)
    inputs = {"pixel_values": torch.randn(2, 3, size, size, generator=gen), "labels": torch.tensor([0, 2])}
    return inputs, {"pixel_values": torch.randn(2, 3, size, size, generator=gen)}


def loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return model(**batch).loss


def logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return model(pixel_values=batch["pixel_values"]).logits


@pytest.mark.parametrize("name", list(MODELS))
def test_w4a4_forward_backward_reaches_every_step_size(name):
    inputs, calib = batches(name)
    model = assert_w4a4_trains(build(name), inputs, calib, loss)
    assert_report_complete(model)


@pytest.mark.parametrize("name", list(MODELS))
def test_w8a8_logits_close_to_fp(name):
    inputs, calib = batches(name)
    error = w8a8_error(build(name), inputs, calib, logits)
    assert error < MODELS[name][4], f"{name}: W8A8 relative logit error {error:.4f} >= {MODELS[name][4]}"


@pytest.mark.parametrize("name", list(MODELS))
def test_state_dict_round_trip_into_fresh_model(name):
    inputs, calib = batches(name)
    assert_state_dict_round_trip(lambda seed: build(name, seed), inputs, calib, logits)
