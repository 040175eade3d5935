"""GAQATOptimizer: SAM-family steps with conflict-aware freezing of quantizer step sizes."""

from gaqat_wrap.optim.config import GAQATConfig
from gaqat_wrap.optim.conflict import ConflictTracker, ScaleStatus, conflict_flags, scale_grad_conflict
from gaqat_wrap.optim.gaqat import GAQATOptimizer
from gaqat_wrap.optim.perturbation import iter_perturbation, perturbation

__all__ = [
    "ConflictTracker",
    "GAQATConfig",
    "GAQATOptimizer",
    "ScaleStatus",
    "conflict_flags",
    "iter_perturbation",
    "perturbation",
    "scale_grad_conflict",
]
