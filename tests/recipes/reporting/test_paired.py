"""Paired comparisons pair GAQAT with each baseline by (held-out domain, seed) and bit width, and land in sweep reports."""

from __future__ import annotations

import json
import math

import pytest

from gaqat_recipes import write_sweep_report
from gaqat_recipes.reporting import paired_cells, paired_cells_markdown, paired_comparisons, paired_markdown


def _run(method: str, bits: int, domain: str, seed: int, test: float, val: float = 0.9) -> dict:
    return {"config": {"method": method, "bits": bits, "test_domain": domain, "seed": seed},
            "selected": {"test_acc": test, "val_acc": val, "step": 10}, "wall_time_s": 1.0}


def _grid() -> list[dict]:
    runs = []
    for domain, seed, gaqat4, qat4, gaqat3, qat3, fp in (("0", 0, 0.70, 0.66, 0.60, 0.61, 0.75),
                                                           ("0", 1, 0.72, 0.69, 0.62, 0.60, 0.74),
                                                           ("75", 0, 0.68, 0.67, 0.58, 0.55, 0.73)):
        runs += [_run("gaqat", 4, domain, seed, gaqat4), _run("qat", 4, domain, seed, qat4),
                 _run("gaqat", 3, domain, seed, gaqat3), _run("qat", 3, domain, seed, qat3),
                 _run("fp", 4, domain, seed, fp)]
    return runs


def test_quantized_baselines_pair_at_the_same_bits_and_fp_at_every_bits():
    rows = {row["comparison"]: row for row in paired_comparisons(_grid())}
    assert list(rows) == ["GAQAT W4A4 − FP (ERM)", "GAQAT W4A4 − LSQ W4A4", "GAQAT W3A3 − FP (ERM)",
                          "GAQAT W3A3 − LSQ W3A3"]
    diffs = [0.70 - 0.66, 0.72 - 0.69, 0.68 - 0.67]  # computed by hand, pair by pair
    mean, se, pairs = rows["GAQAT W4A4 − LSQ W4A4"]["test"]
    assert pairs == 3 and mean == pytest.approx(sum(diffs) / 3)
    spread = math.sqrt(sum((d - sum(diffs) / 3) ** 2 for d in diffs) / 2)
    assert se == pytest.approx(spread / math.sqrt(3))
    assert rows["GAQAT W3A3 − FP (ERM)"]["test"][0] == pytest.approx((0.60 - 0.75 + 0.62 - 0.74 + 0.58 - 0.73) / 3)


def test_runs_without_a_partner_are_left_out():
    runs = [*_grid(), _run("gaqat", 4, "15", 0, 0.99)]  # no LSQ run on 15°
    row = next(r for r in paired_comparisons(runs) if r["comparison"] == "GAQAT W4A4 − LSQ W4A4")
    assert row["test"][2] == 3
    assert paired_comparisons([_run("qat", 4, "0", 0, 0.5)]) == []  # no GAQAT: nothing to compare
    assert paired_comparisons([_run("gaqat", 4, "0", 0, 0.5), _run("qat", 4, "0", 1, 0.5)]) == []  # other seed


def test_the_verdict_comes_from_validation_not_from_the_held_out_domain():
    runs = []
    for seed in range(3):  # GAQAT much better held-out, slightly and consistently worse on validation
        runs += [_run("gaqat", 4, "0", seed, 0.9, val=0.80 - 0.001 * seed), _run("sam-qat", 4, "0", seed, 0.5, val=0.81)]
    (row,) = paired_comparisons(runs)
    assert row["test"][0] > 0.3 and row["verdict"] == "worse"
    assert "| GAQAT W4A4 − LSQ + SAM W4A4 | +40.0 ± 0.0 | -1.1 ± 0.1 | worse | 3 |" in paired_markdown([row])



def test_a_single_pair_has_no_standard_error_and_no_verdict():
    (row,) = paired_comparisons([_run("gaqat", 4, "0", 0, 0.7, val=0.95), _run("qat", 4, "0", 0, 0.6, val=0.90)])
    assert row["val"][2] == 1 and row["verdict"] == "no evidence"
    assert "| GAQAT W4A4 − LSQ W4A4 | +10.0 ± – | +5.0 ± – | no evidence | 1 |" in paired_markdown([row])

