"""bench/dg/freezing_flag_rates.py averages the conflict flags of the runs' freeze traces and puts the null beside them."""

from __future__ import annotations

import json


def test_flag_and_freeze_shares_pool_every_decision_of_every_run(tmp_path, bench_dg_script):
    script = bench_dg_script("freezing_flag_rates")
    config = {"method": "gaqat", "model": "mnist_cnn_small", "dataset": "rotated_mnist", "bits": 3}
    traces = [{"disorder": [[0.0, 1.0], [0.5, 0.5]], "frozen": [[False, True], [False, False]]},
              {"disorder": [[0.25, 0.25]], "frozen": [[True, True]]}]
    for seed, trace in enumerate(traces):
        folder = tmp_path / "freezing" / "rotated_mnist_cnn_w3" / "heldout_75" / "runs" / "gaqat_w3" / f"seed_{seed}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"config": config, "freeze_trace": trace}))
    null = tmp_path / "null.jsonl"
    null.write_text("\n".join(json.dumps({**{k: config[k] for k in ("model", "dataset", "bits")}, "rho": rho,
                                          "sam": sam, "random": 0.72}) for rho, sam in ((0.01, 0.9), (0.05, 0.46))))
    row = script.table(tmp_path / "freezing", null).splitlines()[2]
    assert row == "| Rotated-MNIST CNN W3A3 | `gaqat` | 2 | 3 | 42% | 50.0% | 46% / 72% |"  # 2.5 / 6 flags, 3 / 6 frozen
