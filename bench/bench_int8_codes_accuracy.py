"""Accuracy of the opt-in int8-codes mode (``set_saved_inputs(model, "int8")``) on the demo, against the exact mode.

The int8-codes mode keeps two bytes per quantized-layer input instead of the float input; outputs,
input and weight gradients are unchanged, the input step size's gradient is approximate (its in-range
term uses ``round(v) - v`` rounded to 1/254 of a step). This script trains the demo configuration
(``recipes/demo.py``: Rotated-MNIST, ``mnist_cnn_small``, W4A4, held-out 75°, seed 0) for the
quantized methods in both modes with ``gaqat_recipes.run.train_dg`` and compares held-out
accuracy (at the checkpoint selected by training-domain validation and at the last step).

The mode is set through the class default ``QuantizedLayer.saved_inputs`` for the whole process, so
``train_dg`` runs unchanged. Writes ``bench/results/int8_codes_accuracy.json``; the speed page
(``bench/bench_quant_speed.py``) shows it.

Run: ``.venv/bin/python bench/bench_int8_codes_accuracy.py [--steps 1000] [--methods qat gaqat]``
(about 2 minutes per run on an idle 2-core machine at the demo's 1000 steps, 4 runs).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from gaqat_recipes import TrainConfig, train_dg
from gaqat_wrap.quant.layers import QuantizedLayer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "int8_codes_accuracy.json"
DEMO = dict(dataset="rotated_mnist", model="mnist_cnn_small", bits=4, test_domain="75", seed=0, batch_size=64,
            lr=1e-3, eval_every=100, threads=1, plots=False, progress=False, save_checkpoint=False)


def run(method: str, mode: str, steps: int, output_dir: Path) -> dict:
    """One demo run of ``method`` with every quantized layer in saved-input ``mode``."""
    QuantizedLayer.saved_inputs = mode
    try:
        started = time.perf_counter()
        metrics = train_dg(TrainConfig(method=method, steps=steps, output_dir=str(output_dir), **DEMO))
    finally:
        QuantizedLayer.saved_inputs = "float"
    return {"method": method, "mode": mode, "steps": steps,
            "selected_test_acc": metrics["selected"]["test_acc"], "selected_val_acc": metrics["selected"]["val_acc"],
            "selected_step": metrics["selected"]["step"], "final_test_acc": metrics["final"]["test_acc"],
            "final_val_acc": metrics["final"]["val_acc"], "wall_s": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--methods", nargs="+", default=["qat", "gaqat"])
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load_before = round(os.getloadavg()[0], 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            for mode in ("float", "int8"):
                row = run(method, mode, args.steps, Path(tmp) / f"{method}_{mode}")
                print(json.dumps(row), flush=True)
                rows.append(row)
    results = {"benchmark": "int8_codes_accuracy", "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "settings": {**DEMO, "steps": args.steps}, "load_before": load_before,
               "load_after": round(os.getloadavg()[0], 1), "runs": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
