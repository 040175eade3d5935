"""GAQAT ablation: threshold, window K, freeze_mode, conflict metric, permanent freezing, perturbing scales.

    python recipes/ablate_gaqat.py --dataset rotated_mnist --model mnist_cnn_small --bits 3 \\
        --test-domains 75 0 --seeds 0 1 2 --steps 1000 --output-dir outputs/ablation

Each variant changes one option of the defaults; verdicts come from training-domain validation only.
Runs whose metrics.json exists are skipped (resumable). Every option: ``python recipes/ablate_gaqat.py --help``.
"""

from gaqat_recipes.cli import ablation_main

if __name__ == "__main__":
    ablation_main()
