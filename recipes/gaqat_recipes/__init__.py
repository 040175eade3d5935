"""gaqat-recipes: the domain-generalization study of gaqat-wrap, a user of the library.

Leave-one-domain-out training with training-domain model selection for every method the study compares,
sweeps, ablations and their reports; datasets in :mod:`gaqat_recipes.data`, models in :mod:`gaqat_recipes.models`.

Examples:
    >>> from gaqat_recipes import METHODS, TrainConfig
    >>> list(METHODS)
    ['fp', 'fp-sam', 'qat', 'sam-qat', 'sagm-qat', 'gaqat']
    >>> TrainConfig(test_domain="75", method="sam-qat").gaqat_config().freeze_threshold is None
    True
"""

from gaqat_recipes.ablation import GAQAT_ABLATIONS, AblationVariant, ablation_variant, run_ablation
from gaqat_recipes.checkpoint import load_checkpoint, save_checkpoint
from gaqat_recipes.config import TrainConfig, check_dataset_source
from gaqat_recipes.evaluation import accuracy_by_domain
from gaqat_recipes.loop import train_dg
from gaqat_recipes.methods import METHODS, MethodSpec, method_spec
from gaqat_recipes.setup import RunInputs, build_run_inputs, load_splits, quantize_and_calibrate
from gaqat_recipes.sweep import SweepSpec, load_sweep_runs, run_sweep, write_sweep_report
from gaqat_recipes.toy import write_toy_domains

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
