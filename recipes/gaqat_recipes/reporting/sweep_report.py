"""The report of a sweep folder: ``results.md`` (tables), ``results.json`` and ``heldout_accuracy.png`` from its runs.

A sweep folder's report is always rebuilt from every finished run on disk (``runs/**/metrics.json``), under
the folder's lock and with atomic writes (:mod:`gaqat_recipes.reporting.files`), so two sweeps writing into
one folder end with one report that has both sweeps' runs.

``results.json`` keeps every run's record too, so a folder whose ``runs/`` was not kept (it is ignored by
git, so a fresh clone has only the report) still counts its runs: :func:`load_sweep_runs` reads them from
the report, and :func:`restore_sweep_runs` writes their ``metrics.json`` back so a sweep resumes after them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gaqat_recipes.reporting.files import folder_lock, write_text_atomic
from gaqat_recipes.reporting.paired import (
    VERDICT_RULE,
    paired_cells,
    paired_cells_markdown,
    paired_comparisons,
    paired_markdown,
)
from gaqat_recipes.reporting.plots import plot_heldout_bars
from gaqat_recipes.reporting.tables import VAL_NOTE, markdown_table, summarize_runs

METRICS_GLOB = "runs/**/metrics.json"
"""Where a sweep folder keeps its finished runs (one ``metrics.json`` each)."""


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
        on_disk = {path.relative_to(root): json.loads(path.read_text()) for path in root.glob(METRICS_GLOB)}
        runs += [run for _, run in sorted({**_stored_runs(root), **on_disk}.items())]  # a file on disk wins
    return runs


def restore_sweep_runs(root: str | Path) -> list[Path]:
    """Write back the ``metrics.json`` of every run that ``root/results.json`` holds and ``runs/`` lacks.

    A sweep skips a run whose ``metrics.json`` exists, so after this a sweep started in a fresh clone of a
    committed study resumes after the runs its report already holds instead of training them again (and
    its rebuilt report keeps them). Reports written before every run was kept whole lack some keys of
    ``metrics.json`` (``freeze_trace``, ``method``, ``data``); the runs restored from them lack them too.
    Returns the files written.

    Examples:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> run = {"config": {"method": "fp", "bits": 4, "test_domain": "75", "seed": 0,
        ...                   "output_dir": "elsewhere/runs/fp/test_75/seed_0"},
        ...        "selected": {"test_acc": 0.8, "val_acc": 0.9, "step": 10}, "wall_time_s": 1.0}
        >>> _ = write_sweep_report([run], root)
        >>> [p.relative_to(root).as_posix() for p in restore_sweep_runs(root)]
        ['runs/fp/test_75/seed_0/metrics.json']
        >>> restore_sweep_runs(root), len(load_sweep_runs([root]))
        ([], 1)
    """
    root = Path(root)
    written = []
    with folder_lock(root):
        for path, run in sorted(_stored_runs(root).items()):
            target = root / path
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(target, json.dumps(run, indent=2))
                written.append(target)
    return written


def _stored_runs(root: Path) -> dict[Path, dict[str, Any]]:
    """The runs of ``root/results.json`` by the path of their ``metrics.json`` under ``root``."""
    report = root / "results.json"
    if not report.is_file():
        return {}
    stored = {}
    for run in json.loads(report.read_text()).get("runs", []):
        parts = Path(str(run.get("config", {}).get("output_dir") or "")).parts
        if "runs" in parts:  # the run folder below its sweep's runs/, wherever the sweep folder was then
            below = parts[len(parts) - 1 - parts[::-1].index("runs"):]
            stored[Path(*below) / "metrics.json"] = run
    return stored


def write_sweep_report(runs: Sequence[dict[str, Any]], root: str | Path, title: str = "",
                       reference: str | None = None) -> dict[str, Path]:
    """Write ``results.md`` (mean ± std table), ``results.json`` (summary + every run) and ``heldout_accuracy.png``.

    When the runs include ``gaqat`` and a baseline that shares a (held-out domain, seed), ``results.md``
    also gets the paired "GAQAT minus each baseline" table (:func:`~gaqat_recipes.reporting.paired_comparisons`),
    stored under ``"paired"`` in ``results.json``. With ``reference`` (a method name, e.g. ``"sagm-qat"``),
    it gets "every method minus ``reference``" instead, and ``paired_cells.md`` the same differences cell
    by cell before averaging (:func:`~gaqat_recipes.reporting.paired.paired_cells`, validation and held-out).
    Runs trained with ``patience`` add a table of the selected and last trained steps. The files are
    written atomically under ``root``'s lock.

    Examples:
        >>> import tempfile
        >>> runs = [{"config": {"method": m, "bits": 4, "test_domain": "75", "seed": 0},
        ...          "selected": {"test_acc": a, "val_acc": 0.9, "step": 10}, "wall_time_s": 1.0}
        ...         for m, a in (("fp", 0.8), ("gaqat", 0.7))]
        >>> sorted(p.name for p in write_sweep_report(runs, tempfile.mkdtemp()).values())
        ['heldout_accuracy.png', 'results.json', 'results.md']
    """
    with folder_lock(root):
        return _write_report(runs, Path(root), title, reference)


def training_length_markdown(runs: Sequence[Mapping[str, Any]]) -> str:
    """Per method and bit width: the selected step and the last step trained, mean (min–max) over runs.

    Examples:
        >>> runs = [{"config": {"method": "qat", "bits": 4}, "selected": {"step": s}, "stopped_step": s + 400}
        ...         for s in (600, 1000)]
        >>> print(training_length_markdown(runs).splitlines()[-1])
        | LSQ W4A4 | 800 (600–1000) | 1200 (1000–1400) | 2 |
    """
    from gaqat_recipes.reporting.tables import group_by_method_bits, method_bits_order, run_label

    def cell(values: list[int]) -> str:
        return f"{sum(values) / len(values):.0f} ({min(values)}–{max(values)})"

    lines = ["| method | selected step | last step trained | runs |", "|---|---|---|---|"]
    for _, members in sorted(group_by_method_bits(runs).items(), key=lambda item: method_bits_order(item[0])):
        selected = [int(run["selected"]["step"]) for run in members]
        stopped = [int(run.get("stopped_step") or run["config"].get("steps", 0)) for run in members]
        lines.append(f"| {run_label(members[0])} | {cell(selected)} | {cell(stopped)} | {len(members)} |")
    return "\n".join(lines)


def _write_report(runs: Sequence[dict[str, Any]], root: Path, title: str, reference: str | None = None) -> dict[str, Path]:
    rows = summarize_runs(runs)
    table = markdown_table(rows)
    paths = {"table": root / "results.md", "json": root / "results.json", "plot": root / "heldout_accuracy.png"}
    heading = title or "Held-out domain accuracy (%), mean ± std over seeds, checkpoint selected by training-domain validation"
    text = f"{heading}\n\n{table}\n"
    if len({str(run["config"]["test_domain"]) for run in runs}) > 1:
        text += f"\n{VAL_NOTE}\n"
    paired = paired_comparisons(runs, baseline=reference)
    if paired:
        who = "each method minus the reference" if reference else "GAQAT minus each baseline"
        text += (f"\nPaired differences (points): {who} over runs with the same held-out domain "
                 f"and seed, mean ± standard error; {VERDICT_RULE}\n\n"
                 f"{paired_markdown(paired)}\n")
    if any(run.get("stopped_step") is not None for run in runs):
        text += ("\nTraining length: the step selected by training-domain validation and the last step trained "
                 f"(early stopping), mean (min–max) over runs\n\n{training_length_markdown(runs)}\n")
    write_text_atomic(paths["table"], text)
    write_text_atomic(paths["json"], _report_json(rows, paired, runs))
    if reference is not None and paired:
        paths["cells"] = root / "paired_cells.md"
        write_text_atomic(paths["cells"], paired_cells_report(runs, reference))
    plot_heldout_bars(rows, paths["plot"])
    return paths


def paired_cells_report(runs: Sequence[Mapping[str, Any]], reference: str) -> str:
    """``paired_cells.md``: every method minus ``reference`` per (held-out domain, seed), validation then held-out.

    Examples:
        >>> mk = lambda m, v: {"config": {"method": m, "bits": 3, "test_domain": "fog", "seed": 0},
        ...                    "selected": {"val_acc": v, "test_acc": 0.5}}
        >>> print(paired_cells_report([mk("sagm-qat", 0.9), mk("gaqat", 0.87)], "sagm-qat").splitlines()[5])
        | GAQAT W3A3 | -3.0 | -3.0 ± – |
    """
    parts = []
    for metric, what in (("val_acc", "Training-domain validation (selects the checkpoint)"),
                         ("test_acc", "Held-out domain")):
        parts.append(f"{what}: each method minus the reference per held-out domain and seed, in points "
                     f"(the reference's own accuracy in its row), then mean ± standard error over the cells\n\n"
                     f"{paired_cells_markdown(paired_cells(runs, reference, metric))}\n")
    return "\n".join(parts)


def rebuild_sweep_report(root: str | Path, reference: str | None = None) -> dict[str, Path]:
    """Rebuild ``root``'s report from every finished run in it, holding its lock while reading and writing.

    ``reference`` is :func:`write_sweep_report`'s: a method name for "every method minus it" in the paired table.

    Examples:
        >>> import tempfile
        >>> rebuild_sweep_report(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: no finished runs (runs/**/metrics.json) under ...
    """
    root = Path(root)
    with folder_lock(root):
        runs = load_sweep_runs([root])
        if not runs:
            raise FileNotFoundError(f"no finished runs ({METRICS_GLOB}) under {root}")
        return _write_report(runs, root, "", reference)


def _report_json(rows: list[dict[str, Any]], paired: list[dict[str, Any]], runs: Sequence[dict[str, Any]]) -> str:
    """``results.json``: the tables indented, then every run whole (its ``metrics.json``, so the report alone can
    restore it) on one line each, which keeps long freeze traces from filling a line per number."""
    head = {"summary": rows, "paired": paired}
    lines = json.dumps(head, indent=2)[:-2].splitlines()  # without the closing "\n}"
    body = ",\n".join(f"    {json.dumps(run)}" for run in runs)
    return "\n".join([*lines[:-1], lines[-1] + ",", '  "runs": [', body, "  ]", "}"]) + "\n"
