"""`import gaqat_wrap` imports only the core dependencies; optional ones load on use, or fail naming their extra."""

from __future__ import annotations

import json
import subprocess
import sys

OPTIONAL = ["transformers", "accelerate", "peft", "timm", "onnx", "onnxruntime", "onnxscript", "datasets", "evaluate",
            "gaqat_recipes"]

PROBE = f"""
import json, sys
import gaqat_wrap
import gaqat_wrap.integrations, gaqat_wrap.export, gaqat_wrap.quant, gaqat_wrap.optim
after_import = sorted(m for m in {OPTIONAL!r} if m in sys.modules)
from gaqat_wrap import GAQATCallback
from gaqat_wrap.integrations.trainer import GAQATCallback as defined
print(json.dumps({{"after_import": after_import, "same": GAQATCallback is defined,
                  "transformers_loaded": "transformers" in sys.modules}}))
"""

BLOCKED = """
import sys
sys.modules[{module!r}] = None  # as if it were not installed
import torch
from torch import nn
{code}
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_import_gaqat_wrap_pulls_in_no_optional_dependency_and_callback_loads_on_use():
    result = _run(PROBE)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"after_import": [], "same": True, "transformers_loaded": True}


def test_a_missing_extra_is_named_in_the_error():
    cases = {
        "transformers": ("from gaqat_wrap import GAQATCallback", "pip install 'gaqat-wrap[trainer]'"),
        "onnxruntime": ("from gaqat_wrap.export import onnxruntime_session\nonnxruntime_session('m.onnx')",
                        "pip install 'gaqat-wrap[onnx]'"),
        "onnx": ("from gaqat_wrap import export_onnx_qdq, quantize_model\n"
                 "net = quantize_model(nn.Sequential(*[nn.Linear(2, 2) for _ in range(3)]), bits=4)\n"
                 "export_onnx_qdq(net, 'm.onnx', torch.zeros(1, 2))",
                 "pip install 'gaqat-wrap[onnx]'"),
    }
    # each case runs in a fresh interpreter: a blocked module must not leak into the next case
    for module, (snippet, message) in cases.items():
        result = _run(f"try:\n    exec({BLOCKED.format(module=module, code=snippet)!r}, {{}})\n"
                      f"except ImportError as err:\n    print(err)")
        assert message in result.stdout, (module, result.stdout[-1000:], result.stderr[-2000:])
