"""Integrations with training frameworks: transformers.Trainer (callback and subclass), peft, freeze logs.

``GAQATCallback`` and ``GAQATTrainer`` need transformers (``pip install 'gaqat-wrap[trainer]'``); they are
imported on first use, so importing this package does not import transformers.

Examples:
    >>> from gaqat_wrap.integrations import GAQATCallback
    >>> GAQATCallback(window=4).config.window
    4
"""

from typing import Any

from gaqat_wrap.integrations.freeze_log import freeze_log_entries
from gaqat_wrap.integrations.peft import train_scales

_NEEDS_TRANSFORMERS = ("GAQATCallback", "GAQATTrainer")

__all__ = ["GAQATCallback", "GAQATTrainer", "freeze_log_entries", "train_scales"]


def __getattr__(name: str) -> Any:
    if name in _NEEDS_TRANSFORMERS:
        from gaqat_wrap.integrations import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
