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


def test_runs_restored_without_a_trace_are_read_at_their_evaluations(tmp_path, bench_dg_script):
    script = bench_dg_script("freezing_flag_rates")
    config = {"method": "gaqat", "model": "mnist_cnn_small", "dataset": "rotated_mnist", "bits": 3}
    folder = tmp_path / "freezing" / "rotated_mnist_cnn_w3" / "heldout_75" / "runs" / "gaqat_w3" / "seed_0"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"config": config, "freeze_trace": {
        "disorder": [[0.0, 1.0]], "frozen": [[False, True]]}}))
    history = [{"mean_disorder": 0.0, "frozen_fraction": 0.0},  # before the first decision: not a reading
               {"mean_disorder": 0.2, "frozen_fraction": 0.1}, {"mean_disorder": 0.3, "frozen_fraction": 0.3}]
    restored = {"config": {**config, "seed": 1, "test_domain": "75",
                           "output_dir": "old/runs/gaqat_w3/test_75/seed_1"}, "history": history}
    (folder.parents[2] / "results.json").write_text(json.dumps({"runs": [restored]}))  # a report of before whole runs
    entry = script.trace_rates(tmp_path / "freezing")[("rotated_mnist_cnn_w3", "gaqat")]
    assert (entry["runs"], entry["decisions"], entry["evaluations"]) == (2, 1, 2)
    assert abs(entry["flagged"] - (0.5 + 0.2 + 0.3) / 3) < 1e-12  # a decision (mean over step sizes) = a reading
    row = script.table(tmp_path / "freezing", tmp_path / "no_null.jsonl").splitlines()[2]
    assert "| 2 | 1 + 2 read at evaluations | 33% | 30.0% | not measured |" in row
