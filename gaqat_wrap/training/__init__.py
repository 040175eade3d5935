"""Leave-one-domain-out training with training-domain model selection, for every method the recipes compare.

Examples:
    >>> from gaqat_wrap.training import METHODS, TrainConfig
    >>> list(METHODS)
    ['fp', 'fp-sam', 'qat', 'sam-qat', 'sagm-qat', 'gaqat']
    >>> TrainConfig(test_domain="75", method="sam-qat").gaqat_config().freeze_threshold is None
    True
"""

from gaqat_wrap.training.ablation import GAQAT_ABLATIONS, AblationVariant, ablation_variant, run_ablation
from gaqat_wrap.training.checkpoint import load_checkpoint, save_checkpoint
from gaqat_wrap.training.config import TrainConfig, check_dataset_source
from gaqat_wrap.training.evaluation import accuracy_by_domain
from gaqat_wrap.training.loop import train_dg
from gaqat_wrap.training.methods import METHODS, MethodSpec, method_spec
from gaqat_wrap.training.setup import RunInputs, build_run_inputs, load_splits, quantize_and_calibrate
from gaqat_wrap.training.sweep import SweepSpec, load_sweep_runs, run_sweep, write_sweep_report
from gaqat_wrap.training.toy import write_toy_domains

__all__ = [
    "GAQAT_ABLATIONS",
    "METHODS",
    "AblationVariant",
    "MethodSpec",
    "RunInputs",
    "SweepSpec",
    "TrainConfig",
    "ablation_variant",
    "accuracy_by_domain",
    "build_run_inputs",
    "check_dataset_source",
    "load_checkpoint",
    "load_splits",
    "load_sweep_runs",
    "method_spec",
    "quantize_and_calibrate",
    "run_ablation",
    "run_sweep",
    "save_checkpoint",
    "train_dg",
    "write_sweep_report",
    "write_toy_domains",
]
