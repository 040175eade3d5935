"""Any root/<domain>/<class>/<image> folder loads as a DatasetDict by domain, with clear errors for bad layouts."""

from __future__ import annotations

import pytest

from gaqat_recipes.data import PixelTransform, load_dg_dataset, load_image_folder

LAYOUT = {"photo": {"cat": 2, "dog": 3}, "sketch": {"cat": 1, "dog": 2}, "art": {"cat": 2, "dog": 1}}


def test_folder_loads_domains_and_shared_classes_sorted(make_folder):
    dd = load_dg_dataset(make_folder(LAYOUT))
    assert list(dd) == ["art", "photo", "sketch"]
    assert {name: ds.num_rows for name, ds in dd.items()} == {"art": 3, "photo": 5, "sketch": 3}
    assert dd["photo"].features["label"].names == ["cat", "dog"]
    assert list(dd["photo"]["label"]) == [0, 0, 1, 1, 1]
    assert dd["photo"].features["domain"].names == ["art", "photo", "sketch"]
    assert set(dd["sketch"]["domain"]) == {2}


def test_labels_match_the_class_folder_of_each_image(make_folder):
    dd = load_image_folder(make_folder(LAYOUT))
    batch = PixelTransform(size=4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)).collate(list(dd["photo"]))
    # write_folder paints class k with grey level 40 * k
    expected = batch["labels"].float() * 40 / 255
    assert batch["pixel_values"].mean(dim=(1, 2, 3)).sub(expected).abs().max() < 1e-6


def test_domains_option_selects_and_orders(make_folder):
    dd = load_image_folder(make_folder(LAYOUT), domains=["sketch", "photo"])
    assert list(dd) == ["sketch", "photo"]
    assert dd["photo"].features["domain"].names == ["sketch", "photo"]


def test_non_images_and_hidden_entries_are_ignored(make_folder):
    root = make_folder(LAYOUT)
    (root / "photo" / "cat" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()
    (root / "README.md").write_text("a file at the root")
    dd = load_image_folder(root)
    assert list(dd) == ["art", "photo", "sketch"]
    assert dd["photo"].num_rows == 5


def test_mismatched_classes_are_an_error_naming_the_option(make_folder):
    root = make_folder({"a": {"cat": 1, "dog": 1}, "b": {"cat": 1, "cow": 1}})
    with pytest.raises(ValueError, match=r"do not share one class list.*class_union=True"):
        load_image_folder(root)


def test_class_union_allows_domains_without_some_classes(make_folder):
    root = make_folder({"a": {"cat": 1, "dog": 1}, "b": {"cat": 1, "cow": 2}})
    dd = load_image_folder(root, class_union=True)
    assert dd["a"].features["label"].names == ["cat", "cow", "dog"]
    assert list(dd["b"]["label"]) == [0, 1, 1]


def test_folder_to_class_maps_differing_folder_names(make_folder):
    root = make_folder({"a": {"car": 1, "dog": 1}, "b": {"auto": 2, "hund": 1}})
    dd = load_image_folder(root, folder_to_class={"b": {"auto": "car", "hund": "dog"}})
    assert dd["b"].features["label"].names == ["car", "dog"]
    assert list(dd["b"]["label"]) == [0, 0, 1]


def test_explicit_classes_fix_the_label_order_and_reject_strays(make_folder):
    root = make_folder({"a": {"cat": 1, "dog": 1}, "b": {"cat": 1, "dog": 1}})
    assert load_image_folder(root, classes=["dog", "cat"])["a"].features["label"].names == ["dog", "cat"]
    with pytest.raises(ValueError, match=r"not in classes"):
        load_image_folder(root, classes=["cat"])


def test_missing_folder_unknown_domain_and_empty_domain_are_errors(make_folder, tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dg_dataset(tmp_path / "does_not_exist")
    with pytest.raises(FileNotFoundError, match="no image folder"):
        load_image_folder(tmp_path / "does_not_exist")
    root = make_folder(LAYOUT)
    with pytest.raises(ValueError, match=r"not sub-folders.*available domains"):
        load_image_folder(root, domains=["photo", "clipart"])
    (root / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        load_image_folder(root)


def test_a_flat_class_folder_is_told_that_the_domain_level_is_missing(tmp_path):
    from PIL import Image

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / name / "0.png")
    with pytest.raises(ValueError, match=r"the domain level is missing.*root/<domain>/<class>/<image>"):
        load_image_folder(tmp_path)


def test_numbered_class_and_domain_folders_sort_as_numbers(make_folder):
    layout = {f"site{d}": {str(c): 1 for c in (1, 2, 10, 11)} for d in (2, 10)}
    dd = load_image_folder(make_folder(layout))
    assert list(dd) == ["site2", "site10"]
    assert dd["site2"].features["label"].names == ["1", "2", "10", "11"]
