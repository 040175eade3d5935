"""Where the integer ONNX export of a trained BatchNorm CNN departs from the fake-quant model (not a test).

Trains the small residual CNN of ``bench_onnx_latency.py`` (part ``agreement``) on
MNIST-5k, quantizes it W8A8 and W4A4 with LSQ fine-tuning, exports it with
:func:`gaqat_wrap.export.export_onnx_integer` and compares, on the 1,000 held-out
digits, the fake-quant PyTorch logits with four onnxruntime runs that remove one
source of difference at a time:

* ``optimized``: the shipped file, onnxruntime's graph optimisation on (integer kernels);
* ``reference``: the same file with optimisation off, so every ``QuantizeLinear`` /
  ``DequantizeLinear`` runs as written and every layer in float: the difference
  from ``optimized`` is what the integer kernels add;
* ``no_calibrated``: ``reference`` without the Q/DQ pairs at the tensors that get
  an 8-bit grid calibrated from data (``report.calibrated``: the residual branches
  and sums, which the fake-quant model keeps in float);
* ``no_calibrated_float_bias``: also the biases in float instead of int32 at
  scale ``s_x * s_w``;
* ``optimized_mse_ranges``: the shipped graph with each calibrated tensor's range
  chosen to minimise the mean squared rounding + clipping error instead of min/max;
* and ``reference`` without one calibrated tensor's Q/DQ pair at a time.

For each run: top-1 agreement with the fake-quant model, the max and median of
``|Δlogit|``, and how many of the disagreeing digits the fake-quant model itself
decides by a margin (top-1 minus top-2 logit) below that run's max ``|Δlogit|``.

Usage:
    python bench/diagnose_onnx_agreement.py [--fp-epochs 3] [--qat-epochs 2] [--calibration-batches 8]
        [--output bench/results/onnx_agreement_diagnosis.json]
    python bench/diagnose_onnx_agreement.py --table RESULT.json ...   # the markdown table of docs/deploy.md
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_onnx_latency import SmallResNet, mnist, train

from gaqat_wrap import calibrate, quantize_model
from gaqat_wrap.export import export_onnx_integer, onnx_integer

RESULTS = Path(__file__).resolve().parent / "results" / "onnx_agreement_diagnosis.json"


@contextmanager
def without(calibrated_sites: bool | str = False, integer_biases: bool = False):
    """Export without the Q/DQ pairs of calibrated tensors (all, or the one named) and/or with float biases."""
    graph_class = onnx_integer._IntegerGraph
    emit_sites, emit_bias = graph_class.emit_sites, graph_class.integer_biases

    def bypassed(site) -> bool:
        return site.grid.source != "learned" and calibrated_sites in (True, site.tensor)

    def emit_learned_sites_only(self, sites):
        for site in sites:
            if bypassed(site):
                site.absorbed = None  # the Relu/Clip it would have absorbed stays in the graph
        emit_sites(self, [site for site in sites if not bypassed(site)])

    if calibrated_sites:
        graph_class.emit_sites = emit_learned_sites_only
    if integer_biases:
        graph_class.integer_biases = lambda self: None
    try:
        yield
    finally:
        graph_class.emit_sites, graph_class.integer_biases = emit_sites, emit_bias


def mse_range(values: np.ndarray, candidates: int = 40) -> tuple[float, float]:
    """The clip range ``c * (min, max)`` whose asymmetric 8-bit grid has the least mean squared error on ``values``."""
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    best, best_error = (low, high), np.inf
    for fraction in np.linspace(1.0, 0.2, candidates):
        a, b = low * fraction, high * fraction
        scale = (b - a) / 255.0
        if scale <= 0:
            continue
        zero = np.clip(np.round(-a / scale), 0, 255)
        rounded = (np.clip(np.round(values / scale) + zero, 0, 255) - zero) * scale
        error = float(np.mean((rounded - values) ** 2))
        if error < best_error:
            best, best_error = (a, b), error
    return best


@contextmanager
def mse_calibration():
    """Calibrate with the MSE-optimal clip range instead of min/max (diagnosis only)."""
    import onnx
    import onnxruntime

    observe = onnx_integer.observe_ranges

    def observe_mse(model, tensors, batches, input_name="input"):
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in tensors)
        session = onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        seen: dict[str, list[np.ndarray]] = {name: [] for name in tensors}
        for batch in batches:
            for name, value in zip(tensors, session.run(tensors, {input_name: batch.numpy()}), strict=True):
                seen[name].append(value.ravel())
        return {name: mse_range(np.concatenate(values)) for name, values in seen.items()}

    onnx_integer.observe_ranges = observe_mse
    try:
        yield
    finally:
        onnx_integer.observe_ranges = observe


def run(path: Path, x: np.ndarray, optimize: bool) -> np.ndarray:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def compare(reference: np.ndarray, logits: np.ndarray) -> dict:
    difference = np.abs(logits - reference)
    disagree = reference.argmax(1) != logits.argmax(1)
    top2 = np.sort(reference, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    worst = float(difference.max())
    return {
        "top1_agreement": float(1 - disagree.mean()),
        "disagreements": int(disagree.sum()),
        "max_abs_logit_diff": worst,
        "median_abs_logit_diff": float(np.median(difference.max(1))),
        "disagreements_with_margin_below_max_diff": int((disagree & (margin < worst)).sum()),
        "fake_quant_margin_median": float(np.median(margin)),
    }


def diagnose(fp_epochs: int, qat_epochs: int, calibration_batches: int) -> dict:
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = mnist()
    torch.manual_seed(0)
    fp = SmallResNet()
    train(fp, x_train, y_train, fp_epochs, lr=3e-3)
    with torch.no_grad():
        results: dict = {"fp_accuracy": float((fp(x_test).argmax(1) == y_test).float().mean())}
    print(f"== FP accuracy {results['fp_accuracy']:.4f}", flush=True)
    folder = Path(tempfile.mkdtemp())
    calibration = [x_train[i:i + 128] for i in range(0, 128 * calibration_batches, 128)]
    for bits in (8, 4):
        model = quantize_model(copy.deepcopy(fp), bits=bits)
        calibrate(model, [x_train[i:i + 256] for i in range(0, 1024, 256)])
        train(model, x_train, y_train, qat_epochs, lr=1e-3)
        with torch.no_grad():
            fake_quant = model(x_test).numpy()
        entry = {"fake_quant_accuracy": float((fake_quant.argmax(1) == y_test.numpy()).mean())}
        for name, optimize, options in (("optimized", True, {}), ("reference", False, {}),
                                        ("no_calibrated", False, {"calibrated_sites": True}),
                                        ("no_calibrated_float_bias", False, {"calibrated_sites": True, "integer_biases": True})):
            path = folder / f"w{bits}_{name}.onnx"
            with without(**options), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                report = export_onnx_integer(model, path, x_test[:2], calibration, verify=False)
            logits = run(path, x_test.numpy(), optimize)
            entry[name] = {**compare(fake_quant, logits), "calibrated_tensors": len(report.calibrated),
                           "onnxruntime_accuracy": float((logits.argmax(1) == y_test.numpy()).mean())}
            if name == "optimized":
                entry["calibrated"] = [{"tensor": c.tensor, "reason": c.reason, "minimum": c.minimum, "maximum": c.maximum,
                                        "scale": c.scale} for c in report.calibrated]
            print(f"== W{bits}A{bits} {name}: {entry[name]}", flush=True)
        path = folder / f"w{bits}_mse.onnx"
        with mse_calibration(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx_integer(model, path, x_test[:2], calibration, verify=False)
        entry["optimized_mse_ranges"] = compare(fake_quant, run(path, x_test.numpy(), optimize=True))
        print(f"== W{bits}A{bits} optimized, MSE ranges: {entry['optimized_mse_ranges']}", flush=True)
        for site in entry["calibrated"]:  # one calibrated tensor left in float at a time
            path = folder / f"w{bits}_without_{site['tensor']}.onnx"
            with without(calibrated_sites=site["tensor"]), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_onnx_integer(model, path, x_test[:2], calibration, verify=False)
            site["reference_without_it"] = compare(fake_quant, run(path, x_test.numpy(), optimize=False))
            print(f"   without {site['tensor']} ({site['reason']}): {site['reference_without_it']}", flush=True)
        results[f"w{bits}a{bits}"] = entry
    return results


COLUMNS = (("optimized", "shipped file (integer kernels)"), ("reference", "same graph, no optimisation"),
           ("no_calibrated", "without the calibrated grids"), ("no_calibrated_float_bias", "... and float biases"),
           ("optimized_mse_ranges", "shipped, MSE ranges"))


def table(paths: list[Path]) -> str:
    """Markdown: top-1 agreement (disagreements) and median max |Δlogit| per run, one row per file and precision."""
    lines = ["| training (FP accuracy) | export | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for path in paths:
        results = json.loads(path.read_text())
        training = f"{results['fp_epochs']} + {results['qat_epochs']} epochs ({100 * results['fp_accuracy']:.1f}%)"
        for precision in ("w8a8", "w4a4"):
            entry = results[precision]
            cells = [f"{100 * entry[key]['top1_agreement']:.1f}% ({entry[key]['disagreements']}), "
                     f"{entry[key]['median_abs_logit_diff']:.2f}" for key, _ in COLUMNS]
            lines.append(f"| {training} | {precision.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, nargs="+", help="print the markdown table of these result files and exit")
    parser.add_argument("--fp-epochs", type=int, default=3)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.table))
        return
    results = {"fp_epochs": args.fp_epochs, "qat_epochs": args.qat_epochs,
               "calibration_batches": args.calibration_batches,
               **diagnose(args.fp_epochs, args.qat_epochs, args.calibration_batches)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
