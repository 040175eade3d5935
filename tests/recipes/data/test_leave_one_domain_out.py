"""Leave-one-domain-out: the held-out domain is only in test; validation comes from each training domain."""

from __future__ import annotations

from collections import Counter

import pytest

from gaqat_recipes.data import leave_one_domain_out


def test_held_out_domain_is_absent_from_train_and_validation(rotated_mnist):
    splits = leave_one_domain_out(rotated_mnist, test_domain="30", val_fraction=0.2, seed=0)
    names = rotated_mnist["0"].features["domain"].names
    test_index = names.index("30")
    assert set(splits["test"]["domain"]) == {test_index}
    assert test_index not in set(splits["train"]["domain"]) | set(splits["validation"]["domain"])
    assert splits["test"].num_rows == rotated_mnist["30"].num_rows


def test_validation_holds_out_the_fraction_of_every_training_domain(rotated_mnist):
    splits = leave_one_domain_out(rotated_mnist, test_domain="75", val_fraction=0.2)
    names = rotated_mnist["0"].features["domain"].names
    val_counts = Counter(splits["validation"]["domain"])
    train_counts = Counter(splits["train"]["domain"])
    for name in ["0", "15", "30", "45", "60"]:
        total = rotated_mnist[name].num_rows
        assert val_counts[names.index(name)] == int(total * 0.2)
        assert train_counts[names.index(name)] + val_counts[names.index(name)] == total


def test_train_and_validation_do_not_overlap(rotated_mnist):
    splits = leave_one_domain_out(rotated_mnist, test_domain="0", val_fraction=0.3, seed=3)
    images = lambda ds: {(img.tobytes(), d) for img, d in zip(ds["image"], ds["domain"], strict=True)}  # noqa: E731
    train, val = images(splits["train"]), images(splits["validation"])
    assert len(train) == splits["train"].num_rows and len(val) == splits["validation"].num_rows
    assert not train & val


def test_same_seed_same_split_other_seed_other_split(rotated_mnist):
    a = leave_one_domain_out(rotated_mnist, "15", seed=7)["validation"]
    b = leave_one_domain_out(rotated_mnist, "15", seed=7)["validation"]
    c = leave_one_domain_out(rotated_mnist, "15", seed=8)["validation"]
    assert [x.tobytes() for x in a["image"][:40]] == [x.tobytes() for x in b["image"][:40]]
    assert [x.tobytes() for x in a["image"][:40]] != [x.tobytes() for x in c["image"][:40]]


def test_integer_domain_is_read_as_its_name(rotated_mnist):
    assert leave_one_domain_out(rotated_mnist, 45)["test"].num_rows == rotated_mnist["45"].num_rows


def test_tiny_domains_still_give_one_validation_example_each(make_folder):
    from gaqat_recipes.data import load_image_folder

    dd = load_image_folder(make_folder({"a": {"x": 2, "y": 1}, "b": {"x": 1, "y": 1}, "c": {"x": 1, "y": 1}}))
    splits = leave_one_domain_out(dd, "c", val_fraction=0.1)
    assert splits["validation"].num_rows == 2 and splits["train"].num_rows == 3


def test_unknown_domain_and_bad_fraction_are_errors(rotated_mnist):
    with pytest.raises(ValueError, match=r"unknown domain '90'.*\['0', '15'"):
        leave_one_domain_out(rotated_mnist, "90")
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        leave_one_domain_out(rotated_mnist, "0", val_fraction=1.0)
    with pytest.raises(ValueError, match="DatasetDict keyed by domain"):
        leave_one_domain_out(rotated_mnist["0"], "0")
