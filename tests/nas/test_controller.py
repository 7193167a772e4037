"""TuNAS's controller: it finds the best arm of a bandit with a known optimum; only active
decisions count; the learning rate is off in the warm-up and ramps x10; the absolute reward."""

from __future__ import annotations

import random

import pytest
import torch

from nas.controller import Controller, reward

# three decisions; arm values per option (the optimum: 2, 1, 0), rewards noisy
VALUES = [[0.1, 0.3, 0.8], [0.2, 0.6, 0.5, 0.0], [0.4, 0.1]]
OPTIMUM = [2, 1, 0]


def test_the_controller_finds_the_best_arm_of_a_bandit():
    steps = 300
    ctrl = Controller([len(v) for v in VALUES], lr=0.05, steps=steps, warmup_steps=0, ramp=1.0)
    gen, noise = torch.Generator().manual_seed(0), random.Random(0)
    for step in range(steps):
        choices = ctrl.sample(gen)
        r = sum(v[c] for v, c in zip(VALUES, choices, strict=True)) + noise.gauss(0, 0.2)
        ctrl.update(choices, [True] * 3, r, step)
    assert ctrl.argmax() == OPTIMUM
    probs = ctrl.probabilities()
    assert all(p[c] > 0.8 for p, c in zip(probs, OPTIMUM, strict=True)), probs
    assert ctrl.baseline == pytest.approx(
        sum(v[c] for v, c in zip(VALUES, OPTIMUM, strict=True)), abs=0.15
    )


def test_inactive_decisions_do_not_learn():
    ctrl = Controller([3, 3], lr=0.1, steps=10, warmup_steps=0)
    for step in range(10):
        ctrl.update([0, 2], [True, False], 1.0 + step, step)
    assert torch.count_nonzero(ctrl.logits[1].detach()) == 0
    assert torch.count_nonzero(ctrl.logits[0].detach()) > 0


def test_learning_rate_is_zero_in_the_warmup_then_ramps_tenfold():
    ctrl = Controller([2], lr=1e-3, steps=101, warmup_steps=25, ramp=10.0)
    assert ctrl.lr_at(0) == ctrl.lr_at(24) == 0.0
    assert ctrl.lr_at(25) == pytest.approx(1e-3)
    assert ctrl.lr_at(100) == pytest.approx(1e-2)
    before = [p.detach().clone() for p in ctrl.logits]
    ctrl.update([1], [True], 5.0, step=3)
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, ctrl.logits, strict=True))


def test_the_baseline_is_a_zero_debiased_moving_average():
    ctrl = Controller([2], lr=0.0, steps=10, warmup_steps=0, momentum=0.95)
    ctrl.update([0], [True], 0.7, 0)
    assert ctrl.baseline == pytest.approx(0.7)  # not 0.05 * 0.7: debiased
    ctrl.update([0], [True], 0.9, 1)
    assert ctrl.baseline == pytest.approx((0.95 * 0.05 * 0.7 + 0.05 * 0.9) / (1 - 0.95**2))


def test_the_absolute_reward():
    assert reward("abs", 0.8, 1.2, 1.0, -0.1) == pytest.approx(0.78)
    assert reward("abs", 0.8, 0.8, 1.0, -0.1) == pytest.approx(0.78)
    assert reward("abs", 0.8, 1.0, 1.0, -0.1) == pytest.approx(0.8)
    assert reward("mnas_hard", 0.8, 0.5, 1.0, -0.1) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="reward must be one of"):
        reward("linear", 0.8, 1.0, 1.0, -0.1)


def test_many_draws_at_once_follow_the_probabilities():
    """``sample_many`` (the final choice's candidates) draws from the controller's distribution."""
    ctrl = Controller([3, 2], lr=0.1, steps=10, warmup_steps=0)
    with torch.no_grad():
        ctrl.logits[0].copy_(torch.tensor([0.0, 1.0, 2.0]))
        ctrl.logits[1].copy_(torch.tensor([1.0, -1.0]))
    draws = ctrl.sample_many(torch.Generator().manual_seed(0), 20000)
    assert len(draws) == 20000 and all(len(d) == 2 for d in draws)
    for i, probs in enumerate(ctrl.probabilities()):
        for option, p in enumerate(probs):
            share = sum(d[i] == option for d in draws) / len(draws)
            assert share == pytest.approx(p, abs=0.015)
    tables = ctrl.log_probabilities()
    lp = float(ctrl.log_prob([2, 0], [True, True]).detach())
    assert tables[0][2] + tables[1][0] == pytest.approx(lp)
