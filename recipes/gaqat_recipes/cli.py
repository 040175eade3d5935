"""Every command line of the recipes in one place: train, sweep, combined report and ablation.

``recipes/train_dg.py``, ``sweep_dg.py``, ``report_dg.py``, ``ablate_gaqat.py`` and ``demo.py`` are thin
wrappers around :func:`main`, :func:`sweep_main`, :func:`report_main` and :func:`ablation_main`.

The training flags are generated, not written out: one flag per :class:`~gaqat_recipes.TrainConfig` field
and one per :class:`gaqat_wrap.GAQATConfig` field (``--window``, ``--sam-rho``, ...), with the help text
taken from the field's entry in the class docstring and the choices from the core's own constants. A new
field of either class is a new flag, with no change here.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from gaqat_recipes.config import AUGMENTATIONS, OPTIMIZERS, SCHEDULES, TrainConfig
from gaqat_recipes.methods import METHODS
from gaqat_wrap import GAQATConfig
from gaqat_wrap.optim.config import FREEZE_MODES, METRICS, VARIANTS

CHOICES: dict[str, Sequence[str]] = {"method": list(METHODS), "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
                                     "augment": AUGMENTATIONS, "metric": METRICS, "variant": VARIANTS,
                                     "freeze_mode": FREEZE_MODES}
"""Allowed values of the flags that take a name (methods and the core's GAQAT choices, never re-typed here)."""
_SWITCH_NAMES = {"save_checkpoint": "checkpoint"}  # --checkpoint / --no-checkpoint
_METAVARS = {"classes": "CLASS", "extensions": "SUFFIX"}
_GAQAT_DEST = "gaqat."


def attribute_help(cls: type) -> dict[str, str]:
    """Field name -> its description in the ``Attributes:`` section of ``cls``'s docstring (one line, no markup).

    Examples:
        >>> attribute_help(GAQATConfig)["window"]
        'K, how many recent conflict flags each scale keeps (>= 1).'
    """
    lines = inspect.getdoc(cls).splitlines()
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    inside = False
    for line in lines:
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):  # the next section
            break
        match = re.match(r"^ {4}([a-z_]\w*(?:, [a-z_]\w*)*): (.*)$", line)
        if match:
            current = [match.group(2)]
            for name in match.group(1).split(", "):
                entries[name] = current
        elif current is not None and line.startswith(" " * 8):
            current.append(line.strip())
    return {name: _plain(" ".join(text)) for name, text in entries.items()}


