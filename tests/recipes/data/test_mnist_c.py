"""MNIST-C-style domains: a disjoint partition of MNIST-5k, each domain its own seeded corruption."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from gaqat_recipes.data import load_dg_dataset
from gaqat_recipes.data.mnist_c import CORRUPTIONS, MNIST_C_DOMAINS, build_mnist_c, corrupt
from gaqat_recipes.data.rotated_mnist import MNIST_CLASSES, _mnist_5k


@pytest.fixture(scope="module")
def mnist_c():
    return build_mnist_c(seed=0)


def test_eight_domains_of_625_images_with_every_digit(mnist_c):
    assert list(mnist_c) == list(MNIST_C_DOMAINS) and len(MNIST_C_DOMAINS) == 8
    for index, (name, ds) in enumerate(mnist_c.items()):
        assert ds.num_rows == 625 and set(ds["domain"]) == {index}
        assert ds.features["label"].names == list(MNIST_CLASSES)
        assert set(Counter(ds["label"])) == set(range(10)), name
        image = ds[0]["image"]
        assert image.size == (28, 28) and image.mode == "L"


def test_identity_domain_holds_the_source_pixels_and_labels():
    clean = build_mnist_c(seed=0, corruptions=("identity", "fog"))["identity"]
    images, labels = _mnist_5k()
    order = np.random.RandomState(0).permutation(len(images))[0::2]
    got = np.stack([np.asarray(image) for image in clean["image"]])
    assert np.array_equal(got, images[order]) and clean["label"] == labels[order].tolist()


def test_every_corruption_changes_a_digit_keeps_the_range_and_is_reproducible():
    images, _ = _mnist_5k()
    digit = images[0] / 255.0
    for name in CORRUPTIONS:
        out = corrupt(digit, name, seed=0, index=0)
        assert out.shape == (28, 28) and out.min() >= 0.0 and out.max() <= 1.0, name
        assert np.array_equal(out, corrupt(digit, name, seed=0, index=0)), name
        if name != "identity":
            assert np.abs(out - digit).mean() > 0.01, name  # a real shift, not a copy


def test_same_seed_same_pixels_other_seed_other_partition():
    a = build_mnist_c(seed=0, corruptions=("identity", "shear"))
    b = build_mnist_c(seed=0, corruptions=("identity", "shear"))
    c = build_mnist_c(seed=1, corruptions=("identity", "shear"))
    assert a["shear"]["image"][:5] == b["shear"]["image"][:5]
    assert a["shear"]["label"] != c["shear"]["label"]


def test_registry_builds_it_by_name():
    assert list(load_dg_dataset("mnist_c")) == list(MNIST_C_DOMAINS)


@pytest.mark.parametrize("bad", [("fog",), ("fog", "fog"), ("identity", "rain")])
def test_bad_domain_lists_are_refused(bad):
    with pytest.raises(ValueError, match="corruption"):
        build_mnist_c(corruptions=bad)
