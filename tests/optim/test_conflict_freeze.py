"""Hand-constructed scale gradients give the expected conflict flags, disorder and freeze decisions."""

from __future__ import annotations

import warnings

import pytest
import torch
from optim_helpers import build, loss_closure
from torch import nn

from gaqat_wrap.optim import GAQATOptimizer
from gaqat_wrap.second_pass import in_second_pass


class Toy:
    """Two step-size Parameters (per-channel and per-tensor) and a weight; the closure writes chosen g0 / g1."""

    def __init__(self) -> None:
        self.channel = nn.Parameter(torch.ones(3))
        self.tensor = nn.Parameter(torch.ones(()))
        self.weight = nn.Parameter(torch.ones(4))
        self.params = [self.channel, self.tensor, self.weight]
        self.scales = {"layer.weight": self.channel, "layer.input": self.tensor}

    def closure(self, g0: list, g1: list):
        def run():
            grads = g1 if in_second_pass() else g0
            for p, g in zip(self.params, grads, strict=True):
                p.grad = torch.as_tensor(g, dtype=torch.float32).reshape(p.shape).clone()
            return torch.tensor(1.0)
        return run


G_TASK = [[1.0, 0.0, 0.0], 1.0, [1.0, 1.0, 1.0, 1.0]]


def grads_with_smooth(channel_smooth, tensor_smooth):
    """g1 = g0 + g_smooth for the two scales (the weight's g1 is arbitrary)."""
    g1 = [[a + b for a, b in zip(G_TASK[0], channel_smooth, strict=True)], G_TASK[1] + tensor_smooth, [2.0] * 4]
    return G_TASK, g1


def conflicts(toy, opt):
    return [s.conflicts for s in opt.freeze_report()]


def test_cosine_flags_conflict_when_smooth_gradient_opposes_task_gradient():
    toy = Toy()
    opt = GAQATOptimizer(torch.optim.SGD(toy.params, lr=0.0), scales=toy.scales, window=4)
    opt.step(toy.closure(*grads_with_smooth([-1.0, 5.0, 5.0], 0.5)))   # cos = -1 / (1 * sqrt(51)) < 0; tensor: +
    assert conflicts(toy, opt) == [1, 0]
    opt.step(toy.closure(*grads_with_smooth([0.5, -5.0, 0.0], -2.0)))   # channel: dot 0.5 > 0; tensor: -2 < 0
    assert conflicts(toy, opt) == [1, 1]
    assert [s.disorder for s in opt.freeze_report()] == [0.5, 0.5]
    assert [s.window_filled for s in opt.freeze_report()] == [2, 2]


def test_sign_metric_counts_elementwise_disagreement():
    g0 = [[1.0, 1.0, 1.0], 1.0, [1.0] * 4]
    g1 = [[1.0 - 3.0, 2.0, 2.0], 2.0, [1.0] * 4]         # g_smooth = [-3, 1, 1]: 1 of 3 disagree, cosine < 0
    for metric, expected in (("cosine", [1, 0]), ("sign", [0, 0])):
        toy = Toy()
        opt = GAQATOptimizer(torch.optim.SGD(toy.params, lr=0.0), scales=toy.scales, window=4, metric=metric)
        opt.step(toy.closure(g0, g1))
        assert conflicts(toy, opt) == expected, metric
    toy = Toy()
    opt = GAQATOptimizer(torch.optim.SGD(toy.params, lr=0.0), scales=toy.scales, window=4, metric="sign")
    opt.step(toy.closure(g0, [[0.0, 0.0, 2.0], 2.0, [1.0] * 4]))   # g_smooth = [-1, -1, 1]: 2 of 3 disagree
    assert conflicts(toy, opt) == [1, 0]


def test_zero_smooth_gradient_is_no_conflict():
    toy = Toy()
    opt = GAQATOptimizer(torch.optim.SGD(toy.params, lr=0.0), scales=toy.scales, window=1)
    opt.step(toy.closure(G_TASK, G_TASK))
    assert conflicts(toy, opt) == [0, 0]


