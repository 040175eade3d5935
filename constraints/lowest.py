"""Print pip constraints that pin every core dependency (and the given extras) of pyproject.toml to its floor.

    python3 constraints/lowest.py trainer accelerate peft timm onnx > lowest.txt

Used by ``make test-lowest``: the core tests against the lowest versions pyproject.toml declares, so
that a floor that is not true shows up as a failure. A requirement without a ``>=`` floor is skipped.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def floor_pins(requirements: list[str]) -> list[str]:
    """``name>=x`` -> ``name==x`` for every requirement with a floor; the highest floor of a name wins.

    Examples:
        >>> floor_pins(["torch>=2.4", "numpy", "onnx>=1.15,<2", "torch>=2.6"])
        ['torch==2.6', 'onnx==1.15']
    """
    floors: dict[str, str] = {}
    for requirement in requirements:
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*[^;]*?>=\s*([0-9][^,;\s]*)", requirement)
        if match:
            name, floor = match.group(1), match.group(2)
            if name not in floors or _version(floor) > _version(floors[name]):
                floors[name] = floor
    return [f"{name}=={floor}" for name, floor in floors.items()]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def main(extras: list[str]) -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    print("\n".join(floor_pins(requirements)))


if __name__ == "__main__":
    main(sys.argv[1:])
