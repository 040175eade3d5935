"""Load an image folder laid out ``root/<domain>/<class>/<image>`` as a DG ``DatasetDict`` keyed by domain.

Images are referenced by path (``datasets.Image`` decodes them lazily), so building is fast and nothing
is copied. Domains and classes are sorted by name unless given, like DomainBed's ``ImageFolder`` datasets,
with numbers in names compared as numbers (``2`` before ``10``, ``class9`` before ``class10``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets

from gaqat_recipes.data.schema import dg_features

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""File suffixes (case-insensitive) read as images; other files are ignored."""


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that compares the digit runs of a name as numbers: ``2 < 10``, ``class9 < class10``.

    Examples:
        >>> sorted(["10", "2", "1", "class10", "class9"], key=natural_key)
        ['1', '2', '10', 'class9', 'class10']
    """
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part)


def _subfolders(folder: Path) -> list[str]:
    return sorted((entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith(".")),
                  key=natural_key)


def _image_files(folder: Path, extensions: Sequence[str]) -> list[str]:
    suffixes = {ext.lower() for ext in extensions}
    return sorted(
        str(folder / entry.name)
        for entry in os.scandir(folder)
        if entry.is_file() and not entry.name.startswith(".") and os.path.splitext(entry.name)[1].lower() in suffixes
    )


def _scan_domain(
    folder: Path, renames: Mapping[str, str], extensions: Sequence[str]
) -> dict[str, list[str]]:
    """Class name (after renaming) -> sorted image paths, for one domain folder."""
    found: dict[str, list[str]] = {}
    for class_folder in _subfolders(folder):
        class_name = renames.get(class_folder, class_folder)
        found.setdefault(class_name, []).extend(_image_files(folder / class_folder, extensions))
    unknown = set(renames) - set(_subfolders(folder))
    if unknown:
        raise ValueError(f"folder_to_class for {folder.name!r} renames {sorted(unknown)}, which are not sub-folders of {folder}")
    return found


def _resolve_classes(
    per_domain: Mapping[str, set[str]], classes: Sequence[str] | None, class_union: bool
) -> list[str]:
    union = set().union(*per_domain.values())
    if classes is not None:
        extra = union - set(classes)
        if extra:
            raise ValueError(
                f"folders name classes {sorted(extra)} that are not in classes={list(classes)}; add them or rename them"
            )
        resolved = list(classes)
    else:
        resolved = sorted(union, key=natural_key)
    if not class_union:
        missing = {domain: sorted(set(resolved) - found) for domain, found in per_domain.items() if set(resolved) - found}
        if missing:
            raise ValueError(
                f"domains do not share one class list: missing classes per domain {missing}. "
                "Every domain needs a folder for every class; pass class_union=True to use the union of classes "
                "(domains may then lack some classes), or folder_to_class={domain: {folder: class}} to map differing names."
            )
    return resolved


def load_image_folder(
    root: str | os.PathLike,
    *,
    domains: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    class_union: bool = False,
    folder_to_class: Mapping[str, Mapping[str, str]] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> datasets.DatasetDict:
    """Read ``root/<domain>/<class>/*.jpg|png|...`` into a ``DatasetDict`` keyed by domain folder name.

    Args:
        root: folder with one sub-folder per domain.
        domains: domain folders to read, in this order (default: all sub-folders, sorted).
        classes: class names in label order (default: sorted class folder names).
        class_union: allow domains that lack some classes (the label set is then the union); by default
            every domain must have a folder for every class, and a mismatch is an error.
        folder_to_class: per-domain renaming ``{domain: {folder_name: class_name}}`` for datasets whose
            folder names differ between domains (several folders may map to one class).
        extensions: file suffixes read as images.

    Examples:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for domain in ("photo", "sketch"):
        ...     for cls in ("cat", "dog"):
        ...         (root / domain / cls).mkdir(parents=True)
        ...         Image.new("RGB", (8, 8)).save(root / domain / cls / "0.png")
        >>> dd = load_image_folder(root)
        >>> list(dd), dd["sketch"].features["label"].names, dd["photo"].num_rows
        (['photo', 'sketch'], ['cat', 'dog'], 2)
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder at {root}: expected a directory laid out root/<domain>/<class>/<image>")
    available = _subfolders(root)
    if domains is None:
        domains = available
    unknown = [d for d in domains if d not in available]
    if unknown:
        raise ValueError(f"domains {unknown} are not sub-folders of {root}; available domains: {available}")
    if not domains:
        raise ValueError(f"{root} has no domain sub-folders; expected root/<domain>/<class>/<image>")
    folder_to_class = dict(folder_to_class or {})
    stray = set(folder_to_class) - set(domains)
    if stray:
        raise ValueError(f"folder_to_class names domains {sorted(stray)} that are not read; read domains: {list(domains)}")

    scanned = {d: _scan_domain(root / d, folder_to_class.get(d, {}), extensions) for d in domains}
    for domain, found in scanned.items():
        if sum(len(paths) for paths in found.values()) == 0 and _image_files(root / domain, extensions):
            raise ValueError(
                f"{root / domain} holds images directly, so {root} looks like root/<class>/<image>: the domain level "
                f"is missing. Domain generalization needs root/<domain>/<class>/<image>; put the class folders into "
                f"one folder per domain (e.g. {root}/<domain>/{domain}/...)"
            )
        if sum(len(paths) for paths in found.values()) == 0:
            raise ValueError(
                f"domain folder {root / domain} holds no images with suffixes {list(extensions)} in class sub-folders"
            )
    class_list = _resolve_classes({d: set(found) for d, found in scanned.items()}, classes, class_union)
    label_of = {name: index for index, name in enumerate(class_list)}
    features = dg_features(class_list, list(domains))

    result = {}
    for domain_index, (domain, found) in enumerate(scanned.items()):
        paths, labels = [], []
        for class_name in class_list:
            for path in found.get(class_name, []):
                paths.append({"path": path, "bytes": None})
                labels.append(label_of[class_name])
        columns = {"image": paths, "label": labels, "domain": [domain_index] * len(paths)}
        result[domain] = datasets.Dataset.from_dict(columns, features=features)
    return datasets.DatasetDict(result)
