"""Run every benchmark script ``bench/bench_*.py`` in turn (``make bench``).

Each script runs in its own process with this interpreter and writes its own
results (see bench/README.md). A failing script does not stop the others; the
exit status is non-zero if any failed.

Usage: ``.venv/bin/python bench/run_all.py [NAME ...]`` where each NAME selects
the scripts whose file name contains it (e.g. ``quant_speed``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def benchmark_scripts(names: list[str] | None = None) -> list[Path]:
    """The ``bench_*.py`` scripts in this folder, sorted, optionally filtered by name."""
    scripts = sorted(BENCH_DIR.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if any(name in s.stem for name in names)]
    return scripts


def main(argv: list[str] | None = None) -> int:
    names = sys.argv[1:] if argv is None else argv
    scripts = benchmark_scripts(names)
    if not scripts:
        print(f"no bench/bench_*.py script matches {names}; available: "
              f"{', '.join(s.stem for s in benchmark_scripts())}", file=sys.stderr)
        return 2
    failed = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)], cwd=BENCH_DIR.parent)
        print(f"== {script.name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.perf_counter() - start:.0f} s",
              flush=True)
        if code != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
