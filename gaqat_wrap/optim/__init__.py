"""GAQATOptimizer: SAM-family steps with conflict-aware freezing of quantizer step sizes."""

from gaqat_wrap.optim.config import GAQATConfig
from gaqat_wrap.optim.conflict import ConflictTracker, ScaleStatus, conflict_flags, scale_grad_conflict
from gaqat_wrap.optim.gaqat import FirstPassDone, GAQATOptimizer
from gaqat_wrap.optim.strategies import ASAM, SAGM, SAM, strategy_for

__all__ = [
    "ASAM",
    "SAGM",
    "SAM",
    "ConflictTracker",
    "FirstPassDone",
    "GAQATConfig",
    "GAQATOptimizer",
    "ScaleStatus",
    "conflict_flags",
    "scale_grad_conflict",
    "strategy_for",
]