def run_sequence(opt, toy, channel_conflicts):
    """One step per flag: the channel scale conflicts or not; the tensor scale never does."""
    moved = []
    for conflict in channel_conflicts:
        before = [p.detach().clone() for p in toy.params]
        opt.step(toy.closure(*grads_with_smooth([-2.0 if conflict else 2.0, 0.0, 0.0], 1.0)))
        moved.append([not torch.equal(b, p) for b, p in zip(before, toy.params, strict=True)])
    return moved


def test_freeze_decision_at_full_window_and_frozen_scale_does_not_move():
    toy = Toy()
    opt = GAQATOptimizer(torch.optim.AdamW(toy.params, lr=0.1), scales=toy.scales, window=2, freeze_threshold=0.5)
    moved = run_sequence(opt, toy, [True, False])
    # step 1: window not full, nothing frozen; step 2: disorder 1/2 >= 0.5 freezes the channel scale for that update
    assert moved == [[True, True, True], [False, True, True]]
    report = opt.freeze_report()
    assert [(s.role, s.frozen, s.frozen_steps, s.disorder) for s in report] == [
        ("layer.weight", True, 1, 0.5), ("layer.input", False, 0, 0.0)]


def test_freeze_is_reevaluated_every_window_by_default():
    toy = Toy()
    opt = GAQATOptimizer(torch.optim.SGD(toy.params, lr=0.1, momentum=0.9), scales=toy.scales, window=2, freeze_threshold=0.5)
    moved = run_sequence(opt, toy, [True, True, False, False, False])
    assert [m[0] for m in moved] == [True, False, False, True, True]   # frozen at step 2, thawed at step 4
    assert all(m[1] and m[2] for m in moved)                           # the other scale and the weight always move
    assert opt.freeze_report()[0].frozen_steps == 2


def test_permanent_freeze_keeps_a_scale_frozen():
    toy = Toy()
    opt = GAQATOptimizer(torch.optim.SGD(toy.params, lr=0.1), scales=toy.scales, window=2,
                         freeze_threshold=0.5, permanent_freeze=True)
    moved = run_sequence(opt, toy, [True, True, False, False, False])
    assert [m[0] for m in moved] == [True, False, False, False, False]
    assert opt.freeze_report()[0].frozen_steps == 4


def test_reevaluate_every_step_with_a_sliding_window():
    toy = Toy()
    opt = GAQATOptimizer(torch.optim.SGD(toy.params, lr=0.1), scales=toy.scales, window=2,
                         reevaluate_every=1, freeze_threshold=1.0)
    moved = run_sequence(opt, toy, [True, True, False, True, True])
    assert [m[0] for m in moved] == [True, False, True, True, False]


def test_freeze_mode_smooth_updates_a_frozen_scale_with_the_task_gradient_only():
    toy = Toy()
    opt = GAQATOptimizer(torch.optim.SGD(toy.params, lr=1.0), scales=toy.scales, window=1,
                         freeze_threshold=1.0, freeze_mode="smooth")
    opt.step(toy.closure(*grads_with_smooth([-2.0, 7.0, 0.0], 1.0)))
    assert toy.channel.tolist() == [0.0, 1.0, 1.0]         # 1 - g_task = 1 - [1, 0, 0]
    assert toy.tensor.item() == 1.0 - 2.0                  # unfrozen: full g1 = 1 + 1
    assert toy.weight.tolist() == [-1.0] * 4               # weights: full g1


def test_no_freezing_when_threshold_is_none():
    toy = Toy()
    opt = GAQATOptimizer(torch.optim.SGD(toy.params, lr=0.1), scales=toy.scales, window=1, freeze_threshold=None)
    moved = run_sequence(opt, toy, [True, True])
    assert all(all(m) for m in moved)
    assert opt.freeze_report()[0].disorder == 1.0


