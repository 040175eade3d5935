"""Image datasets as ``(pixels, label, domain)`` torch datasets: decoded once into tensors when they fit, else per item.

Decoding every image once (Rotated-MNIST's 5 000 digits take about a second) removes the per-step PNG
decoding from training and evaluation; above ``cache_limit_gb`` images are decoded on the fly.
"""

from __future__ import annotations

from typing import Any

import datasets
import torch

from gaqat_recipes.data.schema import DOMAIN_COLUMN, IMAGE_COLUMN, LABEL_COLUMN
from gaqat_recipes.data.transforms import PixelTransform

_CHUNK = 512


class StreamingImages(torch.utils.data.Dataset):
    """Decode one row of a Hugging Face image dataset per ``__getitem__`` into ``(pixels, label, domain)``.

    Examples:
        >>> from gaqat_recipes.data import build_rotated_mnist
        >>> gray = PixelTransform(size=28, mean=(0.5,), std=(0.5,), channels=1)
        >>> x, y, d = StreamingImages(build_rotated_mnist()["15"], gray)[0]
        >>> tuple(x.shape), int(d)
        ((1, 28, 28), 1)
    """

    def __init__(self, ds: datasets.Dataset, transform: PixelTransform) -> None:
        self.ds = ds
        self.transform = transform

    def __len__(self) -> int:
        return self.ds.num_rows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        row = self.ds[int(index)]
        pixels = self.transform.pixel_values([row[IMAGE_COLUMN]])[0]
        return pixels, torch.tensor(row[LABEL_COLUMN]), torch.tensor(row[DOMAIN_COLUMN])


def image_tensors(ds: datasets.Dataset, transform: PixelTransform, cache_limit_gb: float = 2.0) -> torch.utils.data.Dataset:
    """A torch dataset of ``(pixels, label, domain)`` for ``ds``: a ``TensorDataset`` if it fits the cache, else streaming.

    Examples:
        >>> from gaqat_recipes.data import build_rotated_mnist
        >>> data = image_tensors(build_rotated_mnist()["0"], PixelTransform(size=28, mean=(0.5,), std=(0.5,), channels=1))
        >>> type(data).__name__, len(data), tuple(data[0][0].shape)
        ('TensorDataset', 834, (1, 28, 28))
    """
    height, width = transform.hw
    needed = ds.num_rows * transform.channels * height * width * 4
    if needed > cache_limit_gb * 2**30:
        return StreamingImages(ds, transform)
    pixels = torch.empty(ds.num_rows, transform.channels, height, width)
    for start in range(0, ds.num_rows, _CHUNK):
        rows = ds[start:start + _CHUNK]
        pixels[start:start + len(rows[IMAGE_COLUMN])] = transform.pixel_values(rows[IMAGE_COLUMN])
    labels = torch.as_tensor(ds[LABEL_COLUMN], dtype=torch.long)
    domains = torch.as_tensor(ds[DOMAIN_COLUMN], dtype=torch.long)
    return torch.utils.data.TensorDataset(pixels, labels, domains)


def flip_crop(images: torch.Tensor, generator: torch.Generator, pad_fraction: float = 0.125) -> torch.Tensor:
    """Random horizontal flip and random crop after reflect padding (``pad_fraction`` of the side), per image.

    Examples:
        >>> x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(8, 1, 1, 1)
        >>> y = flip_crop(x, torch.Generator().manual_seed(0))
        >>> y.shape == x.shape, bool((y != x).any())
        (True, True)
    """
    n, _, height, width = images.shape
    pad = max(1, round(min(height, width) * pad_fraction))
    flip = torch.rand(n, generator=generator) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(offsets)])


def domain_names(ds: datasets.Dataset) -> list[str]:
    """Names of the ``domain`` ClassLabel of a DG split (index -> name).

    Examples:
        >>> from gaqat_recipes.data import build_rotated_mnist
        >>> domain_names(build_rotated_mnist()["0"])
        ['0', '15', '30', '45', '60', '75']
    """
    feature: Any = ds.features[DOMAIN_COLUMN]
    return list(feature.names)
