"""Sweeps: methods x bits x held-out domains x seeds, run one after another, then a table, a JSON file and a plot.

Runs go to ``<root>/runs/<method>[_w<bits>]/test_<domain>/seed_<seed>/``; a run whose ``metrics.json``
exists is loaded instead of trained, so an interrupted sweep resumes where it stopped. Full-precision
methods ignore ``bits`` and run once per domain and seed.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gaqat_recipes.config import TrainConfig
from gaqat_recipes.data.registry import load_dg_dataset
from gaqat_recipes.methods import method_spec


@dataclass
class SweepSpec:
    """The grid of a sweep.

    Attributes:
        methods: method names (see :data:`gaqat_recipes.METHODS`).
        bits: bit widths of the quantized methods.
        test_domains: held-out domains; empty means every domain of the dataset.
        seeds: seeds (each changes init, data order and the validation split).

    Examples:
        >>> SweepSpec(methods=["fp", "gaqat"], bits=[4, 8], test_domains=["75"], seeds=[0]).validate()
        >>> SweepSpec(methods=["fp", "lsq"]).validate()
        Traceback (most recent call last):
        ...
        ValueError: unknown method 'lsq'; choose one of fp, fp-sam, qat, sam-qat, sagm-qat, gaqat
    """

    methods: Sequence[str] = ("fp", "qat", "sam-qat", "gaqat")
    bits: Sequence[int] = (4,)
    test_domains: Sequence[str] = ()
    seeds: Sequence[int] = (0,)
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ``ValueError`` for an unknown method, bits outside 2..8, or an empty grid."""
        for method in self.methods:
            method_spec(method)
        if not self.methods or not self.bits or not self.seeds:
            raise ValueError("a sweep needs at least one method, one bit width and one seed")
        for bits in self.bits:
            TrainConfig(test_domain="0", bits=bits)


def run_dir(root: str | Path, config: TrainConfig) -> Path:
    """Output folder of one run of a sweep.

    Examples:
        >>> run_dir("out", TrainConfig(test_domain="75", method="gaqat", bits=4, seed=1)).as_posix()
        'out/runs/gaqat_w4/test_75/seed_1'
        >>> run_dir("out", TrainConfig(test_domain="75", method="fp")).as_posix()
        'out/runs/fp/test_75/seed_0'
    """
    name = f"{config.method}_w{config.bits}" if config.quantized else config.method
    return Path(root) / "runs" / name / f"test_{config.test_domain}" / f"seed_{config.seed}"


def sweep_configs(base: TrainConfig, spec: SweepSpec, root: str | Path) -> list[TrainConfig]:
    """Every run's config (full-precision methods once per domain and seed), output dirs under ``root``.

    Examples:
        >>> base = TrainConfig(test_domain="0")
        >>> configs = sweep_configs(base, SweepSpec(methods=["fp", "qat"], bits=[4, 8], test_domains=["0", "75"]), "out")
        >>> [(c.method, c.bits, c.test_domain) for c in configs]
        [('fp', 4, '0'), ('qat', 4, '0'), ('qat', 8, '0'), ('fp', 4, '75'), ('qat', 4, '75'), ('qat', 8, '75')]
    """
    spec.validate()
    domains = [str(d) for d in spec.test_domains] or list(load_dg_dataset(base.dataset))
    configs = []
    for domain in domains:
        for seed in spec.seeds:
            for method in spec.methods:
                for bits in spec.bits if method_spec(method).quantized else spec.bits[:1]:
                    config = replace(base, method=method, bits=bits, test_domain=domain, seed=seed, **spec.extra)
                    configs.append(replace(config, output_dir=str(run_dir(root, config))))
    return configs


