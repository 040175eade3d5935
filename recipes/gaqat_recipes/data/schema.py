"""The shape every domain-generalization dataset takes here: a ``DatasetDict`` keyed by domain name.

Each split of the dict is one domain and has the same three columns:

- ``image``: a ``datasets.Image`` (decoded to ``PIL.Image.Image``),
- ``label``: a ``datasets.ClassLabel`` shared by all domains (same names, same order),
- ``domain``: a ``datasets.ClassLabel`` over the domain names (so concatenated training domains keep track of their origin).
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets

IMAGE_COLUMN = "image"
"""Name of the image column (a ``datasets.Image`` feature)."""
LABEL_COLUMN = "label"
"""Name of the class-label column (a ``datasets.ClassLabel`` shared by all domains)."""
DOMAIN_COLUMN = "domain"
"""Name of the domain column (a ``datasets.ClassLabel`` over the domain names)."""


def dg_features(class_names: Sequence[str], domain_names: Sequence[str]) -> datasets.Features:
    """Features shared by every domain of a DG dataset: ``image``, ``label`` and ``domain``.

    Args:
        class_names: class names in label-index order.
        domain_names: domain names in domain-index order.

    Examples:
        >>> f = dg_features(["cat", "dog"], ["photo", "sketch"])
        >>> f["label"].names, f["domain"].names
        (['cat', 'dog'], ['photo', 'sketch'])
    """
    if len(class_names) == 0:
        raise ValueError("a DG dataset needs at least one class; got an empty class list")
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class names must be unique; got {list(class_names)}")
    if len(set(domain_names)) != len(domain_names):
        raise ValueError(f"domain names must be unique; got {list(domain_names)}")
    return datasets.Features(
        {
            IMAGE_COLUMN: datasets.Image(),
            LABEL_COLUMN: datasets.ClassLabel(names=list(class_names)),
            DOMAIN_COLUMN: datasets.ClassLabel(names=list(domain_names)),
        }
    )


def class_names(dd: datasets.DatasetDict) -> list[str]:
    """The shared class names of a DG ``DatasetDict`` (label index -> name).

    Examples:
        >>> import datasets
        >>> feats = dg_features(["a", "b"], ["d0"])
        >>> empty = datasets.Dataset.from_dict({"image": [], "label": [], "domain": []}, features=feats)
        >>> dd = datasets.DatasetDict({"d0": empty})
        >>> class_names(dd)
        ['a', 'b']
    """
    check_dg_dict(dd)
    first = next(iter(dd.values()))
    return list(first.features[LABEL_COLUMN].names)


def check_dg_dict(dd: datasets.DatasetDict) -> None:
    """Raise a ``ValueError`` unless ``dd`` is a non-empty ``DatasetDict`` whose domains share one ``ClassLabel``.

    Examples:
        >>> import datasets
        >>> check_dg_dict(datasets.DatasetDict())
        Traceback (most recent call last):
        ...
        ValueError: expected a DatasetDict with at least one domain; got an empty DatasetDict
    """
    if not isinstance(dd, datasets.DatasetDict):
        raise ValueError(
            f"expected a datasets.DatasetDict keyed by domain; got {type(dd).__name__}. "
            "Build one with gaqat_recipes.data.load_dg_dataset(...) or gaqat_recipes.data.from_hf_dataset(...)."
        )
    if len(dd) == 0:
        raise ValueError("expected a DatasetDict with at least one domain; got an empty DatasetDict")
    reference = None
    for name, ds in dd.items():
        label = ds.features.get(LABEL_COLUMN)
        if not isinstance(label, datasets.ClassLabel):
            raise ValueError(
                f"domain {name!r} has no ClassLabel column {LABEL_COLUMN!r} (features: {dict(ds.features)}); "
                "convert it with gaqat_recipes.data.from_hf_dataset(...)."
            )
        if reference is None:
            reference = label.names
        elif label.names != reference:
            raise ValueError(f"domain {name!r} has classes {label.names} but the first domain has {reference}; all must match")