def _plain(text: str) -> str:
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?([\w]+)`", r"\1", text)  # :class:`~pkg.Name` -> Name
    return text.replace("``", "")


def _kind(hint: Any) -> tuple[Any, bool]:
    """(base type, optional) of a field's type hint: ``int | None`` -> (int, True)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0], True
    return hint, False


def _parse_optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _folder_entry(text: str) -> tuple[str, str, str]:
    match = re.fullmatch(r"([^/=]+)/([^/=]+)=([^/=]+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not DOMAIN/FOLDER=CLASS (e.g. caltech/hund=dog)")
    return match.group(1), match.group(2), match.group(3)


def _add_field(group: Any, name: str, hint: Any, default: Any, help_text: str, dest: str, required: bool = False,
               metavar: str | None = None) -> None:
    kind, optional = _kind(hint)
    flag = "--" + _SWITCH_NAMES.get(name, name).replace("_", "-")
    if default is not MISSING and "default" not in help_text:
        help_text = f"{help_text} (default: {default})"
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS,
                              "help": help_text.replace("%", "%%")}   # argparse formats help with %
    if required:
        kwargs["required"] = True
    if kind is bool:
        group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif typing.get_origin(kind) is list:
        group.add_argument(flag, nargs="+", metavar=_METAVARS.get(name, "VALUE"), **kwargs)
    elif typing.get_origin(kind) is dict:
        group.add_argument(flag, nargs="+", type=_folder_entry, metavar="DOMAIN/FOLDER=CLASS", **kwargs)
    else:
        choices = CHOICES.get(name)
        group.add_argument(flag, type=_parse_optional(kind) if optional else kind, choices=choices,
                           metavar=None if choices else metavar, **kwargs)


def add_train_arguments(
    parser: argparse.ArgumentParser, *, require_test_domain: bool = True, exclude: Sequence[str] = ()
) -> argparse.ArgumentParser:
    """Add one ``--flag`` per :class:`TrainConfig` field and per :class:`gaqat_wrap.GAQATConfig` field to ``parser``.

    Flags that are not given are absent from the namespace, so a ``--config`` file's values are not
    overwritten by defaults (:func:`config_from_args` fills them from the dataclasses). ``exclude`` names
    fields of either class to leave out (a sweep sets ``method`` itself, an ablation the options it varies).

    Examples:
        >>> args = add_train_arguments(argparse.ArgumentParser()).parse_args(["--test-domain", "75", "--window", "5"])
        >>> sorted(vars(args).items())
        [('config', None), ('gaqat.window', 5), ('test_domain', '75')]
    """
    parser.add_argument("--config", type=Path, default=None,
                        help="JSON file of TrainConfig fields (flags given on the command line override it; default: none)")
    hints = typing.get_type_hints(TrainConfig)
    helps = attribute_help(TrainConfig)
    for f in fields(TrainConfig):
        if f.name in exclude or f.name == "gaqat":
            continue
        _add_field(parser, f.name, hints[f.name], f.default, helps[f.name], f.name,
                   required=f.name == "test_domain" and require_test_domain)

    fixed = "; ".join(f"{m.name} fixes {', '.join(f'{k}={v}' for k, v in m.gaqat.items())}"
                      for m in METHODS.values() if m.gaqat)
    group = parser.add_argument_group(
        "GAQAT optimizer options (gaqat_wrap.GAQATConfig; docs/concepts/gaqat.md)",
        f"Used by the sharpness-aware methods. The method's own fields win: {fixed}.")
    gaqat_hints = typing.get_type_hints(GAQATConfig)
    gaqat_helps = attribute_help(GAQATConfig)
    for f in fields(GAQATConfig):
        if f.name in exclude:
            continue
        default = f.default  # as declared: None where the docstring says what None means
        help_text = gaqat_helps.get(f.name, f"GAQATConfig.{f.name}")
        # metavar SAM_RHO, not the dest's GAQAT.SAM_RHO
        _add_field(group, f.name, gaqat_hints[f.name], default, help_text, _GAQAT_DEST + f.name, metavar=f.name.upper())
    return parser


def config_from_args(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    """Merge ``--config`` JSON, the given flags and ``overrides`` into a validated :class:`TrainConfig`.

    Examples:
        >>> parser = add_train_arguments(argparse.ArgumentParser())
        >>> config = config_from_args(parser.parse_args(["--test-domain", "0", "--method", "qat", "--metric", "sign"]))
        >>> config.method, config.gaqat
        ('qat', {'metric': 'sign'})
    """
    values: dict[str, Any] = {}
    config_file = getattr(args, "config", None)
    if config_file is not None:
        if not Path(config_file).is_file():
            raise FileNotFoundError(f"--config {config_file}: no such file")
        values.update(json.loads(Path(config_file).read_text()))
    given = {k: v for k, v in vars(args).items() if k != "config"}
    gaqat = {k[len(_GAQAT_DEST):]: v for k, v in given.items() if k.startswith(_GAQAT_DEST)}
    values.update({k: v for k, v in given.items() if not k.startswith(_GAQAT_DEST)})
    if "folder_to_class" in values and isinstance(values["folder_to_class"], list):
        renames: dict[str, dict[str, str]] = {}
        for domain, folder, name in values["folder_to_class"]:
            renames.setdefault(domain, {})[folder] = name
        values["folder_to_class"] = renames
    values.update(overrides)
    if gaqat:
        values["gaqat"] = {**values.get("gaqat", {}), **gaqat}
    if "test_domain" not in values:
        raise ValueError("--test-domain is required: name the held-out domain")
    return TrainConfig.from_dict(values)


def _parser(description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line, train, print the selected result, return the metrics.

    Examples:
        >>> main(["--test-domain", "75", "--method", "lsq"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    parser = _parser("Leave-one-domain-out training with training-domain validation (DomainBed protocol); "
                     "run with python or `accelerate launch`.")
    add_train_arguments(parser, require_test_domain=False)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, FileNotFoundError, TypeError) as err:
        parser.error(str(err))
    from gaqat_recipes.run import train_dg

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
"""TrainConfig fields a sweep sets per run (its own flags take lists instead)."""


def _add_reference_argument(parser: argparse.ArgumentParser) -> None:
    """``--reference METHOD``, shared by the sweep and the combined report (both write the same paired table)."""
    parser.add_argument("--reference", default=None, choices=list(METHODS),
                        help="paired table of every method minus this one (default: GAQAT minus each baseline)")


def sweep_main(argv: Sequence[str] | None = None, **defaults: Any) -> list[dict[str, Any]]:
    """Command line of the sweep: ``--methods``, ``--bits``, ``--test-domains``, ``--seeds``, ``--jobs`` and every training flag.

    ``defaults`` preset any flag (``recipes/demo.py`` passes the demo configuration); the command line wins.
    Prints the results table and returns every run's metrics.

    Examples:
        >>> sweep_main(["--methods", "fp", "lsq"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    from gaqat_recipes.sweep import SweepSpec, run_sweep

    parser = _parser("Sweep methods x bits x held-out domains x seeds; writes results.md, results.json and "
                     "heldout_accuracy.png into --output-dir, rebuilt from every finished run there (resumable).")
    parser.add_argument("--methods", nargs="+", default=["fp", "qat", "sam-qat", "gaqat"], choices=list(METHODS),
                        help="methods to run (default: fp qat sam-qat gaqat)")
    parser.add_argument("--bits", nargs="+", type=int, default=[4],
                        help="bit widths of the quantized methods, 2..8 (default: 4)")
    parser.add_argument("--test-domains", nargs="*", default=[], help="held-out domains (default: every domain)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default: 0)")
    parser.add_argument("--output-dir", default="outputs/sweep",
                        help="sweep folder: runs/, results.md, results.json, heldout_accuracy.png (default: outputs/sweep)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at the same time, each in its own process with one torch thread unless "
                             "--threads says otherwise (default: 1, in this process)")
    parser.add_argument("--launcher", default=None,
                        help="run each configuration as a subprocess of this command, e.g. 'python' or "
                             "'accelerate launch --multi_gpu --num_processes 2' (default: in this process)")
    _add_reference_argument(parser)
    add_train_arguments(parser, require_test_domain=False, exclude=SWEEP_FIELDS)
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    sweep_keys = ("methods", "bits", "test_domains", "seeds", "output_dir", "launcher", "jobs", "reference")
    train_values = {k: v for k, v in vars(args).items() if k not in sweep_keys}
    try:
        base = config_from_args(argparse.Namespace(**train_values),
                                test_domain=args.test_domains[0] if args.test_domains else "0")
        spec = SweepSpec(methods=args.methods, bits=args.bits, test_domains=args.test_domains, seeds=args.seeds)
        spec.validate()
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    except (ValueError, FileNotFoundError, TypeError) as err:
        parser.error(str(err))
    runs = run_sweep(base, spec, args.output_dir, launcher=args.launcher, jobs=args.jobs, reference=args.reference)
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
    from gaqat_recipes.reporting.sweep_report import load_sweep_runs, write_sweep_report

    parser = _parser("Combine finished runs of several sweep folders into one results.md, results.json and "
                     "heldout_accuracy.png (nothing is trained).")
    parser.add_argument("--sweeps", nargs="+", required=True, help="sweep folders (each with runs/**/metrics.json)")
    parser.add_argument("--output-dir", required=True, help="where the combined report goes (created if missing)")
    _add_reference_argument(parser)
    args = parser.parse_args(argv)
    try:
        runs = load_sweep_runs(args.sweeps)
    except FileNotFoundError as err:
        parser.error(str(err))
    if not runs:
        parser.error(f"no finished runs (runs/**/metrics.json) under {', '.join(args.sweeps)}")
    write_sweep_report(runs, args.output_dir, reference=args.reference)
    print((Path(args.output_dir) / "results.md").read_text())
    return runs


def ablation_main(argv: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Command line of the GAQAT ablation: ``--variants``, ``--bits``, ``--test-domains``, ``--seeds`` plus training flags.

    The GAQAT options the ablation varies are not flags here (each variant sets them). Prints the ablation
    table (``<output-dir>/results.md``) and returns ``{variant: runs}``.

    Examples:
        >>> ablation_main(["--variants", "default", "metric_l2"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    from gaqat_recipes.ablation import GAQAT_ABLATIONS, ablation_variant, run_ablation

    names = [v.name for v in GAQAT_ABLATIONS]
    parser = _parser("GAQAT ablation: one option changed at a time from the defaults, every variant over the same "
                     "held-out domains and seeds; verdicts from training-domain validation only (resumable).")
    parser.add_argument("--variants", nargs="+", default=names, choices=names, help="variants to run (default: all)")
    parser.add_argument("--bits", type=int, default=3, help="weight = activation bits (default: 3)")
    parser.add_argument("--test-domains", nargs="+", required=True, help="held-out domains")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument("--output-dir", default="outputs/ablation",
                        help="ablation folder, one sub-folder per variant (default: outputs/ablation)")
    ablated = {name for variant in GAQAT_ABLATIONS for name in variant.overrides}
    add_train_arguments(parser, require_test_domain=False, exclude=(*SWEEP_FIELDS, *sorted(ablated)))
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
