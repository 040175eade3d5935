"""One results table (mean ± std, every held-out domain and their average) from sweeps run in separate folders.

    python recipes/report_dg.py --sweeps bench/dg/rotated_mnist_cnn_small/heldout_* \\
        --output-dir bench/dg/rotated_mnist_cnn_small/all_domains

Nothing is trained: finished runs (runs/**/metrics.json) are read and summarised.
"""

from gaqat_recipes.cli import report_main

if __name__ == "__main__":
    report_main()
