"""PixelTransform gives normalised (N, 3, H, W) float pixel_values and long labels that timm and HF models accept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gaqat_recipes.data import IMAGENET_MEAN, IMAGENET_STD, PixelTransform, make_dataloader


def test_grayscale_becomes_three_equal_channels_scaled_to_minus_one_one():
    black_white = Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8))
    values = PixelTransform(size=2).pixel_values([black_white])
    assert values.shape == (1, 3, 2, 2) and values.dtype == torch.float32
    expected = torch.tensor([[-1.0, 1.0], [1.0, -1.0]])
    for channel in range(3):
        torch.testing.assert_close(values[0, channel], expected)


def test_imagenet_normalisation_per_channel():
    red = Image.new("RGB", (3, 3), (255, 0, 0))
    values = PixelTransform(size=3, mean=IMAGENET_MEAN, std=IMAGENET_STD).pixel_values([red])
    expected = [(level - mean) / std for level, mean, std in zip((1, 0, 0), IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    torch.testing.assert_close(values[0, :, 1, 1], torch.tensor(expected))


def test_resizes_any_input_size_and_type_to_the_requested_size():
    inputs = [Image.new("RGB", (50, 30)), Image.new("L", (28, 28)), np.zeros((10, 12), np.uint8), np.zeros((9, 9, 3), np.uint8)]
    assert PixelTransform(size=(24, 32)).pixel_values(inputs).shape == (4, 3, 24, 32)
    assert PixelTransform(size=16, mean=(0.5,), std=(0.5,), channels=1).pixel_values(inputs).shape == (4, 1, 16, 16)


def test_with_transform_and_collate_give_the_same_batch(rotated_mnist):
    transform = PixelTransform(size=32, keep_columns=("domain",))
    ds = rotated_mnist["15"].select(range(6))
    via_collate = transform.collate(list(ds))
    via_with_transform = ds.with_transform(transform)[0:6]
    for key in ("pixel_values", "labels", "domain"):
        torch.testing.assert_close(via_collate[key], via_with_transform[key])
    assert via_collate["labels"].dtype == torch.long and via_collate["domain"].tolist() == [1] * 6


def test_dataloader_shuffle_is_seeded_and_covers_every_example(rotated_mnist):
    ds = rotated_mnist["60"].select(range(40))
    order = lambda seed: torch.cat([b["labels"] for b in make_dataloader(ds, PixelTransform(), 16, shuffle=True, seed=seed)])  # noqa: E731
    assert torch.equal(order(3), order(3))
    assert sorted(order(3).tolist()) == sorted(ds["label"])
    assert not torch.equal(order(3), order(4))


def test_batches_feed_a_timm_model_and_a_hugging_face_model(rotated_mnist):
    timm = pytest.importorskip("timm")
    from transformers import ViTConfig, ViTForImageClassification

    batch = next(iter(make_dataloader(rotated_mnist["0"], PixelTransform(size=32), batch_size=4)))
    cnn = timm.create_model("resnet18", pretrained=False, num_classes=10)
    assert cnn(batch["pixel_values"]).shape == (4, 10)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, num_labels=10)
    output = ViTForImageClassification(config)(**batch)
    assert output.logits.shape == (4, 10) and torch.isfinite(output.loss)


def test_bad_transform_settings_are_rejected():
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        PixelTransform(channels=2)
    with pytest.raises(ValueError, match="one per channel"):
        PixelTransform(mean=(0.5,))
    with pytest.raises(ValueError, match="std values must be positive"):
        PixelTransform(std=(0.5, 0.0, 0.5))
    with pytest.raises(KeyError, match="no image column 'image'"):
        PixelTransform()({"img": [], "label": []})


def test_colour_to_grey_for_a_one_channel_model_is_said_once():
    import warnings

    from PIL import Image

    grey_model_input = PixelTransform(size=8, mean=(0.5,), std=(0.5,), channels=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            grey_model_input.pixel_values([Image.new("RGB", (8, 8), (200, 10, 10))])
        grey_model_input.pixel_values([Image.new("L", (8, 8))])  # grey input: nothing to say
    messages = [str(w.message) for w in caught if "converted to grey" in str(w.message)]
    assert len(messages) == 1 and "1 input channel" in messages[0]
