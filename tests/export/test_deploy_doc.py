"""The code on docs/deploy.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def test_deploy_page_code_blocks_run_in_order(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) == 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)
    assert namespace["sizes"]["w4"] < namespace["sizes"]["int8"]  # packed 4-bit weights take less room
    assert (tmp_path / "vit_w4a4.onnx").exists() and (tmp_path / "vit_w4a4_int.onnx").exists()
