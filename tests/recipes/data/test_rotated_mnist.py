"""Rotated-MNIST follows DomainBed: one seeded shuffle, round-robin disjoint domains, each rotated by its angle."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from gaqat_recipes.data import MNIST_CLASSES, ROTATED_MNIST_ANGLES, build_rotated_mnist
from gaqat_recipes.data.rotated_mnist import _mnist_5k, rotate_digit

# Rotating by a multiple of 360 degrees is an exact copy in PIL, so these angles give the same domain
# membership as the default six angles (same seed, same number of domains) with unrotated pixels.
IDENTITY_ANGLES = (0, 360, 720, 1080, 1440, 1800)


def pixels(ds) -> np.ndarray:
    return np.stack([np.asarray(image) for image in ds["image"]])


def fingerprint(image: np.ndarray, label: int) -> str:
    return hashlib.sha1(image.tobytes() + bytes([label])).hexdigest()


def test_six_domains_named_by_angle_with_domainbed_sizes(rotated_mnist):
    assert list(rotated_mnist) == [str(a) for a in ROTATED_MNIST_ANGLES]
    assert {name: ds.num_rows for name, ds in rotated_mnist.items()} == {
        "0": 834, "15": 834, "30": 833, "45": 833, "60": 833, "75": 833,
    }


def test_domains_share_one_class_label_and_hold_every_digit(rotated_mnist):
    for index, (name, ds) in enumerate(rotated_mnist.items()):
        assert ds.features["label"].names == list(MNIST_CLASSES)
        assert ds.features["domain"].names == list(rotated_mnist)
        assert set(ds["domain"]) == {index}
        counts = Counter(ds["label"])
        assert set(counts) == set(range(10)), name
        assert min(counts.values()) > 50, counts  # 500 per digit spread over 6 domains


def test_images_are_28x28_grayscale(rotated_mnist):
    image = rotated_mnist["45"][0]["image"]
    assert image.size == (28, 28) and image.mode == "L"


def test_domains_are_a_disjoint_partition_of_mnist_5k():
    unrotated = build_rotated_mnist(seed=0, angles=IDENTITY_ANGLES)
    seen = Counter()
    for ds in unrotated.values():
        seen.update(fingerprint(img, lab) for img, lab in zip(pixels(ds), ds["label"], strict=True))
    images, labels = _mnist_5k()
    source = Counter(fingerprint(img, int(lab)) for img, lab in zip(images, labels, strict=True))
    assert seen == source  # every image exactly as often as in the source: no image in two domains, none dropped


def test_each_domain_is_its_subset_rotated_by_its_angle(rotated_mnist):
    unrotated = build_rotated_mnist(seed=0, angles=IDENTITY_ANGLES)
    for (name, ds), original in zip(rotated_mnist.items(), unrotated.values(), strict=True):
        assert ds["label"][:] == original["label"][:]
        expected = np.stack([np.asarray(rotate_digit(img, float(name))) for img in pixels(original)[:50]])
        np.testing.assert_array_equal(pixels(ds.select(range(50))), expected)
    assert not np.array_equal(pixels(rotated_mnist["75"].select(range(5))), pixels(unrotated["1800"].select(range(5))))


def test_same_seed_same_domains_other_seed_other_domains(rotated_mnist):
    again = build_rotated_mnist(seed=0)
    other = build_rotated_mnist(seed=1)
    np.testing.assert_array_equal(pixels(again["30"]), pixels(rotated_mnist["30"]))
    assert list(again["30"]["label"]) == list(rotated_mnist["30"]["label"])
    assert list(other["30"]["label"]) != list(rotated_mnist["30"]["label"])


def test_bad_angles_are_rejected():
    with pytest.raises(ValueError, match="at least two angles"):
        build_rotated_mnist(angles=[0])
    with pytest.raises(ValueError, match="distinct"):
        build_rotated_mnist(angles=[0, 15, 15.0])
