"""Tiny versions of the architectures export must handle, quantized and calibrated (shared by tests/export)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gaqat_wrap import calibrate, quantize_model

IMAGE = 32


def timm_model(name: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, num_classes=5, **kwargs)
    return build


def hf_vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=IMAGE, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=5)
    return ViTForImageClassification(config)


def std_conv_net() -> nn.Module:
    """timm weight-standardised convs: the exported integers are those of the standardised weight."""
    from timm.layers import ScaledStdConv2d, StdConv2d

    torch.manual_seed(0)
    return nn.Sequential(StdConv2d(3, 8, 3, padding=1), nn.ReLU(), StdConv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         ScaledStdConv2d(16, 16, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "vit_tiny_patch16_224": timm_model("vit_tiny_patch16_224", img_size=IMAGE, patch_size=8, depth=2),
    "resnet18": timm_model("resnet18", channels=(16, 32, 64, 128), stem_width=16),  # resnet18 layout, narrow
    "tf_efficientnet_lite0": timm_model("tf_efficientnet_lite0"),
    "hf_vit": hf_vit,
    "std_conv": std_conv_net,
}


def images(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def logits(output: object) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.logits


def quantized(name: str, bits: int = 4, act_bits: int | None = None) -> nn.Module:
    """A calibrated fake-quant model, in eval mode."""
    model = quantize_model(BUILDERS[name](), bits=bits, act_bits=act_bits, weight_init="lsq", act_init="lsq")
    calibrate(model, [images(8, seed=2)])
    return model.eval()


def with_batchnorm_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm trained-looking statistics and affine parameters, some gammas negative."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(channels, generator=generator))
            module.bias.data.copy_(torch.randn(channels, generator=generator) * 0.2)
    return model


def conv_chain() -> nn.Module:
    """16x16 inputs: FP stem, two quantized Conv-BN-ReLU(6) layers, MaxPool, Flatten, a quantized Linear, FP head.

    Every quantized convolution's output is read by one quantized layer, so no tensor needs a calibrated grid.
    """
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                        nn.Linear(16 * 4 * 4, 32), nn.Linear(32, 5))
    return with_batchnorm_statistics(net)


def small_images(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
