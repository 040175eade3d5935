"""bench/dg/freezing_pairs.py pairs runs within a benchmark only, pools the pairs of all benchmarks, and decides
its verdicts from validation with the recipes' rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gaqat_recipes")


def write_run(root: Path, grid: str, domain: str, method: str, seed: int, val: float, test: float) -> None:
    folder = root / grid / f"heldout_{domain}" / "runs" / f"{method}_w3" / f"test_{domain}" / f"seed_{seed}"
    folder.mkdir(parents=True)
    config = {"method": method, "bits": 3, "test_domain": domain, "seed": seed}
    (folder / "metrics.json").write_text(json.dumps({"config": config, "selected": {"val_acc": val, "test_acc": test}}))


def test_pairs_stay_within_a_benchmark_and_pool_across_benchmarks(tmp_path, bench_dg_script):
    script = bench_dg_script("freezing_pairs")
    # the same held-out domain name "0" in both benchmarks must not pair across them
    for seed, gain in enumerate((0.010, 0.012, 0.011)):
        write_run(tmp_path, "rotated_mnist_cnn_w3", "0", "sagm-qat", seed, 0.90, 0.70)
        write_run(tmp_path, "rotated_mnist_cnn_w3", "0", "gaqat", seed, 0.90 + gain, 0.70)
        write_run(tmp_path, "mnist_c_cnn_w3", "0", "sagm-qat", seed, 0.80, 0.40)
        write_run(tmp_path, "mnist_c_cnn_w3", "0", "gaqat", seed, 0.80 - gain, 0.45)
    text = script.table(script.load(tmp_path))
    row = next(line for line in text.splitlines() if line.startswith("| `gaqat` − `sagm-qat`"))
    cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
    assert cells[0] == "-1.1 ± 0.1, worse (3)" and cells[1] == "+5.0 ± 0.0"   # MNIST-C: validation decides
    assert cells[2] == "+1.1 ± 0.1, better (3)"                                  # Rotated-MNIST
    assert cells[4].endswith("no evidence (6)")                                 # pooled: +1.1 and -1.1 cancel
    header = text.splitlines()[2]
    assert text.startswith("**W3A3**") and "MNIST-C CNN:" in header and "Rotated-MNIST CNN:" in header
    assert "CNN pooled:" in header
    clustered = text.split("clustered by seed")[1]   # the same table with the seed as the unit: 3 seeds, not 6 pairs
    row = next(line for line in clustered.splitlines() if line.startswith("| `gaqat` − `sagm-qat`"))
    cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
    assert cells[0] == "-1.1 ± 0.1, worse (3)" and cells[4] == "+0.0 ± 0.0, no evidence (3)"


def test_each_precision_has_its_table_and_models_pool_only_their_own_benchmarks(tmp_path, bench_dg_script):
    script = bench_dg_script("freezing_pairs")
    for seed in range(2):
        for grid, gain in (("rotated_mnist_cnn_w3", 0.01), ("mnist_c_cnn_w3", 0.02), ("rotated_mnist_vit_w3", 0.5),
                           ("rotated_mnist_cnn_w4", 0.03)):
            write_run(tmp_path, grid, "75", "sagm-qat", seed, 0.4, 0.3)
            write_run(tmp_path, grid, "75", "gaqat", seed, 0.4 + gain + 0.002 * seed, 0.3)
    text = script.table(script.load(tmp_path))
    w4, w3 = text.split("**W3A3**")
    assert w4.startswith("**W4A4**") and "Rotated-MNIST CNN:" in w4 and "pooled" not in w4  # one CNN grid: no pool
    header, _, row = w3.strip().split("\n\n")[0].splitlines()   # the first table of the block (pairs, then by seed)
    names = [cell.split(":")[0].strip() for cell in header.strip("|").split("|")[1::2]]
    assert names == ["MNIST-C CNN", "Rotated-MNIST CNN", "Rotated-MNIST ViT", "CNN pooled"]
    pooled = [cell.strip() for cell in row.strip("|").split("|")][7]
    assert pooled.startswith("+1.6 ± 0.3") and pooled.endswith("(4)")  # the ViT's +50 points stay out of the pool


def test_retest_table_keeps_fresh_domains_apart_and_adds_the_grids_runs_of_the_retested_methods(tmp_path, bench_dg_script):
    script = bench_dg_script("freezing_pairs")
    for seed in range(3):
        for method, val, test in (("sagm-qat", 0.90, 0.40), ("gaqat", 0.90, 0.50), ("qat-delayed", 0.80, 0.30)):
            write_run(tmp_path, "mnist_c_cnn_w4", "fog", method, seed, val, test)   # the grid: gaqat +10 held-out
        for domain in ("shear", "zigzag"):                                         # the re-test: gaqat +0
            write_run(tmp_path / "retest", "mnist_c_cnn_w4", domain, "sagm-qat", seed, 0.90, 0.60)
            write_run(tmp_path / "retest", "mnist_c_cnn_w4", domain, "gaqat", seed, 0.90 + 0.001 * seed, 0.60)
    grids, retests = script.load(tmp_path), script.load(tmp_path / "retest")
    text = script.retest_table(grids, retests)
    assert text.startswith("**W4A4, re-tested on every other held-out domain**")
    assert "qat-delayed" not in text                       # a method the re-test did not run stays out
    row = next(line for line in text.splitlines() if line.startswith("| `gaqat` − `sagm-qat`"))
    cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
    assert cells[0].endswith("(6)") and cells[1] == "+0.0 ± 0.0"        # re-test domains only: 2 domains x 3 seeds
    assert cells[2].endswith("(9)") and cells[3] == "+3.3 ± 1.7"        # every domain: + the grid's 3 fog pairs
    clustered = text.split("clustered by seed")[1]
    row = next(line for line in clustered.splitlines() if line.startswith("| `gaqat` − `sagm-qat`"))
    cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
    assert cells[0] == "+0.1 ± 0.1, no evidence (3)" and cells[2].endswith("(3)")  # 3 seeds, whatever the domains
    assert script.load(tmp_path / "missing") == {}                       # no re-test folder: no second table


def test_long_table_pairs_each_method_with_its_own_shorter_run_and_counts_the_runs_the_cap_ended(tmp_path, bench_dg_script):
    script = bench_dg_script("freezing_pairs")

    def run(root: Path, method: str, seed: int, val: float, steps: int, selected: int, last: int) -> None:
        folder = root / "mnist_c_cnn_w3" / "heldout_fog" / "runs" / f"{method}_w3" / "test_fog" / f"seed_{seed}"
        folder.mkdir(parents=True)
        config = {"method": method, "bits": 3, "test_domain": "fog", "seed": seed, "steps": steps}
        (folder / "metrics.json").write_text(json.dumps({
            "config": config, "selected": {"val_acc": val, "test_acc": 0.5, "step": selected},
            "history": [{"step": last}]}))

    for seed in range(3):
        run(tmp_path, "sagm-qat", seed, 0.80, 2000, 2000, 2000)
        run(tmp_path, "gaqat", seed, 0.81, 2000, 1900, 2000)
        run(tmp_path, "qat-delayed", seed, 0.70, 2000, 1000, 1400)          # not trained longer: stays out
        run(tmp_path / "long", "sagm-qat", seed, 0.85 + 0.001 * seed, 4000, 3000, 3400)
        run(tmp_path / "long", "gaqat", seed, 0.83 + 0.002 * seed, 4000, 3900 - 100 * seed, 4000 - 100 * seed)
    text = script.long_table(script.load(tmp_path), script.load(tmp_path / "long"))
    assert text.startswith("**W3A3, trained with a 4000-step cap**") and "qat-delayed" not in text
    against_sagm = next(line for line in text.splitlines() if line.startswith("| `gaqat` − `sagm-qat`"))
    assert against_sagm.split("|")[2].strip() == "-1.9 ± 0.1, worse (3)"    # at the 4000-step cap
    longer = text.split("minus its run in the grid")[1].split("clustered by seed")[0]   # the pairs, not by seed
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in longer.splitlines()
            if line.startswith("| `")}
    assert rows["`sagm-qat`"] == "+5.1 ± 0.1 (3)" and rows["`gaqat`"] == "+2.2 ± 0.1 (3)"   # no verdict
    steps = text.split("Steps:")[1]
    assert "| `gaqat` | 2000 | 1900 (1900–1900) | 3 | 3 |" in steps
    assert "| `gaqat` | 4000 | 3800 (3700–3900) | 1 | 3 |" in steps       # only seed 0 trained to the cap
    assert "| `sagm-qat` | 4000 | 3000 (3000–3000) | 0 | 3 |" in steps
