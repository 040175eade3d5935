"""A tiny synthetic image folder (``root/<domain>/<class>/*.png``) for smoke tests and examples.

Class ``k`` is a bright square at a class-specific position; each domain has its own background level,
so a model must learn the position, not the domain's brightness. Images are written once and reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def write_toy_domains(
    root: str | Path,
    domains: Sequence[str] = ("a", "b", "c"),
    num_classes: int = 2,
    per_class: int = 8,
    size: int = 16,
    seed: int = 0,
) -> Path:
    """Write ``len(domains) * num_classes * per_class`` grayscale PNGs under ``root`` and return ``root``.

    Examples:
        >>> import tempfile
        >>> from gaqat_recipes.data import load_dg_dataset
        >>> dd = load_dg_dataset(write_toy_domains(tempfile.mkdtemp(), per_class=2))
        >>> list(dd), dd["b"].num_rows, dd["b"].features["label"].names
        (['a', 'b', 'c'], 4, ['class0', 'class1'])
    """
    if num_classes < 1 or per_class < 1 or size < 8:
        raise ValueError("need num_classes >= 1, per_class >= 1 and size >= 8")
    root = Path(root)
    rng = np.random.RandomState(seed)
    square = max(2, size // 4)
    for domain_index, domain in enumerate(domains):
        background = 30 + 60 * domain_index % 180
        for label in range(num_classes):
            folder = root / domain / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            top = (label * (size - square)) // max(num_classes - 1, 1)
            for i in range(per_class):
                pixels = rng.normal(background, 20, (size, size)).clip(0, 255)
                left = rng.randint(0, size - square + 1)
                pixels[top:top + square, left:left + square] = 255
                Image.fromarray(pixels.astype(np.uint8), mode="L").save(folder / f"{i}.png")
    return root
