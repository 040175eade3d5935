"""A Hugging Face dataset with a domain column (in memory or saved to disk) becomes a DatasetDict by domain."""

from __future__ import annotations

import datasets
import pytest
from PIL import Image

from gaqat_recipes.data import PixelTransform, from_hf_dataset, load_dg_dataset


def table(**columns) -> datasets.Dataset:
    ds = datasets.Dataset.from_dict(columns)
    return ds.cast_column("img", datasets.Image()) if "img" in columns else ds


def images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (6, 6), (10 * i, 0, 0)) for i in range(n)]


def test_string_domains_and_string_labels_split_by_domain():
    ds = table(img=images(5), y=["dog", "cat", "dog", "cat", "cat"], site=["s2", "s1", "s1", "s2", "s2"])
    dd = from_hf_dataset(ds, domain_column="site", image_column="img", label_column="y")
    assert list(dd) == ["s1", "s2"]
    assert dd["s1"].features["label"].names == ["cat", "dog"] == dd["s2"].features["label"].names
    assert list(dd["s1"]["label"]) == [0, 1] and list(dd["s2"]["label"]) == [1, 0, 0]
    assert set(dd["s2"]["domain"]) == {1}
    assert [img.getpixel((0, 0))[0] for img in dd["s1"]["image"]] == [10, 20]  # rows 1 and 2, in order


def test_classlabel_columns_keep_their_names_and_order():
    ds = table(img=images(4), label=[2, 0, 1, 2], domain=[1, 0, 1, 0])
    ds = ds.cast_column("label", datasets.ClassLabel(names=["z", "y", "x"]))
    ds = ds.cast_column("domain", datasets.ClassLabel(names=["real", "clipart"]))
    dd = from_hf_dataset(ds, image_column="img")
    assert list(dd) == ["real", "clipart"]
    assert dd["real"].features["label"].names == ["z", "y", "x"]
    assert list(dd["clipart"]["label"]) == [2, 1]


def test_integer_labels_become_a_classlabel_named_by_index():
    dd = from_hf_dataset(table(img=images(3), label=[0, 3, 1], domain=["a", "b", "a"]), image_column="img")
    assert dd["a"].features["label"].names == ["0", "1", "2", "3"]


def test_saved_dataset_folder_loads_offline_through_the_entry_point(tmp_path):
    table(img=images(4), label=[0, 1, 0, 1], domain=["a", "a", "b", "b"]).save_to_disk(str(tmp_path / "saved"))
    dd = load_dg_dataset(tmp_path / "saved", image_column="img")
    assert {name: ds.num_rows for name, ds in dd.items()} == {"a": 2, "b": 2}
    batch = PixelTransform(size=8).collate(list(dd["b"]))
    assert batch["pixel_values"].shape == (2, 3, 8, 8)


def test_datasetdict_with_domain_column_is_concatenated_then_split():
    splits = datasets.DatasetDict({
        "train": table(img=images(2), label=[0, 1], domain=["a", "b"]),
        "test": table(img=images(2), label=[1, 1], domain=["a", "b"]),
    })
    dd = load_dg_dataset(splits, image_column="img")
    assert {name: list(ds["label"]) for name, ds in dd.items()} == {"a": [0, 1], "b": [1, 1]}


def test_datasetdict_keyed_by_domain_with_domain_column_none():
    keyed = datasets.DatasetDict({"photo": table(img=images(2), label=[0, 1]), "sketch": table(img=images(1), label=[1])})
    dd = from_hf_dataset(keyed, domain_column=None, image_column="img")
    assert list(dd) == ["photo", "sketch"] and dd["sketch"].num_rows == 1


def test_missing_columns_domains_and_paths_are_clear_errors(tmp_path):
    ds = table(img=images(2), label=[0, 1], site=["a", "b"])
    with pytest.raises(ValueError, match=r"domain column 'domain' not found.*\['img', 'label', 'site'\]"):
        from_hf_dataset(ds, image_column="img")
    with pytest.raises(ValueError, match=r"domains \['c'\] do not occur"):
        from_hf_dataset(ds, domain_column="site", image_column="img", domains=["a", "c"])
    with pytest.raises(FileNotFoundError, match="no saved Hugging Face dataset"):
        from_hf_dataset(tmp_path / "nothing")
    with pytest.raises(ValueError, match="domain_column=None needs a DatasetDict"):
        from_hf_dataset(ds, domain_column=None, image_column="img")
