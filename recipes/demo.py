"""`make demo`: Rotated-MNIST, DomainBed-style CNN, W4A4, FP vs LSQ vs SAM-QAT vs GAQAT on the held-out 75° domain.

Runs the sweep machinery (recipes/sweep_dg.py) with the configuration below, prints the table and writes
plots into outputs/demo/ (heldout_accuracy.png, and per run learning_curves.png / freeze_heatmap.png).
Any flag of recipes/sweep_dg.py overrides the defaults, e.g. `python recipes/demo.py --steps 200`.
Finished runs are reused; delete outputs/demo/ to train again.
"""

import sys
import time

from gaqat_recipes.cli import sweep_main

DEMO = dict(
    dataset="rotated_mnist",
    model="mnist_cnn_small",
    methods=["fp", "qat", "sam-qat", "gaqat"],
    bits=[4],
    test_domains=["75"],
    seeds=[0],
    steps=1000,
    batch_size=64,
    lr=1e-3,
    eval_every=100,
    threads=1,
    output_dir="outputs/demo",
)

if __name__ == "__main__":
    started = time.perf_counter()
    sweep_main(sys.argv[1:], **DEMO)
    print(f"demo finished in {time.perf_counter() - started:.0f}s; plots and runs in outputs/demo/")