def _run_in_subprocess(config: TrainConfig, launcher: Sequence[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(config.to_dict(), handle)
    command = [*launcher, "-m", "gaqat_recipes.cli", "--config", handle.name]
    if launcher and Path(launcher[0]).name.startswith("accelerate"):
        command = [*launcher, str(Path(__file__).with_name("cli.py")), "--config", handle.name]
    try:
        subprocess.run(command, check=True)
    finally:
        Path(handle.name).unlink(missing_ok=True)
    return json.loads((Path(config.output_dir) / "metrics.json").read_text())


def run_sweep(
    base: TrainConfig,
    spec: SweepSpec,
    root: str | Path,
    *,
    launcher: str | Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run (or resume) every configuration of the grid and write the report; return all runs' metrics.

    Args:
        base: options shared by every run (its method / bits / test_domain / seed / output_dir are replaced).
        spec: the grid.
        root: sweep folder (runs, ``results.md``, ``results.json``, ``heldout_accuracy.png``).
        launcher: ``None`` runs in this process; else a command prefix such as ``"python"`` or
            ``"accelerate launch --multi_gpu --num_processes 2"`` runs each configuration in a subprocess.
        log: where progress lines go.

    Examples:
        >>> import tempfile
        >>> from gaqat_recipes.toy import write_toy_domains
        >>> folder = str(write_toy_domains(tempfile.mkdtemp(), per_class=4))
        >>> base = TrainConfig(test_domain="c", dataset=folder, model="mnist_cnn_tiny", steps=1, batch_size=8, eval_every=1,
        ...                    threads=1, plots=False, progress=False, save_checkpoint=False)
        >>> runs = run_sweep(base, SweepSpec(methods=["fp"], test_domains=["c"]), tempfile.mkdtemp(), log=lambda s: None)
        >>> len(runs), runs[0]["config"]["method"]
        (1, 'fp')
    """
    configs = sweep_configs(base, spec, root)
    prefix = shlex.split(launcher) if isinstance(launcher, str) else list(launcher or [])
    if prefix and prefix == ["python"]:
        prefix = [sys.executable]
    runs = []
    for index, config in enumerate(configs, start=1):
        metrics_file = Path(config.output_dir) / "metrics.json"
        name = f"[{index}/{len(configs)}] {config.method} bits={config.bits} test={config.test_domain} seed={config.seed}"
        if metrics_file.is_file():
            log(f"{name}: done before, loading {metrics_file}")
            runs.append(json.loads(metrics_file.read_text()))
            continue
        started = time.perf_counter()
        if prefix:
            metrics = _run_in_subprocess(config, prefix)
        else:
            from gaqat_recipes.loop import train_dg

            metrics = train_dg(config)
        selected = metrics["selected"]
        log(f"{name}: selected step {selected['step']} val {selected['val_acc']:.4f} test {selected['test_acc']:.4f} "
            f"({time.perf_counter() - started:.0f}s)")
        runs.append(metrics)
    write_sweep_report(runs, root)
    return runs


def load_sweep_runs(roots: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every finished run (``runs/**/metrics.json``) under the sweep folders ``roots``, in path order.

    Lets one report cover sweeps that were run separately (e.g. one folder per held-out domain):
    ``write_sweep_report(load_sweep_runs(["sweep_0", "sweep_75"]), "combined")``.

    Examples:
        >>> import tempfile
        >>> load_sweep_runs([tempfile.mkdtemp()])
        []
        >>> load_sweep_runs(["/no/such/sweep"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: sweep folder /no/such/sweep does not exist...
    """
    runs = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"sweep folder {root} does not exist; pass folders written by run_sweep / sweep_dg.py")
        runs += [json.loads(path.read_text()) for path in sorted(root.glob("runs/**/metrics.json"))]
    return runs


def write_sweep_report(runs: Sequence[dict[str, Any]], root: str | Path, title: str = "") -> dict[str, Path]:
    """Write ``results.md`` (mean ± std table), ``results.json`` (summary + every run) and ``heldout_accuracy.png``.

    When the runs include ``gaqat`` and a baseline that shares a (held-out domain, seed), ``results.md``
    also gets the paired "GAQAT minus each baseline" table (:func:`~gaqat_recipes.reporting.paired_comparisons`),
    stored under ``"paired"`` in ``results.json``.

    Examples:
        >>> import tempfile
        >>> runs = [{"config": {"method": m, "bits": 4, "test_domain": "75", "seed": 0},
        ...          "selected": {"test_acc": a, "val_acc": 0.9, "step": 10}, "wall_time_s": 1.0}
        ...         for m, a in (("fp", 0.8), ("gaqat", 0.7))]
        >>> sorted(p.name for p in write_sweep_report(runs, tempfile.mkdtemp()).values())
        ['heldout_accuracy.png', 'results.json', 'results.md']
    """
    from gaqat_recipes.reporting.paired import SIGNIFICANCE_SE, paired_comparisons, paired_markdown
    from gaqat_recipes.reporting.plots import plot_heldout_bars
    from gaqat_recipes.reporting.tables import markdown_table, summarize_runs

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = summarize_runs(runs)
    table = markdown_table(rows)
    paths = {"table": root / "results.md", "json": root / "results.json", "plot": root / "heldout_accuracy.png"}
    heading = title or "Held-out domain accuracy (%), mean ± std over seeds, checkpoint selected by training-domain validation"
    text = f"{heading}\n\n{table}\n"
    paired = paired_comparisons(runs)
    if paired:
        text += (f"\nPaired differences (points): GAQAT minus each baseline over runs with the same held-out domain "
                 f"and seed, mean ± standard error; the verdict uses validation only (> {SIGNIFICANCE_SE:g} SE)\n\n"
                 f"{paired_markdown(paired)}\n")
    paths["table"].write_text(text)
    compact_runs = [{key: run[key] for key in ("config", "selected", "final", "history", "wall_time_s") if key in run}
                    for run in runs]
    paths["json"].write_text(json.dumps({"summary": rows, "paired": paired, "runs": compact_runs}, indent=2))
    plot_heldout_bars(rows, paths["plot"])
    return paths
