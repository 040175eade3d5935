"""gaqat-recipes: the domain-generalization study of gaqat-wrap, a user of the library.

Leave-one-domain-out training with training-domain model selection for every method the study compares,
sweeps, ablations and their reports; datasets in :mod:`gaqat_recipes.data`, models in :mod:`gaqat_recipes.models`.
A run (:func:`train_dg`, :mod:`gaqat_recipes.run`) goes config -> data -> model -> quantize and calibrate ->
optimizer -> loop -> report, one module each. It imports only gaqat_wrap's public API.

Examples:
    >>> from gaqat_recipes import METHODS, TrainConfig
    >>> list(METHODS)[:6]
    ['fp', 'fp-sam', 'qat', 'sam-qat', 'sagm-qat', 'gaqat']
    >>> TrainConfig(test_domain="75", method="sam-qat").gaqat_config().freeze_threshold is None
    True
"""

from gaqat_recipes.ablation import GAQAT_ABLATIONS, AblationVariant, ablation_variant, run_ablation
from gaqat_recipes.checkpoint import load_checkpoint, save_checkpoint
from gaqat_recipes.config import TrainConfig, check_dataset_source
from gaqat_recipes.data.run_data import RunData, load_run_data, load_splits
from gaqat_recipes.evaluation import accuracy_by_domain, evaluate_per_domain, predicted_labels
from gaqat_recipes.loop import FitResult, fit
from gaqat_recipes.methods import METHODS, MethodSpec, method_spec
from gaqat_recipes.optimizer import FreezeTrace, RunOptimizer, build_optimizer
from gaqat_recipes.quantize import quantize_and_calibrate
from gaqat_recipes.reporting.sweep_report import load_sweep_runs, rebuild_sweep_report, write_sweep_report
from gaqat_recipes.run import train_dg
from gaqat_recipes.sweep import SweepSpec, run_sweep
from gaqat_recipes.toy import write_toy_domains

__all__ = [
    "GAQAT_ABLATIONS",
    "METHODS",
    "AblationVariant",
    "FitResult",
    "FreezeTrace",
    "MethodSpec",
    "RunData",
    "RunOptimizer",
    "SweepSpec",
    "TrainConfig",
    "ablation_variant",
    "accuracy_by_domain",
    "build_optimizer",
    "check_dataset_source",
    "evaluate_per_domain",
    "fit",
    "load_checkpoint",
    "load_run_data",
    "load_splits",
    "load_sweep_runs",
    "method_spec",
    "predicted_labels",
    "quantize_and_calibrate",
    "rebuild_sweep_report",
    "run_ablation",
    "run_sweep",
    "save_checkpoint",
    "train_dg",
    "write_sweep_report",
    "write_toy_domains",
]
