"""Model selection uses training-domain validation only: the selected step is the argmax of validation accuracy."""

from __future__ import annotations

import pytest

from gaqat_recipes import loop, train_dg


def test_selected_step_is_the_first_argmax_of_validation_not_of_test(tiny_config, monkeypatch):
    # Scripted accuracies: validation peaks at step 2 (tied again at step 4), test peaks at steps 1 and 3.
    val = iter([0.50, 0.90, 0.70, 0.90])
    test = iter([0.95, 0.20, 0.99, 0.30])

    def scripted(model, loader, names, **options):
        real = real_accuracy(model, loader, names, **options)
        is_validation = set(real["per_domain"]) == {"a", "b"}
        value = next(val if is_validation else test)
        return {"per_domain": dict.fromkeys(real["per_domain"], value), "average": value}

    real_accuracy = loop.accuracy_by_domain
    monkeypatch.setattr(loop, "accuracy_by_domain", scripted)
    metrics = train_dg(tiny_config(method="qat", eval_every=1, plots=False, save_checkpoint=False))
    history = metrics["history"]
    assert [h["val_acc"] for h in history] == [0.50, 0.90, 0.70, 0.90]
    assert metrics["selected"]["step"] == 2
    assert metrics["selected"]["test_acc"] == pytest.approx(0.20)
    assert metrics["final"]["test_acc"] == pytest.approx(0.30)


def test_selected_entry_matches_the_history_at_the_best_validation_step(tiny_config):
    metrics = train_dg(tiny_config(method="fp", steps=6, eval_every=1, plots=False, save_checkpoint=False, lr=1e-2))
    history = metrics["history"]
    best = max(range(len(history)), key=lambda i: (history[i]["val_acc"], -i))
    assert metrics["selected"]["step"] == history[best]["step"]
    assert metrics["selected"]["test_acc"] == history[best]["test_acc"]
    assert metrics["selected"]["val_per_domain"] == history[best]["val_per_domain"]
