"""The sweep writes its table, JSON and plot, and resumes without retraining finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gaqat_recipes import SweepSpec, run_sweep, sweep
from gaqat_recipes import run as run_module


def test_two_run_sweep_writes_table_json_and_plot_then_resumes(tiny_config, tmp_path, monkeypatch):
    base = tiny_config(steps=2, eval_every=1, plots=False)
    root = tmp_path / "sweep"
    runs = run_sweep(base, SweepSpec(methods=["fp", "qat"], bits=[4], test_domains=["c"], seeds=[0]), root, log=lambda s: None)

    assert [r["config"]["method"] for r in runs] == ["fp", "qat"]
    table = (root / "results.md").read_text()
    assert "| method | test c | val (train domains) | runs |" in table
    for run, label in zip(runs, ("FP (ERM)", "LSQ W4A4"), strict=True):
        assert f"| {label} | {100 * run['selected']['test_acc']:.1f} ± – |" in table
    saved = json.loads((root / "results.json").read_text())
    assert len(saved["runs"]) == 2 and [row["label"] for row in saved["summary"]] == ["FP (ERM)", "LSQ W4A4"]
    assert (root / "heldout_accuracy.png").stat().st_size > 0
    assert (root / "runs" / "qat_w4" / "test_c" / "seed_0" / "metrics.json").is_file()

    def no_training(config):
        raise AssertionError(f"{config.method} was trained again")

    monkeypatch.setattr(run_module, "train_dg", no_training)
    lines: list[str] = []
    resumed = run_sweep(base, SweepSpec(methods=["fp", "qat"], test_domains=["c"]), root, log=lines.append)
    assert [r["selected"] for r in resumed] == [r["selected"] for r in runs]
    assert all("done before" in line for line in lines)


def test_sweep_in_a_fresh_clone_resumes_from_its_committed_report(tiny_config, tmp_path, monkeypatch):
    """runs/ is ignored by git: a clone has only results.json, and must neither retrain nor drop those runs."""
    import shutil

    base = tiny_config(steps=2, eval_every=1, plots=False, method="gaqat")
    root = tmp_path / "sweep"
    first = run_sweep(base, SweepSpec(methods=["qat", "gaqat"], test_domains=["c"], seeds=[0]), root, log=lambda s: None)
    originals = {p.relative_to(root): json.loads(p.read_text()) for p in root.glob("runs/**/metrics.json")}
    shutil.rmtree(root / "runs")  # what a fresh clone holds: the report only

    trained = []
    real_train = run_module.train_dg
    monkeypatch.setattr(run_module, "train_dg", lambda config: trained.append(config.seed) or real_train(config))
    lines: list[str] = []
    runs = run_sweep(base, SweepSpec(methods=["qat", "gaqat"], test_domains=["c"], seeds=[0, 1]), root, log=lines.append)

    assert trained == [1, 1]  # only the new seed trains
    assert "restored 2 finished runs from results.json" in lines[0]
    assert [r["selected"] for r in runs[:2]] == [r["selected"] for r in first]
    restored = {p: json.loads((root / p).read_text()) for p in originals}
    assert restored == originals  # whole records, freeze trace included
    assert len(json.loads((root / "results.json").read_text())["runs"]) == 4  # the rebuilt report keeps the old runs


def test_sweep_grid_runs_full_precision_once_and_rejects_bad_bits(tiny_config, tmp_path):
    configs = sweep.sweep_configs(tiny_config(), SweepSpec(methods=["fp", "gaqat"], bits=[3, 4], seeds=[0, 1]), tmp_path)
    assert sorted({c.test_domain for c in configs}) == ["a", "b", "c"]  # every domain when none are named
    assert len(configs) == 3 * 2 * (1 + 2)
    with pytest.raises(ValueError, match=r"2\.\.8"):
        SweepSpec(bits=[4, 16]).validate()
    assert len({Path(c.output_dir) for c in configs}) == len(configs)


@pytest.mark.slow
def test_sweep_in_subprocesses_matches_in_process(tiny_config, tmp_path):
    base = tiny_config(steps=2, eval_every=1, plots=False, save_checkpoint=False)
    spec = SweepSpec(methods=["qat"], test_domains=["c"])
    inside = run_sweep(base, spec, tmp_path / "inside", log=lambda s: None)
    outside = run_sweep(base, spec, tmp_path / "outside", launcher="python", log=lambda s: None)
    assert inside[0]["selected"] == outside[0]["selected"]


def test_average_over_domains_uses_only_seeds_that_cover_every_domain():
    from gaqat_recipes.reporting import markdown_table, summarize_runs

    def run(method, domain, seed, acc):
        return {"config": {"method": method, "bits": 3, "test_domain": domain, "seed": seed},
                "selected": {"test_acc": acc, "val_acc": 0.9}}

    # seeds 0-1 on 75°, seed 0 only on 15°: a per-seed average of seed 1 would be a 75°-only number
    runs = [run("qat", "75", 0, 0.60), run("qat", "75", 1, 0.70), run("qat", "15", 0, 0.90),
            run("gaqat", "75", 0, 0.50), run("gaqat", "75", 1, 0.80)]
    qat, gaqat = summarize_runs(runs)
    assert qat["average"][0] == pytest.approx(0.75) and qat["average_seeds"] == 1
    assert qat["domains"]["75"][0] == pytest.approx(0.65)  # the per-domain column keeps every seed
    assert gaqat["average"] is None and gaqat["average_seeds"] == 0  # never ran 15°
    table = markdown_table([qat, gaqat])
    assert "| LSQ W3A3 | 90.0 ± – | 65.0 ± 7.1 | 75.0 (1 seed) |" in table
    assert "| GAQAT W3A3 | – | 65.0 ± 21.2 | – |" in table


def test_jobs_train_runs_in_parallel_processes_with_the_same_results(tiny_config, tmp_path):
    base = tiny_config(steps=2, eval_every=1, plots=False, save_checkpoint=False)
    spec = SweepSpec(methods=["fp", "qat"], test_domains=["c"])
    parallel = run_sweep(base, spec, tmp_path / "parallel", jobs=2, log=lambda s: None)
    inside = run_sweep(base, spec, tmp_path / "inside", log=lambda s: None)
    assert [r["selected"] for r in parallel] == [r["selected"] for r in inside]
    assert [(r["config"]["threads"], r["config"]["progress"]) for r in parallel] == [(1, False), (1, False)]


def test_two_sweeps_into_one_folder_leave_one_report_of_all_their_runs(tiny_config, tmp_path):
    base = tiny_config(steps=1, eval_every=1, plots=False, save_checkpoint=False)
    root = tmp_path / "shared"
    run_sweep(base, SweepSpec(methods=["fp"], test_domains=["c"]), root, log=lambda s: None)
    run_sweep(base, SweepSpec(methods=["qat"], test_domains=["c"]), root, log=lambda s: None)
    table = (root / "results.md").read_text()
    assert "| FP (ERM) |" in table and "| LSQ W4A4 |" in table
    assert len(json.loads((root / "results.json").read_text())["runs"]) == 2


def test_concurrent_report_writers_never_leave_a_partial_file(tmp_path):
    import concurrent.futures

    from gaqat_recipes import write_sweep_report

    runs = [{"config": {"method": m, "bits": 4, "test_domain": d, "seed": s},
             "selected": {"test_acc": 0.5, "val_acc": 0.9, "step": 1}} for m in ("fp", "qat") for d in "ab" for s in (0, 1)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda n: write_sweep_report(runs[: 2 + n % 7], tmp_path), range(12)))
    assert json.loads((tmp_path / "results.json").read_text())["runs"]  # complete JSON
    assert sorted(p.name for p in tmp_path.iterdir()) == [".report.lock", "heldout_accuracy.png", "results.json", "results.md"]


def test_validation_over_several_held_out_domains_is_averaged_per_seed_not_pooled():
    from gaqat_recipes.reporting import markdown_table, summarize_runs

    def run(domain, seed, val):
        return {"config": {"method": "qat", "bits": 4, "test_domain": domain, "seed": seed},
                "selected": {"test_acc": 0.5, "val_acc": val}}

    # held-out 0 validates on other domains than held-out 75: seed means 0.85 and 0.75
    runs = [run("0", 0, 0.90), run("75", 0, 0.80), run("0", 1, 0.80), run("75", 1, 0.70)]
    row = summarize_runs(runs)[0]
    assert row["val"][0] == pytest.approx(0.80) and row["val"][1] == pytest.approx(0.0707107, rel=1e-5)
    assert "| 80.0 ± 7.1 | 4 |" in markdown_table([row])  # pooled over the 4 runs it would read 80.0 ± 8.2


def test_sweep_with_a_reference_pairs_every_method_with_it_and_rejects_an_unknown_one(tiny_config, tmp_path, monkeypatch):
    base = tiny_config(steps=1, eval_every=1, plots=False, save_checkpoint=False)
    root = tmp_path / "sweep"
    run_sweep(base, SweepSpec(methods=["qat", "sam-qat"], test_domains=["c"]), root, reference="qat", log=lambda s: None)
    table = (root / "results.md").read_text()
    assert "each method minus the reference" in table and "| LSQ + SAM W4A4 − LSQ W4A4 |" in table
    assert json.loads((root / "results.json").read_text())["paired"][0]["baseline"] == "qat"

    monkeypatch.setattr(run_module, "train_dg", lambda config: pytest.fail("trained before the reference was checked"))
    with pytest.raises(ValueError, match="unknown reference method 'lsq'"):
        run_sweep(base, SweepSpec(methods=["fp"], test_domains=["c"], seeds=[5]), root, reference="lsq", log=lambda s: None)


def test_sweep_command_line_passes_the_reference_to_the_folder_report(toy_folder, tmp_path, capsys):
    from gaqat_recipes.cli import sweep_main

    flags = ["--dataset", toy_folder, "--model", "mnist_cnn_tiny", "--image-size", "16", "--steps", "1", "--eval-every", "1",
             "--batch-size", "8", "--no-checkpoint", "--no-plots", "--no-progress", "--test-domains", "c",
             "--output-dir", str(tmp_path / "cli")]
    sweep_main([*flags, "--methods", "qat", "sam-qat", "--reference", "qat"])
    assert "| LSQ + SAM W4A4 − LSQ W4A4 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sweep_main([*flags, "--methods", "qat", "--reference", "lsq"])
