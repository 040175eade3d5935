"""What the bench/dg diagnostics share: the starting point of a ``train_dg`` run and their JSON-lines tables.

``gradient_smoothness.py`` and ``null_flag_rates.py`` measure a model at the point ``train_dg`` would start
from (its data, model and LSQ calibration), take the same command-line options for it, append their rows
to a JSON-lines file and render that file as a markdown table next to it (``--table``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch

from gaqat_recipes import TrainConfig, load_run_data, quantize_and_calibrate
from gaqat_recipes.models import build_model, input_spec


def add_starting_point_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the starting point (model, data, batch size) and of the table (``--table``, ``--output``)."""
    parser.add_argument("--table", type=Path, default=None,
                        help="only render this --output file as markdown next to it (<file>.md) and stop")
    parser.add_argument("--model")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--dataset", default="rotated_mnist")
    parser.add_argument("--test-domain", default="75")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", type=Path, default=None, help="append the rows to this JSON-lines file")


def render_table(path: Path, markdown: Callable[[list[dict]], str]) -> str:
    """Render the JSON-lines file ``path`` with ``markdown`` into ``<path>.md``; returns the table."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    table = markdown(rows)
    path.with_suffix(".md").write_text(table)
    return table


def append_row(path: Path | None, row: dict) -> None:
    """Append ``row`` to the JSON-lines file ``path`` (nothing when ``path`` is ``None``)."""
    if path:
        with path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def starting_point(args: argparse.Namespace, bits: int) -> tuple[torch.nn.Module, torch.utils.data.DataLoader]:
    """The model ``train_dg`` would start from (quantized and calibrated when ``bits``) and a seeded training loader."""
    torch.manual_seed(0)
    config = TrainConfig(test_domain=args.test_domain, dataset=args.dataset, model=args.model,
                         pretrained=args.pretrained, image_size=args.image_size, batch_size=args.batch_size,
                         bits=bits or 4, seed=0)
    data = load_run_data(config, input_spec(config.model, pretrained=config.pretrained, image_size=config.image_size))
    model = build_model(config.model, num_classes=len(data.classes), pretrained=config.pretrained,
                        image_size=config.image_size, in_chans=data.input_spec.channels)
    if bits:
        quantize_and_calibrate(model, data.tensors["train"], config)
    loader = torch.utils.data.DataLoader(data.tensors["train"], batch_size=args.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    return model, loader
