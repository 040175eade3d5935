"""MNIST-C-style corruption domains (Mu & Gilmer 2019), built offline and deterministically from MNIST-5k.

Each corruption is a pure function of a 28x28 float image in [0, 1] and a ``numpy.random.Generator`` seeded from the
benchmark seed, the corruption and the image's index, so the same seed always gives the same pixels. Only numpy and
scipy.ndimage are used. Severities follow the spirit of MNIST-C (one fixed severity per corruption, chosen so the digit
stays readable to a person); the images differ from the published MNIST-C files, which are not used.

The benchmark (``"mnist_c"``) deals the 5 000 MNIST-5k images round-robin to :data:`MNIST_C_DOMAINS` after one
shuffle, as Rotated-MNIST does (625 disjoint images per domain), and applies each domain's corruption: a shift of
another kind than rotation, with held-out corruptions in the leave-one-domain-out protocol.

Examples:
    >>> dd = build_mnist_c(seed=0)
    >>> list(dd) == list(MNIST_C_DOMAINS), dd["fog"].num_rows
    (True, 625)
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import datasets
import numpy as np
from PIL import Image
from scipy import ndimage

from gaqat_recipes.data.rotated_mnist import MNIST_CLASSES, _mnist_5k, _png_bytes
from gaqat_recipes.data.schema import dg_features

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _clip(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0.0, 1.0)


def identity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The clean digit."""
    return image


def shot_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson photon noise on a dimly lit scene: a mean of 6 photons at full brightness, 0.5 on the background."""
    return _clip(rng.poisson(image * 6.0 + 0.5) / 6.5)


def impulse_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise on 15% of the pixels."""
    out = image.copy()
    hit = rng.random(image.shape) < 0.15
    out[hit] = rng.integers(0, 2, size=int(hit.sum())).astype(image.dtype)
    return out


def glass_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, swap every pixel with a random neighbour (one round), blur again."""
    out = ndimage.gaussian_filter(image, 0.5)
    size = image.shape[0]
    offsets = rng.integers(-1, 2, size=(size, size, 2)).tolist()   # one draw per image; the swaps are sequential
    flat = out.tolist()
    for y in range(size - 1, 0, -1):
        for x in range(size - 1, 0, -1):
            dy, dx = offsets[y][x]
            ny, nx = min(max(y + dy, 0), size - 1), min(max(x + dx, 0), size - 1)
            flat[y][x], flat[ny][nx] = flat[ny][nx], flat[y][x]
    return _clip(ndimage.gaussian_filter(np.asarray(flat), 0.5))


def motion_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Averaging along a 5-pixel line at a random angle."""
    angle = rng.uniform(0, np.pi)
    kernel = np.zeros((5, 5))
    for t in np.linspace(-2, 2, 17):
        kernel[round(2 + t * np.sin(angle)), round(2 + t * np.cos(angle))] = 1.0
    return _clip(ndimage.convolve(image, kernel / kernel.sum(), mode="constant"))


def _affine(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    centre = (np.array(image.shape) - 1) / 2
    offset = centre - matrix @ centre
    return _clip(ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="constant"))


