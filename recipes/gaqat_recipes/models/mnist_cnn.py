"""A small convolutional network for 28x28 digits, shaped like DomainBed's MNIST CNN.

Four 3x3 convolutions (the second with stride 2), each followed by ReLU and GroupNorm with 8 groups,
global average pooling and a linear classifier. DomainBed uses widths 64/128/128/128; ``width`` scales
them (``width=16`` gives 16/32/32/32, about ten times cheaper) so the demo fits a small CPU budget.
GroupNorm instead of BatchNorm keeps the model independent of batch composition across domains.
"""

from __future__ import annotations

import torch
from torch import nn


class MnistCNN(nn.Module):
    """DomainBed-style MNIST CNN: ``conv(w) -> conv(2w, stride 2) -> conv(2w) -> conv(2w) -> pool -> linear``.

    Args:
        num_classes: size of the classifier output.
        in_chans: input channels (1 for grayscale digits, 3 for colour images).
        width: channels of the first convolution (the others have ``2 * width``); a multiple of 8.

    Examples:
        >>> net = MnistCNN(num_classes=10, in_chans=1, width=16)
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> net.get_classifier() is net.classifier
        True
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 64) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        if width < 8 or width % 8:
            raise ValueError(f"width must be a positive multiple of 8 (GroupNorm uses 8 groups), got {width}")
        wide = 2 * width
        self.conv1 = nn.Conv2d(in_chans, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, wide, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(wide, wide, 3, padding=1)
        self.conv4 = nn.Conv2d(wide, wide, 3, padding=1)
        self.norms = nn.ModuleList([nn.GroupNorm(8, width), nn.GroupNorm(8, wide), nn.GroupNorm(8, wide), nn.GroupNorm(8, wide)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(wide, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for images ``(N, in_chans, H, W)``."""
        for conv, norm in zip((self.conv1, self.conv2, self.conv3, self.conv4), self.norms, strict=True):
            x = norm(torch.relu(conv(x)))
        return self.classifier(self.pool(x).flatten(1))

    def get_classifier(self) -> nn.Module:
        """The final linear layer (the name timm uses, so ``quantize_model`` keeps it at full precision)."""
        return self.classifier
