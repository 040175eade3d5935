"""Loading a script of bench/dg as a module, the way the tests of bench/ need it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH_DG = Path(__file__).resolve().parents[2] / "bench" / "dg"


@pytest.fixture
def bench_dg_script():
    """``bench_dg_script("freezing_pairs")`` -> the module of ``bench/dg/freezing_pairs.py``."""

    def load(name: str) -> ModuleType:
        if str(BENCH_DG) not in sys.path:  # the scripts import their sibling freezing_grids.py
            sys.path.insert(0, str(BENCH_DG))
        spec = importlib.util.spec_from_file_location(name, BENCH_DG / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