def shear(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A horizontal shear of 0.3 to 0.6, either way."""
    amount = rng.uniform(0.3, 0.6) * rng.choice([-1, 1])
    return _affine(image, np.array([[1.0, 0.0], [amount, 1.0]]))


def scale(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shrink to 55-70% of the size, centred."""
    factor = rng.uniform(0.55, 0.7)
    return _affine(image, np.eye(2) / factor)


def brightness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A brighter background: every pixel + 0.5."""
    return _clip(image + 0.5)


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, cells: int) -> np.ndarray:
    coarse = rng.random((cells, cells))
    field = ndimage.zoom(coarse, shape[0] / cells, order=3)[: shape[0], : shape[1]]
    return (field - field.min()) / max(field.max() - field.min(), 1e-8)


def fog(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth bright haze (a cubic-upsampled 4x4 random field) added at 0.6."""
    return _clip(image + 0.6 * _smooth_field(image.shape, rng, 4))


def spatter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark blots where a smoothed random field is high."""
    field = ndimage.gaussian_filter(rng.random(image.shape), 1.5)
    blots = field > np.quantile(field, 0.88)
    out = image.copy()
    out[blots] = 0.6 * rng.random(int(blots.sum()))
    return out


def stripe(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vertical bright stripes, every 4th column from a random start."""
    out = image.copy()
    start = int(rng.integers(0, 4))
    out[:, start::4] = np.maximum(out[:, start::4], 0.8)
    return out


def _draw_line(canvas: np.ndarray, start: np.ndarray, end: np.ndarray, every: int = 1) -> None:
    length = int(np.ceil(np.abs(end - start).max())) + 1
    for k, t in enumerate(np.linspace(0, 1, length)):
        if k % every == 0:
            y, x = np.round(start + t * (end - start)).astype(int)
            if 0 <= y < canvas.shape[0] and 0 <= x < canvas.shape[1]:
                canvas[y, x] = 1.0


def dotted_line(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two random dotted lines across the image."""
    out = image.copy()
    for _ in range(2):
        _draw_line(out, rng.uniform(0, 27, 2), rng.uniform(0, 27, 2), every=3)
    return out


def zigzag(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random zigzag of four segments across the image."""
    out = image.copy()
    xs = np.linspace(0, 27, 5)
    ys = rng.uniform(2, 25, 5)
    for i in range(4):
        _draw_line(out, np.array([ys[i], xs[i]]), np.array([ys[i + 1], xs[i + 1]]))
    return out


def canny_edges(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The digit's edges: Sobel gradient magnitude of the smoothed digit, thresholded (Canny without hysteresis)."""
    smooth = ndimage.gaussian_filter(image, 1.0)
    magnitude = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
    return (magnitude > 0.35 * max(magnitude.max(), 1e-8)).astype(image.dtype)


CORRUPTIONS: dict[str, Corruption] = {fn.__name__: fn for fn in (
    identity, shot_noise, impulse_noise, glass_blur, motion_blur, shear, scale, brightness, fog, spatter, stripe,
    dotted_line, zigzag, canny_edges)}


"""Corruption name -> function ``(image in [0, 1], rng) -> image in [0, 1]``; ``identity`` is the clean domain."""

MNIST_C_DOMAINS: tuple[str, ...] = ("identity", "impulse_noise", "glass_blur", "motion_blur", "shear", "fog", "zigzag",
                                    "canny_edges")
"""The domains of the ``"mnist_c"`` benchmark: the clean digits and seven corruptions of six kinds (noise, blur,
geometry, weather, overlay, edges). Every corruption of :data:`CORRUPTIONS` can be chosen with ``corruptions=``."""


def corrupt(image: np.ndarray, name: str, seed: int, index: int) -> np.ndarray:
    """Corruption ``name`` of one float image in [0, 1], drawn from (seed, name, index) only.

    Examples:
        >>> image = np.zeros((28, 28)); image[8:20, 12:16] = 1.0
        >>> bool((corrupt(image, "fog", 0, 3) == corrupt(image, "fog", 0, 3)).all()), bool(corrupt(image, "fog", 0, 3).max() <= 1)
        (True, True)
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), index])
    return CORRUPTIONS[name](image.astype(np.float64), rng)


def build_mnist_c(seed: int = 0, corruptions: Sequence[str] = MNIST_C_DOMAINS) -> datasets.DatasetDict:
    """The MNIST-C-style benchmark as a ``DatasetDict`` with one split per corruption (named after it).

    Args:
        seed: seed of the shuffle that deals images to domains and of every corruption's randomness.
        corruptions: the domains, names from :data:`CORRUPTIONS` (at least two, distinct).
    """
    names = list(corruptions)
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"MNIST-C needs at least two distinct corruptions (domains); got {names}")
    for name in names:
        if name not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    images, labels = _mnist_5k()
    order = np.random.RandomState(seed).permutation(len(images))
    features = dg_features(MNIST_CLASSES, names)
    domains = {}
    for index, name in enumerate(names):
        members = order[index :: len(names)]
        encoded = []
        for i in members:
            pixels = corrupt(images[i] / 255.0, name, seed, int(i))
            encoded.append({"bytes": _png_bytes(Image.fromarray(np.round(pixels * 255).astype(np.uint8))), "path": None})
        columns = {"image": encoded, "label": labels[members].tolist(), "domain": [index] * len(members)}
        domains[name] = datasets.Dataset.from_dict(columns, features=features)
    return datasets.DatasetDict(domains)