def test_freeze_hook_receives_the_report_after_each_decision():
    toy = Toy()
    opt = GAQATOptimizer(torch.optim.SGD(toy.params, lr=0.1), scales=toy.scales, window=2, freeze_threshold=0.5)
    seen = []
    handle = opt.register_freeze_hook(lambda o, report: seen.append((o.steps, [s.frozen for s in report])))
    run_sequence(opt, toy, [True, True, False, False])
    assert seen == [(2, [True, False]), (4, [False, False])]
    handle.remove()
    run_sequence(opt, toy, [True, True])
    assert len(seen) == 2


def test_on_a_quantized_model_frozen_scales_stay_and_everything_else_moves():
    model, data = build("mlp")
    opt = GAQATOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2), model=model, sam_rho=0.5, window=1,
                         freeze_threshold=1.0)
    scales = opt._scales()
    weights = [p for p in model.parameters() if all(p is not s for s in scales)]
    for x, y in data:
        before = [p.detach().clone() for p in model.parameters()]
        opt.step(loss_closure(model, x, y))
        frozen = [s.frozen for s in opt.freeze_report()]
        after = dict(zip(map(id, model.parameters()), before, strict=True))
        for scale, is_frozen in zip(scales, frozen, strict=True):
            assert torch.equal(after[id(scale)], scale) == is_frozen
        assert all(not torch.equal(after[id(w)], w) for w in weights)
    assert any(s.frozen_steps for s in opt.freeze_report())


def _scales(n: int) -> list[nn.Parameter]:
    return [nn.Parameter(torch.ones(())) for _ in range(n)]


def named(params: list[nn.Parameter]) -> dict[str, nn.Parameter]:
    return {f"layer{i}.input": p for i, p in enumerate(params)}


def _run_conflicting(params: list[nn.Parameter], conflicting: int, steps: int, opt: GAQATOptimizer) -> None:
    """g0 = 1 for every scale; g_smooth = -2 (conflict) for the first ``conflicting`` scales, +1 for the rest."""
    def closure():
        second = in_second_pass()
        for i, p in enumerate(params):
            p.grad = torch.tensor((1.0 - 2.0 if i < conflicting else 2.0) if second else 1.0)
        return torch.tensor(1.0)
    for _ in range(steps):
        opt.step(closure)


def test_warns_once_when_a_decision_freezes_almost_every_scale():
    params = _scales(5)
    opt = GAQATOptimizer(torch.optim.SGD(params, lr=0.0), scales=named(params), window=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run_conflicting(params, conflicting=5, steps=6, opt=opt)  # three decisions, all scales frozen each time
    mostly_frozen = [w for w in caught if "quantizer scales" in str(w.message)]
    assert len(mostly_frozen) == 1 and issubclass(mostly_frozen[0].category, RuntimeWarning)
    assert "froze 100% of the 5 quantizer scales at step 2" in str(mostly_frozen[0].message)
    assert "try metric='calibrated'" in str(mostly_frozen[0].message)  # the paper's test: point at the null-tested one
    assert all(s.frozen for s in opt.freeze_report())


def test_the_warning_of_the_calibrated_metric_points_at_lsq_sam_not_at_itself():
    params = _scales(5)
    opt = GAQATOptimizer(torch.optim.SGD(params, lr=0.0), scales=named(params), window=4, metric="calibrated")
    with pytest.warns(RuntimeWarning, match="froze 100% of the 5") as caught:
        opt._warn_if_mostly_frozen([True] * 5)  # a decision that froze every scale
    message = str(caught[0].message)
    assert "try metric='calibrated'" not in message and "freeze_threshold=None (LSQ + SAM)" in message


def test_no_warning_below_the_mostly_frozen_share_or_for_tiny_models():
    for n, conflicting in ((5, 4), (3, 3)):  # 80% frozen; or 100% of only 3 scales
        params = _scales(n)
        opt = GAQATOptimizer(torch.optim.SGD(params, lr=0.0), scales=named(params), window=2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _run_conflicting(params, conflicting=conflicting, steps=4, opt=opt)
        assert [s.frozen for s in opt.freeze_report()] == [True] * conflicting + [False] * (n - conflicting)
        assert not [w for w in caught if "quantizer scales" in str(w.message)]
