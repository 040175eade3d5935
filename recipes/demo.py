"""Interim demo: quantize a small timm model to W4A4 and train a few steps on RANDOM data.

This only shows the pieces working end to end; the domain-generalization demo
on Rotated-MNIST replaces it when the recipes land.
"""

from __future__ import annotations

import time

import timm
import torch

from gaqat_wrap import calibrate, format_report, param_groups, quantize_model


def main() -> None:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    model = quantize_model(model, bits=4)
    images = torch.randn(64, 3, 64, 64)
    labels = torch.randint(0, 10, (64,))
    calibrate(model, [images[:16]])
    print(format_report(model))
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay=0.05, scale_lr=1e-4), lr=1e-3)
    start = time.time()
    for step in range(20):
        batch = torch.randint(0, 64, (16,))
        loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 5 == 0:
            print(f"step {step:2d}  loss {loss.item():.3f}")
    print(f"20 W4A4 training steps on random data in {time.time() - start:.1f}s")


if __name__ == "__main__":
    main()