def test_sweep_report_adds_the_paired_table_only_when_gaqat_and_a_baseline_share_runs(tmp_path):
    write_sweep_report(_grid(), tmp_path / "with")
    text = (tmp_path / "with" / "results.md").read_text()
    assert "Paired differences" in text and "| GAQAT W3A3 − LSQ W3A3 |" in text
    stored = json.loads((tmp_path / "with" / "results.json").read_text())["paired"]
    assert [r["comparison"] for r in stored] == [r["comparison"] for r in paired_comparisons(_grid())]
    write_sweep_report([r for r in _grid() if r["config"]["method"] != "gaqat"], tmp_path / "without")
    assert "Paired" not in (tmp_path / "without" / "results.md").read_text()


def test_against_a_reference_every_other_method_is_paired_with_it_at_its_bits():
    rows = {row["comparison"]: row for row in paired_comparisons(_grid(), baseline="qat")}
    assert list(rows) == ["GAQAT W4A4 − LSQ W4A4", "GAQAT W3A3 − LSQ W3A3"]  # FP has no quantized partner bits
    assert rows["GAQAT W3A3 − LSQ W3A3"]["test"][0] == pytest.approx((0.60 - 0.61 + 0.62 - 0.60 + 0.58 - 0.55) / 3)
    assert all(row["baseline"] == "qat" and row["method"] == "gaqat" for row in rows.values())


def test_sweep_report_with_a_reference_and_early_stopped_runs_states_the_training_length(tmp_path):
    runs = _grid()
    for index, run in enumerate(runs):
        run["selected"]["step"], run["stopped_step"] = 100 * (index % 3 + 1), 100 * (index % 3 + 5)
    write_sweep_report(runs, tmp_path, reference="qat")
    text = (tmp_path / "results.md").read_text()
    assert "each method minus the reference" in text and "| GAQAT W4A4 − LSQ W4A4 |" in text
    assert "| GAQAT W4A4 | 200 (100–300) | 600 (500–700) | 3 |" in text  # runs 0, 5, 10: selected 100, 300, 200


def test_the_cell_by_cell_table_holds_each_pair_and_averages_to_the_paired_mean(tmp_path):
    runs = [*_grid(), _run("gaqat", 4, "15", 1, 0.99), _run("qat", 4, "75", 1, 0.64)]  # unpaired on both sides
    rows = paired_cells(runs, "qat", "test_acc")
    assert [(row["label"], row["difference"]) for row in rows] == [
        ("LSQ W4A4", False), ("GAQAT W4A4", True), ("LSQ W3A3", False), ("GAQAT W3A3", True)]  # FP: no partner
    reference, gaqat4 = rows[0], rows[1]
    assert reference["cells"] == {("0", 0): 0.66, ("0", 1): 0.69, ("75", 0): 0.67, ("75", 1): 0.64}
    assert gaqat4["cells"] == pytest.approx({("0", 0): 0.04, ("0", 1): 0.03, ("75", 0): 0.01})  # not 15° seed 1
    pooled = next(r for r in paired_comparisons(runs, baseline="qat") if r["comparison"] == "GAQAT W4A4 − LSQ W4A4")
    assert gaqat4["mean"] == pytest.approx(pooled["test"])
    table = paired_cells_markdown(rows[:2]).splitlines()
    assert table[0] == "| method | `0`, seed 0 | `75`, seed 0 | `0`, seed 1 | `75`, seed 1 | mean ± SE |"
    assert table[3] == "| GAQAT W4A4 | +4.0 | +1.0 | +3.0 | not run | +2.7 ± 0.9 |"
    write_sweep_report(runs, tmp_path, reference="qat")
    cells = (tmp_path / "paired_cells.md").read_text()
    assert cells.index("Training-domain validation") < cells.index("Held-out domain") and table[3] in cells
    write_sweep_report(runs, tmp_path / "no_reference")
    assert not (tmp_path / "no_reference" / "paired_cells.md").exists()
