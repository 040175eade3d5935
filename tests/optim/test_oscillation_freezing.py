"""OscillationFreezer: oscillating weights are found and frozen, frozen weights stay pinned, schedules and the
dampening loss have their documented values, resume is bit-identical, and it composes with every optimizer."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from optim_helpers import build, loss_closure
from oscillation_reference import DenseReference, integer_state
from torch import nn

from gaqat_wrap.optim import GAQATOptimizer, OscillationConfig, OscillationFreezer, cosine_anneal, dampening_loss
from gaqat_wrap.optim.dampening import layer_dampening_loss
from gaqat_wrap.optim.weight_integers import TrackedLayer
from gaqat_wrap.quant.layers import quantize_layer
from gaqat_wrap.second_pass import in_second_pass

FAST = {"momentum": 0.3, "freeze_threshold": 0.5, "freeze_threshold_final": 0.35, "warm_start": 0.2}
"""A schedule that freezes within a few steps of a tiny model."""


def toy_regression(targets: list[float], start: list[float]) -> nn.Sequential:
    """One 4-bit weight row with step size 1 (not trained): weight i is pulled toward targets[i] through the STE."""
    layer = nn.Linear(len(targets), 1, bias=False)
    quantize_layer(layer, weight_bits=4, input_bits=None, role="toy")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([start]))
        layer.weight_quantizer.scale.fill_(1.0)
    layer.weight_quantizer.scale.requires_grad_(False)
    return nn.Sequential(layer)


def toy_loss(model: nn.Sequential, targets: list[float]) -> torch.Tensor:
    layer = model[0]
    return ((layer.weight_quantizer(layer.weight) - torch.tensor([targets])) ** 2).sum()


def test_a_weight_oscillating_between_two_integers_is_frozen_and_a_steadily_moving_one_is_not():
    targets = [0.5, 6.0]   # weight 0 sits between the grid points 0 and 1; weight 1 climbs toward 6
    model = toy_regression(targets, start=[0.4, 0.2])
    optimizer = torch.optim.SGD([model[0].weight], lr=0.15)
    freezer = OscillationFreezer(model, optimizer, total_steps=30, momentum=0.1, freeze_threshold=0.5,
                                 freeze_threshold_final=0.5, warm_start=0.0)
    history = []
    for _ in range(30):
        toy_loss(model, targets).backward()
        optimizer.step()
        optimizer.zero_grad()
        q = integer_state(model[0])[0].tolist()
        history.append(q)
    oscillating = [q[0] for q in history]
    steady = [q[1] for q in history]
    assert set(oscillating[:8]) == {0.0, 1.0}                      # it did oscillate before being frozen
    assert steady == sorted(steady) and steady[-1] == 6.0          # monotone: no reversal ever
    (index, integer), = freezer.frozen_integers().values()
    assert index.tolist() == [0]                                   # only the oscillating weight is frozen
    assert freezer.frozen_share() == 0.5 == freezer.report()[0].frozen_share
    frozen_at = next(t for t, f in enumerate(_frequency_by_hand(oscillating, 0.1)) if f > 0.5)
    # frozen at round(EMA of q), the EMA starting at q_0 = 0 and running up to the freezing step
    assert integer.tolist() == [float(round(_ema_by_hand([0.0, *oscillating[:frozen_at + 1]], 0.1)))]
    assert set(oscillating[frozen_at + 1:]) == {integer.item()}    # pinned for every later step
    assert model[0].weight[0, 0].item() == integer.item()          # w = s * q with s = 1


def _frequency_by_hand(states: list[float], m: float) -> list[float]:
    frequency, previous, direction, out = 0.0, 0.0, 0.0, []
    for q in states:
        step = (q > previous) - (q < previous)
        oscillated = step != 0 and direction != 0 and step != direction
        frequency = (1 - m) * frequency + m * oscillated
        direction = step or direction
        previous = q
        out.append(frequency)
    return out


def _ema_by_hand(states: list[float], m: float) -> float:
    ema = states[0]
    for q in states[1:]:
        ema = (1 - m) * ema + m * q
    return ema


@pytest.mark.parametrize("name", ["mlp", "convnet", "convnet-channels-last"])
def test_sparse_scaled_tracking_equals_the_dense_equations_through_renormalisations(name):
    model, data = build(name.removesuffix("-channels-last"))
    if name.endswith("-channels-last"):   # weights and inputs in NHWC memory: flat indices must stay logical
        model = model.to(memory_format=torch.channels_last)
        data = [(x.to(memory_format=torch.channels_last), y) for x, y in data]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    total = 45   # momentum 0.3: the scaled averages are renormalised every 39 steps
    reference = DenseReference(model, FAST["momentum"])
    config = OscillationConfig(**FAST)
    # registered first, so it reads the integers the freezer reads (before the freezer pins what it freezes now)
    optimizer.register_step_post_hook(lambda *_: reference.observe(config.threshold_at(reference.steps + 1, total)))
    freezer = OscillationFreezer(model, optimizer, total_steps=total, config=config)
    for step in range(total):
        x, y = data[step % len(data)]
        loss_closure(model, x, y)()
        optimizer.step()
        optimizer.zero_grad()
    frozen = freezer.frozen_integers()
    assert frozen, "the schedule froze nothing: the comparison would not cover freezing"
    for role, frequency in freezer.frequencies().items():
        expected_frozen = reference.frozen[role].reshape(-1)
        index, integer = frozen.get(role, (torch.zeros(0, dtype=torch.long), torch.zeros(0)))
        assert sorted(index.tolist()) == expected_frozen.nonzero().squeeze(1).tolist(), role
        assert torch.equal(integer, reference.frozen_value[role].reshape(-1)[index]), role
        live = ~reference.frozen[role]
        torch.testing.assert_close(frequency[live], reference.frequency[role][live], rtol=1e-5, atol=1e-6)
    if name.endswith("-channels-last"):   # pinning wrote through the weights without changing their layout
        assert all(layer.weight.is_contiguous(memory_format=torch.channels_last)
                   for layer in freezer.layers if layer.weight.dim() == 4)


def test_threshold_and_dampening_schedules_have_the_papers_values():
    config = OscillationConfig(freeze_threshold=0.1, freeze_threshold_final=0.01, dampening=0.1, warm_start=0.25)
    total = 1000
    assert [config.threshold_at(t, total) for t in (0, 249)] == [None, None]   # warm start: no freezing
    assert config.threshold_at(250, total) == pytest.approx(0.1)
    assert config.threshold_at(625, total) == pytest.approx(0.055)                # half-way: the mean
    assert config.threshold_at(1000, total) == pytest.approx(0.01)
    assert config.threshold_at(5000, total) == pytest.approx(0.01)                # stays at the final value
    t = 400
    expected = 0.01 + 0.09 * (1 + math.cos(math.pi * (t - 250) / 750)) / 2
    assert config.threshold_at(t, total) == pytest.approx(expected)
    assert [config.dampening_at(s, total) for s in (0, 249, 250)] == [0.0, 0.0, 0.0]
    assert config.dampening_at(625, total) == pytest.approx(0.05)
    assert config.dampening_at(1000, total) == pytest.approx(0.1)
    assert OscillationConfig(freeze_threshold=None).threshold_at(900, total) is None
    assert cosine_anneal(3, 10, 1.0, 0.0, warm_start=0.0) == pytest.approx((1 + math.cos(0.3 * math.pi)) / 2)


def test_the_freezer_follows_the_schedule_as_steps_complete():
    model = toy_regression([0.5], start=[0.4])
    optimizer = torch.optim.SGD([model[0].weight], lr=0.0)
    freezer = OscillationFreezer(model, optimizer, total_steps=8, warm_start=0.5, dampening=0.2)
    seen = []
    for _ in range(8):
        seen.append((freezer.threshold, freezer.dampening_weight))
        toy_loss(model, [0.5]).backward()
        optimizer.step()
    config = freezer.config
    assert seen == [(config.threshold_at(t, 8), config.dampening_at(t, 8)) for t in range(8)]
    assert seen[3][0] is None and seen[4][0] == pytest.approx(0.1) and freezer.steps == 8


@pytest.mark.parametrize("reduction", ["sum", "mean", "kernel_mean"])
def test_dampening_loss_equals_the_hand_computation(reduction):
    layer = nn.Linear(3, 2)
    quantize_layer(layer, weight_bits=3, input_bits=None, role="fc")   # integers -4 .. 3
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.30, -0.74, 5.0], [0.05, 0.18, -0.61]]))
        layer.weight_quantizer.scale.copy_(torch.tensor([0.5, 0.2]))
    # by hand: w_q = s * clamp(round(w / s), -4, 3); clip(w) = min(max(w, -4 s), 3 s)
    rows = [[(0.5 * 1 - 0.30) ** 2, (0.5 * -1 - -0.74) ** 2, (1.5 - 1.5) ** 2],
            [(0.0 - 0.05) ** 2, (0.2 * 1 - 0.18) ** 2, (0.2 * -3 - -0.61) ** 2]]
    expected = {"sum": sum(map(sum, rows)), "mean": sum(map(sum, rows)) / 6,
                "kernel_mean": sum(rows[0][j] + rows[1][j] for j in range(3)) / 3}[reduction]
    loss = layer_dampening_loss(TrackedLayer.of(layer, offset=0), reduction)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    if reduction == "sum":   # d/dw (w_q - w)^2 = -2 (w_q - w) inside the range, 0 where w is clipped
        inside = torch.tensor([[-2 * (0.5 - 0.30), -2 * (-0.5 + 0.74), 0.0], [-2 * -0.05, -2 * (0.2 - 0.18),
                                                                               -2 * (-0.6 + 0.61)]])
        torch.testing.assert_close(layer.weight.grad, inside, rtol=1e-5, atol=1e-6)
    assert layer.weight_quantizer.scale.grad is None


def test_freezer_dampening_loss_is_lambda_times_the_model_loss():
    model, _ = build("mlp")
    freezer = OscillationFreezer(model, torch.optim.SGD(model.parameters(), lr=0.0), total_steps=4, dampening=0.3,
                                 warm_start=0.0)
    freezer._steps = 2
    assert freezer.dampening_loss().item() == pytest.approx(0.15 * dampening_loss(model).item(), rel=1e-6)


def gaqat(model, variant: str):
    base = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=1e-3)
    options = {"sam": {}, "asam": {"adaptive": True}, "sagm": {"variant": "sagm"},
               "sam-no-freeze": {"freeze_threshold": None}}[variant]
    return GAQATOptimizer(base, model=model, sam_rho=0.05, window=2, **options)


@pytest.mark.filterwarnings("ignore:GAQATOptimizer froze")
@pytest.mark.parametrize("variant", ["sam", "sagm"])
def test_frozen_weights_stay_on_their_integer_in_later_steps_and_in_second_passes(variant):
    model, data = build("convnet")
    optimizer = gaqat(model, variant)
    freezer = OscillationFreezer(model, optimizer, total_steps=20, **FAST)
    checked = {"second": 0, "first": 0}

    def check_pinned(layer, args):
        frozen = freezer.frozen_integers().get(layer.weight_quantizer.role)
        if frozen is not None:
            index, integer = frozen
            assert torch.equal(integer_state(layer).reshape(-1)[index], integer)
            checked["second" if in_second_pass() else "first"] += 1

    for layer in freezer.layers:
        layer.module.register_forward_pre_hook(check_pinned)
    for step in range(20):
        x, y = data[step % len(data)]
        optimizer.step(loss_closure(model, x, y))
    assert checked["second"] > 0 and checked["first"] > 0


def test_frozen_weights_get_no_gradient():
    model, data = build("mlp")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    freezer = OscillationFreezer(model, optimizer, total_steps=20, **FAST)
    for step in range(20):
        loss_closure(model, *data[step % len(data)])()
        optimizer.step()
        optimizer.zero_grad()
    loss_closure(model, *data[0])()
    frozen = freezer.frozen_integers()
    assert frozen
    for layer in freezer.layers:
        if layer.role in frozen:
            assert not layer.weight.grad.reshape(-1)[frozen[layer.role][0]].any()


def run_training(variant: str, steps: int, dampening: float = 0.05):
    model, data = build("convnet")
    optimizer = gaqat(model, variant) if variant.startswith(("sam", "asam", "sagm")) else {
        "sgd": lambda: torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9),
        "adamw": lambda: torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)}[variant]()
    freezer = OscillationFreezer(model, optimizer, total_steps=steps, dampening=dampening, **FAST)
    x, y = data[0]

    def closure():
        loss = nn.functional.cross_entropy(model(x), y) + freezer.dampening_loss()
        loss.backward()
        return loss

    losses = []
    for _ in range(steps):
        if isinstance(optimizer, GAQATOptimizer):
            losses.append(float(optimizer.step(closure)))
        else:
            losses.append(float(closure().detach()))
            optimizer.step()
            optimizer.zero_grad()
    return freezer, losses


@pytest.mark.filterwarnings("ignore:GAQATOptimizer froze")
@pytest.mark.parametrize("variant", ["sgd", "adamw", "sam", "asam", "sagm", "sam-no-freeze"])
def test_composes_with_every_optimizer_and_variant_and_trains(variant):
    freezer, losses = run_training(variant, steps=16)
    assert freezer.steps == 16
    assert all(math.isfinite(v) for v in losses) and min(losses[-4:]) < losses[0]
    frozen = freezer.frozen_integers()
    for layer in freezer.layers:    # pinned after the last update, whatever the optimizer did to them
        if layer.role in frozen:
            index, integer = frozen[layer.role]
            assert torch.equal(integer_state(layer.module).reshape(-1)[index], integer)


def poisoned(model, x, y):
    def closure():
        loss = nn.functional.cross_entropy(model(x), y) * float("nan")
        loss.backward()
        return loss
    return closure


def test_a_skipped_gaqat_step_is_not_an_update():
    model, data = build("mlp")
    optimizer = gaqat(model, "sam")
    freezer = OscillationFreezer(model, optimizer, total_steps=10, **FAST)
    for step in range(4):
        optimizer.step(loss_closure(model, *data[step]))
    before = copy.deepcopy(freezer.state_dict())
    with pytest.warns(RuntimeWarning, match="skipped a step"):
        optimizer.step(poisoned(model, *data[0]))
    after = freezer.state_dict()
    assert after["steps"] == before["steps"] == 4 and after["decay_steps"] == before["decay_steps"]
    for role, part in before["layers"].items():
        assert all(torch.equal(value, after["layers"][role][name]) for name, value in part.items())


@pytest.mark.filterwarnings("ignore:GAQATOptimizer froze", "ignore:an Adam-family optimizer")
def test_resume_from_state_dicts_is_bit_identical():
    total, k = 24, 10

    def setup(model):
        base = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
        optimizer = GAQATOptimizer(base, model=model, sam_rho=0.05, variant="sagm", window=2)
        return optimizer, OscillationFreezer(model, optimizer, total_steps=total, dampening=0.1, **FAST)

    def step(model, optimizer, freezer, t):
        x, y = data[t % len(data)]

        def closure():
            loss = nn.functional.cross_entropy(model(x), y) + freezer.dampening_loss()
            loss.backward()
            return loss
        optimizer.step(closure)

    model, data = build("convnet")
    fresh = copy.deepcopy(model)
    optimizer, freezer = setup(model)
    for t in range(k):
        step(model, optimizer, freezer, t)
    frozen_at_k = sum(s.frozen for s in freezer.report())
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(), "osc": freezer.state_dict()}, buffer)
    for t in range(k, total):
        step(model, optimizer, freezer, t)

    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    fresh.load_state_dict(checkpoint["model"])
    resumed_optimizer, resumed = setup(fresh)
    resumed_optimizer.load_state_dict(checkpoint["optim"])
    resumed.load_state_dict(checkpoint["osc"])
    for t in range(k, total):
        step(fresh, resumed_optimizer, resumed, t)

    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    mine, theirs = freezer.state_dict(), resumed.state_dict()
    assert {k: v for k, v in mine.items() if k != "layers"} == {k: v for k, v in theirs.items() if k != "layers"}
    for role, part in mine["layers"].items():
        for name, value in part.items():
            assert torch.equal(value, theirs["layers"][role][name]), (role, name)
    assert 0 < frozen_at_k < sum(s.frozen for s in freezer.report())   # freezing happened before and after k


def test_load_state_dict_refuses_other_options_schedules_and_layers():
    model, data = build("mlp")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    freezer = OscillationFreezer(model, optimizer, total_steps=10)
    loss_closure(model, *data[0])()
    optimizer.step()
    state = freezer.state_dict()
    other_model, _ = build("convnet")
    with pytest.raises(ValueError, match=r"other options .*momentum"):
        OscillationFreezer(model, optimizer, total_steps=10, momentum=0.002).load_state_dict(state)
    with pytest.raises(ValueError, match="total_steps=10"):
        OscillationFreezer(model, optimizer, total_steps=20).load_state_dict(state)
    with pytest.raises(ValueError, match="other layers"):
        OscillationFreezer(other_model, torch.optim.SGD(other_model.parameters(), lr=0.1),
                           total_steps=10).load_state_dict(state)


def test_weight_standardised_layers_are_tracked_but_never_frozen():
    timm = pytest.importorskip("timm")
    from gaqat_wrap import quantize_model

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), timm.layers.StdConv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    model = quantize_model(net, bits=4)
    weights = [model[1].weight, model[3].weight]
    optimizer = torch.optim.SGD(weights, lr=0.02)
    freezer = OscillationFreezer(model, optimizer, total_steps=20, **FAST)
    directions = [torch.randn_like(w) for w in weights]
    for step in range(20):   # every weight is pushed back and forth along a fixed direction
        for weight, direction in zip(weights, directions, strict=True):
            weight.grad = direction * (-1) ** step
        optimizer.step()
    report = {s.role: s for s in freezer.report()}
    standardised, plain = report["1.weight"], report["3.weight"]
    assert standardised.note.startswith("tracked only") and standardised.frozen == 0
    assert standardised.oscillating > 0                   # it oscillated above the final threshold, yet is not frozen
    assert plain.note == "" and plain.frozen > 0


def test_counts_only_the_updates_accelerate_makes_under_gradient_accumulation():
    accelerate = pytest.importorskip("accelerate")
    model, data = build("mlp")
    accelerator = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    model, optimizer = accelerator.prepare(model, optimizer)
    freezer = OscillationFreezer(model, optimizer, total_steps=6, **FAST)
    for step in range(12):
        with accelerator.accumulate(model):
            accelerator.backward(nn.functional.cross_entropy(model(data[step % 4][0]), data[step % 4][1]))
            optimizer.step()
            optimizer.zero_grad()
    assert freezer.steps == 6


def test_bad_options_and_models_are_refused_with_what_to_do():
    from gaqat_wrap import quantize_model

    model, _ = build("mlp")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="momentum must be below freeze_threshold_final"):
        OscillationFreezer(model, optimizer, total_steps=10, momentum=0.05, freeze_threshold_final=0.01)
    with pytest.raises(ValueError, match="pass freeze_threshold=None to track only"):
        OscillationConfig(freeze_threshold=1.5)
    with pytest.raises(ValueError, match="warm_start"):
        OscillationConfig(warm_start=1.0)
    with pytest.raises(ValueError, match="dampening_reduction"):
        OscillationConfig(dampening_reduction="max")
    with pytest.raises(ValueError, match="total_steps"):
        OscillationFreezer(model, optimizer, total_steps=0)
    with pytest.raises(ValueError, match="quantize the model first"):
        OscillationFreezer(nn.Linear(2, 2), optimizer, total_steps=10)
    eight_bit = quantize_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)),
                               bits=4, overrides={"2": 8})
    report = OscillationFreezer(eight_bit, torch.optim.SGD(eight_bit.parameters(), lr=0.1), total_steps=10).report()
    assert [(s.role, s.note) for s in report] == [("1.weight", ""), ("2.weight", "not tracked: 8 weight bits > max_bits=4")]
