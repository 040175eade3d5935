"""GAQATOptimizer: SAM-family steps with conflict-aware freezing of quantizer step sizes; oscillation freezing of weights."""

from gaqat_wrap.optim.batchnorm import reestimate_batchnorm
from gaqat_wrap.optim.config import GAQATConfig
from gaqat_wrap.optim.conflict import ConflictTracker, ScaleStatus, conflict_flags, scale_grad_conflict
from gaqat_wrap.optim.dampening import dampening_loss
from gaqat_wrap.optim.gaqat import FirstPassDone, GAQATOptimizer
from gaqat_wrap.optim.oscillation import OscillationFreezer, OscillationStatus
from gaqat_wrap.optim.oscillation_config import OscillationConfig, cosine_anneal
from gaqat_wrap.optim.strategies import ASAM, SAGM, SAM, strategy_for

__all__ = [
    "ASAM",
    "SAGM",
    "SAM",
    "ConflictTracker",
    "FirstPassDone",
    "GAQATConfig",
    "GAQATOptimizer",
    "OscillationConfig",
    "OscillationFreezer",
    "OscillationStatus",
    "ScaleStatus",
    "conflict_flags",
    "cosine_anneal",
    "dampening_loss",
    "reestimate_batchnorm",
    "scale_grad_conflict",
    "strategy_for",
]
