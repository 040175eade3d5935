"""The GAQAT ablation runs each variant with exactly its option changed, pairs runs by domain and seed, and decides
from training-domain validation only."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from gaqat_recipes import (
    GAQAT_ABLATIONS,
    TrainConfig,
    ablation_variant,
    load_sweep_runs,
    run_ablation,
    write_sweep_report,
)
from gaqat_recipes import run as run_module
from gaqat_recipes.ablation import REFERENCE, paired_difference, summarize_ablation, verdict
from gaqat_recipes.cli import ablation_main, report_main
from gaqat_recipes.reporting.paired import critical_value
from gaqat_wrap import GAQATConfig


def _run(domain: str, seed: int, val: float, test: float, frozen: float = 0.0) -> dict:
    return {"config": {"method": "gaqat", "bits": 3, "test_domain": domain, "seed": seed},
            "selected": {"val_acc": val, "test_acc": test}, "history": [{"frozen_fraction": frozen}]}


def test_every_variant_changes_only_the_option_it_names():
    defaults = GAQATConfig().to_dict()
    base = {"test_domain": "0"}
    assert GAQAT_ABLATIONS[0].name == REFERENCE and not GAQAT_ABLATIONS[0].overrides
    assert len({v.name for v in GAQAT_ABLATIONS}) == len(GAQAT_ABLATIONS)
    for variant in GAQAT_ABLATIONS[1:]:
        config = TrainConfig(**base, method=variant.method, gaqat=dict(variant.overrides)).gaqat_config().to_dict()
        changed = {k for k in defaults if config[k] != defaults[k]}
        if variant.method == "sam-qat":
            assert changed == {"freeze_threshold"} and config["freeze_threshold"] is None
        else:
            follows = {"reevaluate_every"} if "window" in variant.overrides else set()  # re-evaluated every K steps
            assert changed == set(variant.overrides) | follows, variant.name
            assert changed, f"{variant.name} equals the defaults"
    factors = {v.factor for v in GAQAT_ABLATIONS}
    assert {"freeze_threshold", "window", "freeze_mode", "metric", "permanent_freeze", "perturb_scales"} <= factors


def test_paired_difference_pairs_by_domain_and_seed_not_by_order():
    reference = [_run("0", 0, 0.70, 0.5), _run("0", 1, 0.80, 0.5), _run("75", 0, 0.60, 0.5)]
    variant = [_run("75", 0, 0.65, 0.5), _run("0", 1, 0.82, 0.5), _run("0", 0, 0.73, 0.5), _run("15", 0, 0.1, 0.1)]
    mean, se, pairs = paired_difference(variant, reference, "val_acc")
    assert pairs == 3  # the 15° run has no partner
    assert mean == pytest.approx((0.05 + 0.02 + 0.03) / 3)
    assert se == pytest.approx(0.01527525 / 3 ** 0.5, rel=1e-5)


def test_verdict_needs_a_paired_gain_beyond_students_t_standard_errors():
    assert critical_value(6) == pytest.approx(2.5706, abs=1e-4)  # t(0.975, 5 df)
    assert verdict(0.026, 0.01, 6) == "better"
    assert verdict(0.025, 0.01, 6) == "no evidence"
    assert verdict(-0.026, 0.01, 6) == "worse"
    assert verdict(0.03, 0.01, 3) == "no evidence"  # 3 SE is not enough with 3 pairs (t = 4.30)
    assert verdict(0.05, 0.01, 3) == "better"
    assert verdict(0.5, 0.1, 1) == "no evidence"  # one pair has no error estimate


def test_verdict_is_wrong_about_5_percent_of_the_time_on_pure_noise():
    generator = np.random.default_rng(0)
    for pairs in (2, 3, 6):
        diffs = generator.normal(size=(4000, pairs))
        calls = [verdict(d.mean(), d.std(ddof=1) / np.sqrt(pairs), pairs) != "no evidence" for d in diffs]
        assert 0.035 < np.mean(calls) < 0.065, pairs


def test_held_out_accuracy_never_decides_the_verdict():
    reference = [_run("0", s, 0.80, 0.50) for s in range(3)]
    better_test_only = [_run("0", s, 0.79 - 0.001 * s, 0.90) for s in range(3)]
    rows = summarize_ablation({REFERENCE: reference, "window_5": better_test_only},
                              [ablation_variant(REFERENCE), ablation_variant("window_5")])
    assert rows[1]["test_diff"][0] == pytest.approx(0.40)
    assert rows[1]["verdict"] == "worse"  # validation went down a little, consistently


def test_ablation_runs_each_variant_with_its_options_writes_the_table_and_resumes(tiny_config, tmp_path, monkeypatch):
    base = tiny_config(steps=2, eval_every=1, gaqat={"window": 1}, plots=False, save_checkpoint=False)
    variants = [ablation_variant(REFERENCE), ablation_variant("metric_sign"), ablation_variant("no_freezing")]
    root = tmp_path / "ablation"
    results = run_ablation(base, variants, bits=4, test_domains=["c"], seeds=[0, 1], root=root, log=lambda s: None)

    assert [r["method"]["gaqat"]["metric"] for r in results["metric_sign"]] == ["sign", "sign"]
    assert [r["method"]["gaqat"]["freeze_threshold"] for r in results["no_freezing"]] == [None, None]
    assert results[REFERENCE][0]["method"]["gaqat"] == {**GAQATConfig(window=1).to_dict(), "reevaluate_every": 1}
    assert (root / "metric_sign" / "runs" / "gaqat_w4" / "test_c" / "seed_1" / "metrics.json").is_file()
    table = (root / "results.md").read_text()
    assert "| metric_sign | metric=sign |" in table and "| default | library defaults |" in table
    saved = json.loads((root / "results.json").read_text())
    assert [row["name"] for row in saved["rows"]] == [REFERENCE, "metric_sign", "no_freezing"]
    assert saved["rows"][1]["pairs"] == 2

    monkeypatch.setattr(run_module, "train_dg", lambda config: pytest.fail(f"{config.output_dir} was trained again"))
    resumed = run_ablation(base, variants, bits=4, test_domains=["c"], seeds=[0, 1], root=root, log=lambda s: None)
    assert {k: [r["selected"] for r in v] for k, v in resumed.items()} == \
        {k: [r["selected"] for r in v] for k, v in results.items()}


def test_ablation_rejects_an_empty_or_repeated_variant_list(tiny_config, tmp_path):
    with pytest.raises(ValueError, match="at least one variant"):
        run_ablation(tiny_config(), [], bits=4, test_domains=["c"], seeds=[0], root=tmp_path)
    with pytest.raises(ValueError, match="unique"):
        run_ablation(tiny_config(), [ablation_variant(REFERENCE)] * 2, bits=4, test_domains=["c"], seeds=[0], root=tmp_path)


def test_ablation_command_line_rejects_unknown_variants_and_ablated_flags(capsys):
    with pytest.raises(SystemExit):
        ablation_main(["--test-domains", "0", "--variants", "metric_l2"])
    assert "invalid choice: 'metric_l2'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the ablation sets the GAQAT options itself
        ablation_main(["--test-domains", "0", "--window", "5"])
    assert "unrecognized arguments: --window 5" in capsys.readouterr().err


def test_combined_report_reads_runs_of_separate_sweep_folders(tmp_path, capsys):
    for domain, acc in (("0", 0.6), ("75", 0.8)):
        run = _run(domain, 0, 0.9, acc)
        run["config"]["method"] = "qat"
        folder = tmp_path / f"heldout_{domain}" / "runs" / "qat_w3" / f"test_{domain}" / "seed_0"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(run))
    runs = load_sweep_runs([tmp_path / "heldout_0", tmp_path / "heldout_75"])
    assert [r["config"]["test_domain"] for r in runs] == ["0", "75"]
    report_main(["--sweeps", str(tmp_path / "heldout_0"), str(tmp_path / "heldout_75"), "--output-dir", str(tmp_path / "all")])
    table = (tmp_path / "all" / "results.md").read_text()
    assert "| LSQ W3A3 | 60.0 ± – | 80.0 ± – | 70.0 (1 seed) |" in table
    assert table in capsys.readouterr().out
    assert write_sweep_report(runs, tmp_path / "again")["table"].read_text() == table


def test_a_base_config_keeps_its_shared_options_in_every_variant(tiny_config, tmp_path):
    base = replace(tiny_config(steps=1, eval_every=1, plots=False, save_checkpoint=False), lr=2e-3)
    results = run_ablation(base, [ablation_variant("window_5")], bits=3, test_domains=["c"], seeds=[0],
                           root=tmp_path, log=lambda s: None)
    config = results["window_5"][0]["config"]
    assert (config["lr"], config["bits"], config["gaqat"], config["method"]) == (2e-3, 3, {"window": 5}, "gaqat")


def test_seed_clustered_difference_averages_a_seeds_domains_before_the_standard_error():
    from gaqat_recipes.reporting import seed_clustered_difference

    def run(domain, seed, val):
        return {"config": {"test_domain": domain, "seed": seed}, "selected": {"val_acc": val}}

    # seed 0 gains 1 point on each of 4 domains, seed 1 gains 3: the unit is the seed, so SE = 1 over 2 seeds
    mine = [run(d, s, 0.5 + (0.01 if s == 0 else 0.03)) for d in "abcd" for s in (0, 1)]
    reference = [run(d, s, 0.5) for d in "abcd" for s in (0, 1)] + [run("e", 0, 0.1)]  # "e" has no pair
    mean, se, seeds = seed_clustered_difference(mine, reference, "val_acc")
    assert seeds == 2 and abs(mean - 0.02) < 1e-12 and abs(se - 0.01) < 1e-12
    assert paired_difference(mine, reference, "val_acc")[2] == 8                   # the unclustered count
    assert seed_clustered_difference([], reference, "val_acc")[2] == 0
