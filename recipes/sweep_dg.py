"""Sweep methods x bits x held-out domains x seeds; writes results.md (mean ± std), results.json and a bar chart.

    python recipes/sweep_dg.py --dataset rotated_mnist --model mnist_cnn --methods fp qat sam-qat gaqat \\
        --bits 4 --test-domains 0 75 --seeds 0 1 2 --steps 1000 --output-dir outputs/sweep

Runs whose metrics.json exists are skipped (resumable). Every option: ``python recipes/sweep_dg.py --help``.
"""

from gaqat_recipes.cli import sweep_main

if __name__ == "__main__":
    sweep_main()
