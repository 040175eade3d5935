"""False-freeze rate and power of metric="calibrated" on synthetic step-size gradients.

    python bench/bench_calibrated_metric.py          # ~2 minutes on one core; writes bench/results/calibrated_metric.json

Step sizes of 1 to 1024 entries get g0 = s + n0, a second pass g1 = g0 - beta * g0 + n1 - n0 (beta > 0 only on the
planted half) and a random-direction pass g_rand = g0 + n2 - n0 (s, n0, n1, n2 standard normal). The generator is the
one of tests/optim/test_calibrated_metric.py; results are shares of step sizes frozen at the first full decision.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "optim"))

from test_calibrated_metric import SIZES, Synthetic, sizes_times  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "calibrated_metric.json"
SEEDS = range(4)


def measure(null_every: int, beta: float, metric: str = "calibrated") -> dict:
    planted_total, planted_frozen = collections.Counter(), collections.Counter()
    clean_total = clean_frozen = 0
    for seed in SEEDS:
        sizes = sizes_times(20)
        planted = {i for i in range(len(sizes)) if i % 2 == 0} if beta else set()
        report = Synthetic(sizes, planted, beta, seed).run(10 * null_every, metric=metric, window=10,
                                                           null_every=null_every).freeze_report()
        for i, (n, status) in enumerate(zip(sizes, report, strict=True)):
            if i in planted:
                planted_total[n] += 1
                planted_frozen[n] += status.frozen
            else:
                clean_total += 1
                clean_frozen += status.frozen
    return {"metric": metric, "null_every": null_every, "beta": beta,
            "false_freeze_rate": clean_frozen / clean_total,
            "power_by_entries": {n: planted_frozen[n] / planted_total[n] for n in SIZES} if beta else None}


def main() -> None:
    rows = [measure(1, 0.0), measure(5, 0.0), measure(1, 0.0, metric="cosine")]
    rows += [measure(null_every, beta) for null_every in (1, 5) for beta in (0.2, 0.5)]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"seeds": len(SEEDS), "step_sizes_per_seed": 160, "window": 10, "alpha": 0.05,
                                   "rows": rows}, indent=2))
    for row in rows:
        power = row["power_by_entries"]
        print(f"{row['metric']:10s} null_every={row['null_every']} beta={row['beta']}: false {row['false_freeze_rate']:.3f}"
              + (f"  power {power}" if power else ""))


if __name__ == "__main__":
    main()
