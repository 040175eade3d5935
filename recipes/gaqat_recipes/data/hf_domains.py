"""Turn a Hugging Face dataset with a domain column (in memory or saved with ``save_to_disk``) into a DG ``DatasetDict``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets
import numpy as np

from gaqat_recipes.data.schema import DOMAIN_COLUMN, IMAGE_COLUMN, LABEL_COLUMN, dg_features

HFData = datasets.Dataset | datasets.DatasetDict | str | os.PathLike


def is_saved_hf_dataset(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``.

    Examples:
        >>> import tempfile
        >>> is_saved_hf_dataset(tempfile.mkdtemp())
        False
    """
    folder = Path(path)
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _as_dataset(data: HFData, domain_column: str | None) -> datasets.Dataset | datasets.DatasetDict:
    if isinstance(data, (str, os.PathLike)):
        if not Path(data).is_dir():
            raise FileNotFoundError(f"no saved Hugging Face dataset at {data}: expected a folder written by save_to_disk")
        data = datasets.load_from_disk(str(data))
    if isinstance(data, datasets.DatasetDict) and domain_column is not None:
        missing = [split for split, ds in data.items() if domain_column not in ds.column_names]
        if missing:
            raise ValueError(
                f"splits {missing} have no domain column {domain_column!r}; "
                "name the column with domain_column=..., or pass domain_column=None if the DatasetDict keys are the domains"
            )
        data = datasets.concatenate_datasets(list(data.values()))
    if not isinstance(data, (datasets.Dataset, datasets.DatasetDict)):
        raise ValueError(f"expected a datasets.Dataset, DatasetDict or a save_to_disk folder; got {type(data).__name__}")
    return data


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    # A cast is a library-internal detail; its progress bar would only clutter the user's log.
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _label_encoding(ds: datasets.Dataset, column: str) -> tuple[list[str], list[int]]:
    feature = ds.features[column]
    values = list(ds[column])
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), [int(v) for v in values]
    if isinstance(feature, datasets.Value) and feature.dtype == "string":
        names = sorted(set(values))
        index = {name: i for i, name in enumerate(names)}
        return names, [index[v] for v in values]
    if isinstance(feature, datasets.Value) and ("int" in feature.dtype):
        ints = np.asarray(values, dtype=np.int64)
        if len(ints) and ints.min() < 0:
            raise ValueError(f"label column {column!r} has negative values; labels must be 0..num_classes-1")
        return [str(i) for i in range(int(ints.max()) + 1 if len(ints) else 0)], ints.tolist()
    raise ValueError(f"label column {column!r} has feature {feature}; expected a ClassLabel, integer or string column")


def _domain_names(ds: datasets.Dataset, column: str) -> tuple[list[str], list[str]]:
    feature = ds.features[column]
    values = list(ds[column])
    if isinstance(feature, datasets.ClassLabel):
        as_names = [feature.int2str(int(v)) for v in values]
        present = set(as_names)
        return [name for name in feature.names if name in present], as_names
    ordered = sorted(set(values))
    return [str(v) for v in ordered], [str(v) for v in values]


def from_hf_dataset(
    data: HFData,
    *,
    domain_column: str | None = DOMAIN_COLUMN,
    image_column: str = IMAGE_COLUMN,
    label_column: str = LABEL_COLUMN,
    domains: Sequence[str] | None = None,
) -> datasets.DatasetDict:
    """Split a Hugging Face image-classification dataset by its domain column into a DG ``DatasetDict``.

    The result has the standard columns ``image`` / ``label`` (a ``ClassLabel`` shared by all domains) /
    ``domain``. Labels may be a ``ClassLabel``, integers (named ``"0"``, ``"1"``, ...) or strings (sorted).
    Domain names are the ``ClassLabel`` names of the domain column, or ``str(value)`` of its values.

    Args:
        data: a ``Dataset``, a ``DatasetDict`` (its splits are concatenated first), or a folder written by
            ``save_to_disk`` (read offline with ``load_from_disk``).
        domain_column: column naming each row's domain; ``None`` when ``data`` is a ``DatasetDict`` whose
            keys already are the domains.
        image_column: column holding images (a ``datasets.Image`` or anything castable to it, e.g. paths).
        label_column: column holding class labels.
        domains: keep only these domains, in this order (default: all, sorted).

    Examples:
        >>> import datasets
        >>> from PIL import Image
        >>> ds = datasets.Dataset.from_dict({"img": [Image.new("RGB", (4, 4))] * 4, "y": ["cat", "dog", "dog", "cat"],
        ...                                  "site": ["a", "a", "b", "b"]}).cast_column("img", datasets.Image())
        >>> dd = from_hf_dataset(ds, domain_column="site", image_column="img", label_column="y")
        >>> list(dd), list(dd["b"]["label"]), dd["a"].features["label"].names
        (['a', 'b'], [1, 0], ['cat', 'dog'])
    """
    data = _as_dataset(data, domain_column)
    if isinstance(data, datasets.DatasetDict):  # keys are the domains
        data = datasets.concatenate_datasets(
            [ds.add_column("__domain__", [name] * ds.num_rows) for name, ds in data.items()]
        )
        domain_column = "__domain__"
    if domain_column is None:
        raise ValueError("domain_column=None needs a DatasetDict keyed by domain; a single Dataset needs its domain column named")
    for role, column in (("domain", domain_column), ("image", image_column), ("label", label_column)):
        if column not in data.column_names:
            raise ValueError(
                f"{role} column {column!r} not found; the dataset has columns {data.column_names} (pass {role}_column=...)"
            )

    class_list, labels = _label_encoding(data, label_column)
    domain_list, row_domains = _domain_names(data, domain_column)
    if domains is not None:
        unknown = [d for d in domains if d not in domain_list]
        if unknown:
            raise ValueError(f"domains {unknown} do not occur in column {domain_column!r}; available domains: {domain_list}")
        domain_list = list(domains)
    domain_index = {name: i for i, name in enumerate(domain_list)}

    base = data.select_columns([image_column])
    if image_column != IMAGE_COLUMN:
        base = base.rename_column(image_column, IMAGE_COLUMN)
    base = base.add_column(LABEL_COLUMN, labels).add_column(DOMAIN_COLUMN, [domain_index.get(d, -1) for d in row_domains])
    features = dg_features(class_list, domain_list)
    try:
        with _quiet_progress():
            base = base.cast(features)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"could not cast image column {image_column!r} ({data.features[image_column]}) to datasets.Image: {err}. "
            "Store images as PIL images, file paths or encoded bytes."
        ) from err
    domain_of_row = np.asarray([domain_index.get(d, -1) for d in row_domains])
    return datasets.DatasetDict({name: base.select(np.flatnonzero(domain_of_row == i)) for name, i in domain_index.items()})
