"""Sweeps: methods x bits x held-out domains x seeds, one after another or ``jobs`` at a time, then the folder's report.

Runs go to ``<root>/runs/<method>[_w<bits>]/test_<domain>/seed_<seed>/``; a run whose ``metrics.json``
exists is loaded instead of trained, so an interrupted sweep resumes where it stopped; runs that only the
folder's ``results.json`` still holds (a fresh clone: ``runs/`` is not committed) are written back first. Full-precision
methods ignore ``bits`` and run once per domain and seed. The report (``results.md``, ``results.json``,
``heldout_accuracy.png``) is rebuilt from every finished run in the folder, so sweeps that share a folder
(run one after the other or at the same time) end with one report of all their runs.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
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
from gaqat_recipes.methods import METHODS, method_spec
from gaqat_recipes.reporting.sweep_report import rebuild_sweep_report, restore_sweep_runs


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
        >>> SweepSpec(methods=["fp", "lsq"]).validate()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown method 'lsq'; choose one of fp, fp-sam, qat, sam-qat, sagm-qat, gaqat, ...
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
    recipes_root = str(Path(__file__).resolve().parents[1])  # the package runs from a checkout without an install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (recipes_root, os.environ.get("PYTHONPATH")) if p)}
    try:
        subprocess.run(command, check=True, env=env)
    finally:
        Path(handle.name).unlink(missing_ok=True)
    return json.loads((Path(config.output_dir) / "metrics.json").read_text())


def run_sweep(
    base: TrainConfig,
    spec: SweepSpec,
    root: str | Path,
    *,
    launcher: str | Sequence[str] | None = None,
    jobs: int = 1,
    reference: str | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run (or resume) every configuration of the grid, rebuild the folder's report; return this grid's runs.

    Args:
        base: options shared by every run (its method / bits / test_domain / seed / output_dir are replaced).
        spec: the grid.
        root: sweep folder (runs, ``results.md``, ``results.json``, ``heldout_accuracy.png``). The report
            covers every finished run in it, this sweep's and any other's (see
            :func:`~gaqat_recipes.reporting.sweep_report.rebuild_sweep_report`).
        launcher: ``None`` runs in this process; else a command prefix such as ``"python"`` or
            ``"accelerate launch --multi_gpu --num_processes 2"`` runs each configuration in a subprocess.
        jobs: how many runs train at the same time, each in its own process (the ``launcher``, default
            ``python``) with one torch thread unless ``base.threads`` says otherwise, and no progress bar
            (log lines instead).
        reference: the folder report's paired table shows every method minus this one (e.g. ``"sagm-qat"``);
            ``None``: GAQAT minus each baseline.
        log: where progress lines go.

    Examples:
        >>> import tempfile
        >>> from gaqat_recipes.toy import write_toy_domains
        >>> folder = str(write_toy_domains(tempfile.mkdtemp(), per_class=4))
        >>> base = TrainConfig(test_domain="c", dataset=folder, model="mnist_cnn_tiny", steps=1, batch_size=8, eval_every=1,
        ...                    threads=1, plots=False, save_checkpoint=False)
        >>> runs = run_sweep(base, SweepSpec(methods=["fp"], test_domains=["c"]), tempfile.mkdtemp(), log=lambda s: None)
        >>> len(runs), runs[0]["config"]["method"]
        (1, 'fp')
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if reference is not None and reference not in METHODS:
        raise ValueError(f"unknown reference method {reference!r}; known: {', '.join(METHODS)}")
    configs = sweep_configs(base, spec, root)
    prefix = shlex.split(launcher) if isinstance(launcher, str) else list(launcher or [])
    if prefix == ["python"] or (jobs > 1 and not prefix):
        prefix = [sys.executable]
    if jobs > 1:
        configs = [replace(c, progress=False, threads=c.threads or 1) for c in configs]
    if Path(root).is_dir() and (restored := restore_sweep_runs(root)):
        log(f"{root}: restored {len(restored)} finished runs from results.json")
    results: dict[int, dict[str, Any]] = {}
    pending = []
    for index, config in enumerate(configs, start=1):
        metrics_file = Path(config.output_dir) / "metrics.json"
        if metrics_file.is_file():
            log(f"{_run_name(index, configs, config)}: done before, loading {metrics_file}")
            results[index] = json.loads(metrics_file.read_text())
        else:
            pending.append((index, config))

    def train(index: int, config: TrainConfig) -> dict[str, Any]:
        started = time.perf_counter()
        if prefix:
            metrics = _run_in_subprocess(config, prefix)
        else:
            from gaqat_recipes.run import train_dg

            metrics = train_dg(config)
        selected = metrics["selected"]
        log(f"{_run_name(index, configs, config)}: selected step {selected['step']} val {selected['val_acc']:.4f} "
            f"test {selected['test_acc']:.4f} ({time.perf_counter() - started:.0f}s)")
        return metrics

    if jobs == 1:
        results.update({index: train(index, config) for index, config in pending})
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:  # each thread waits on a subprocess
            futures = {index: pool.submit(train, index, config) for index, config in pending}
            results.update({index: future.result() for index, future in futures.items()})
    rebuild_sweep_report(root, reference)
    return [results[index] for index in sorted(results)]


def _run_name(index: int, configs: Sequence[TrainConfig], config: TrainConfig) -> str:
    return f"[{index}/{len(configs)}] {config.method} bits={config.bits} test={config.test_domain} seed={config.seed}"
