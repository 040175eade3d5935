"""Integrations with training frameworks: transformers.Trainer (callback and subclass)."""

from gaqat_wrap.integrations.peft import train_scales
from gaqat_wrap.integrations.trainer import GAQATCallback, GAQATTrainer, freeze_log_entries

__all__ = ["GAQATCallback", "GAQATTrainer", "freeze_log_entries", "train_scales"]
