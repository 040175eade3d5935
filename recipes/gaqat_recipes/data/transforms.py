"""Images to model tensors: ``pixel_values`` (N, C, H, W) float, normalised, and ``labels`` (N,) long.

The same batch dict feeds a timm model (``model(batch["pixel_values"])``) and a Hugging Face model
(``model(**batch)`` returns ``.loss``). ``PixelTransform`` works as a ``DataLoader`` ``collate_fn``
(``.collate``), as a ``Dataset.with_transform`` function (``__call__``), and as a
``transformers.Trainer`` ``data_collator`` (then set ``remove_unused_columns=False`` so the ``image``
column reaches it).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image

from gaqat_recipes.data.schema import IMAGE_COLUMN, LABEL_COLUMN

HALF_MEAN_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
"""Mean and std that map [0, 1] pixels to [-1, 1] (EfficientNet-Lite0, most ViTs trained from scratch)."""
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel (RGB) mean of ImageNet pixels in [0, 1], the usual normalisation of ImageNet-trained models."""
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel (RGB) standard deviation of ImageNet pixels in [0, 1], paired with ``IMAGENET_MEAN``."""


def _as_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        image = image.numpy()
    if isinstance(image, np.ndarray):
        return Image.fromarray(np.asarray(image, dtype=np.uint8))
    if isinstance(image, Mapping) and ("bytes" in image or "path" in image):  # undecoded datasets.Image value
        return datasets.Image().decode_example(dict(image))
    raise TypeError(
        f"cannot read an image from {type(image).__name__}; expected a PIL image, a uint8 array or a datasets.Image value"
    )


@dataclass(frozen=True)
class PixelTransform:
    """Resize, convert to ``channels`` channels, scale to [0, 1] and normalise a batch of images.

    Args:
        size: output side (square) or ``(height, width)``.
        mean: per-channel mean subtracted after scaling to [0, 1] (length ``channels``).
        std: per-channel std divided by (length ``channels``).
        channels: 3 (grayscale images are replicated) or 1 (colour images are converted to luminance).
        image_column: column holding images.
        label_column: column holding integer labels (returned as ``labels``; optional in the input).
        keep_columns: extra integer columns copied into the batch as long tensors (e.g. ``("domain",)``).

    Examples:
        >>> from PIL import Image
        >>> t = PixelTransform(size=32)
        >>> batch = t.collate([{"image": Image.new("L", (28, 28), 255), "label": 3}] * 2)
        >>> batch["pixel_values"].shape, batch["pixel_values"].max().item(), batch["labels"].tolist()
        (torch.Size([2, 3, 32, 32]), 1.0, [3, 3])
    """

    size: int | tuple[int, int] = 32
    mean: Sequence[float] = HALF_MEAN_STD
    std: Sequence[float] = HALF_MEAN_STD
    channels: int = 3
    image_column: str = IMAGE_COLUMN
    label_column: str = LABEL_COLUMN
    keep_columns: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3; got {self.channels}")
        height, width = self.hw
        if height <= 0 or width <= 0:
            raise ValueError(f"size must be positive; got {self.size}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean and std need {self.channels} values each (one per channel); got mean={self.mean}, std={self.std}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive; got {self.std}")

    @property
    def hw(self) -> tuple[int, int]:
        """Output ``(height, width)``.

        Examples:
            >>> PixelTransform(size=(24, 32)).hw
            (24, 32)
        """
        return (self.size, self.size) if isinstance(self.size, int) else (int(self.size[0]), int(self.size[1]))

    def pixel_values(self, images: Sequence[Any]) -> torch.Tensor:
        """Images (PIL, uint8 arrays or ``datasets.Image`` values) -> float tensor ``(N, channels, H, W)``.

        Examples:
            >>> import numpy as np
            >>> PixelTransform(size=8, mean=(0.0,), std=(1.0,), channels=1).pixel_values([np.zeros((4, 4), np.uint8)]).shape
            torch.Size([1, 1, 8, 8])
        """
        height, width = self.hw
        arrays = []
        for raw in images:
            image = _as_pil(raw)
            if image.size != (width, height):
                image = image.resize((width, height), resample=Image.Resampling.BILINEAR)
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB")
            arrays.append(np.asarray(image, dtype=np.uint8))
        if not arrays:
            return torch.empty(0, self.channels, height, width)
        if self.channels == 1:
            if any(a.ndim == 3 for a in arrays):
                warnings.warn("colour images are converted to grey (luminance) for a model with 1 input channel; "
                              "pick a 3-channel model (e.g. a timm name, or in_chans=3) to keep colour",
                              UserWarning, stacklevel=2)
            arrays = [a if a.ndim == 2 else np.asarray(Image.fromarray(a).convert("L")) for a in arrays]
        elif any(a.ndim == 2 for a in arrays) and any(a.ndim == 3 for a in arrays):
            arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays]
        stacked = np.stack(arrays)
        # (N, C, H, W) or (N, 1, H, W) for grayscale; broadcasting against per-channel constants replicates gray.
        stacked = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
        # numpy, not torch: tiny element-wise torch ops pay intra-op thread start-up, slow on a busy 2-core machine.
        scale = (1.0 / (255.0 * np.asarray(self.std, dtype=np.float32))).reshape(1, -1, 1, 1)
        offset = (np.asarray(self.mean, dtype=np.float32) / np.asarray(self.std, dtype=np.float32)).reshape(1, -1, 1, 1)
        pixels = stacked.astype(np.float32) * scale - offset
        return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, torch.Tensor]:
        """Columnar batch (what ``Dataset.with_transform`` passes) -> ``pixel_values`` / ``labels`` tensors.

        Examples:
            >>> import datasets
            >>> from PIL import Image
            >>> ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (5, 7))] * 3, "label": [0, 1, 2]})
            >>> ds = ds.cast_column("image", datasets.Image()).with_transform(PixelTransform(size=16))
            >>> ds[0:3]["pixel_values"].shape, ds[0:3]["labels"].dtype
            (torch.Size([3, 3, 16, 16]), torch.int64)
        """
        if self.image_column not in batch:
            raise KeyError(f"batch has no image column {self.image_column!r}; it has {list(batch)} (set image_column=...)")
        out = {"pixel_values": self.pixel_values(batch[self.image_column])}
        if self.label_column in batch:
            out["labels"] = torch.as_tensor(list(batch[self.label_column]), dtype=torch.long)
        for column in self.keep_columns:
            out[column] = torch.as_tensor(list(batch[column]), dtype=torch.long)
        return out

    def collate(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """List of rows (what a ``DataLoader`` gives its ``collate_fn``) -> ``pixel_values`` / ``labels`` tensors.

        Examples:
            >>> from PIL import Image
            >>> PixelTransform(size=4).collate([{"image": Image.new("RGB", (4, 4)), "label": 1}])["labels"]
            tensor([1])
        """
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        columns = {key: [example[key] for example in examples] for key in examples[0]}
        return self(columns)


def make_dataloader(
    ds: datasets.Dataset,
    transform: PixelTransform,
    batch_size: int = 64,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """A plain ``torch.utils.data.DataLoader`` over a Hugging Face dataset that yields ``pixel_values``/``labels`` dicts.

    Shuffling uses its own ``torch.Generator`` seeded with ``seed``, so the order does not depend on the
    global RNG. The loader is a standard one, so ``accelerator.prepare`` can shard it.

    Examples:
        >>> from gaqat_recipes.data import build_rotated_mnist
        >>> loader = make_dataloader(build_rotated_mnist()["0"], PixelTransform(size=32), batch_size=16, shuffle=True)
        >>> batch = next(iter(loader))
        >>> batch["pixel_values"].shape, batch["labels"].shape
        (torch.Size([16, 3, 32, 32]), torch.Size([16]))
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=transform.collate,
    )
