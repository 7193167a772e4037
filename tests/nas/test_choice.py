"""A stage's result: the controller's most probable network within the latency band of T0
(nas/choice.py), not the per-decision argmax of a distribution that has not collapsed."""

from __future__ import annotations

import itertools

import pytest
import torch

from nas.choice import choose
from nas.config import ChoiceConfig
from nas.controller import Controller
from nas.space import Arch
from nas.stages import coarse_stage


def _cost(arch: Arch) -> float:
    """A latency that grows with width x depth (the runtime's table is not needed here)."""
    return sum(s.width * s.depth for s in arch.stages) / 100


def _leaning_to_the_largest(sizes: list[int]) -> Controller:
    """A spread distribution whose every decision leans to its last option (widest, deepest)."""
    ctrl = Controller(sizes, lr=0.1, steps=10, warmup_steps=0)
    with torch.no_grad():
        for lg in ctrl.logits:
            lg[-1] = 0.6
    return ctrl


def _brute_force_best(stage, ctrl, target: float, band: float) -> Arch:
    """The most probable network within the band, over every choice of the stage."""
    best, best_lp = None, -float("inf")
    for choices in itertools.product(*(range(n) for n in stage.sizes)):
        arch = stage.arch(list(choices))
        if abs(_cost(arch) / target - 1) > band:
            continue
        lp = float(ctrl.log_prob(list(choices), stage.active(list(choices))).detach())
        if lp > best_lp:
            best, best_lp = arch, lp
    return best


def test_the_result_is_the_most_probable_network_within_the_band(tiny_space):
    stage = coarse_stage(tiny_space)
    ctrl = _leaning_to_the_largest(stage.sizes)
    argmax = stage.arch(ctrl.argmax())
    target = 0.6 * _cost(argmax)
    rule = ChoiceConfig("in_band", 0.1, 2048)

    chosen = choose(ctrl, stage, _cost, target, rule, seed=0)

    assert abs(_cost(argmax) / target - 1) > 0.1  # TuNAS's rule misses the target here ...
    assert abs(chosen.predicted_ms / target - 1) <= 0.1  # ... this one does not
    assert chosen.arch == _brute_force_best(stage, ctrl, target, 0.1)
    assert chosen.argmax == argmax and chosen.in_band >= 1
    assert chosen.predicted_ms == pytest.approx(_cost(chosen.arch))


def test_the_argmax_rule_is_tunas(tiny_space):
    stage = coarse_stage(tiny_space)
    ctrl = _leaning_to_the_largest(stage.sizes)
    target = 0.6 * _cost(stage.arch(ctrl.argmax()))
    chosen = choose(ctrl, stage, _cost, target, ChoiceConfig("argmax", 0.1, 2048), seed=0)
    assert chosen.arch == stage.arch(ctrl.argmax())
    assert (chosen.candidates, chosen.in_band) == (1, 0)  # the argmax is out of the band


def test_a_collapsed_distribution_gives_its_network_under_both_rules(tiny_space):
    stage = coarse_stage(tiny_space)
    ctrl = Controller(stage.sizes, lr=0.1, steps=10, warmup_steps=0)
    with torch.no_grad():
        for lg in ctrl.logits:
            lg[0] = 30.0  # every decision its first option
    only = stage.arch(ctrl.argmax())
    target = _cost(only) * 1.05
    for rule in ("in_band", "argmax"):
        assert choose(ctrl, stage, _cost, target, ChoiceConfig(rule, 0.1, 256), 0).arch == only


def test_with_nothing_in_the_band_the_closest_to_the_target_is_chosen(tiny_space):
    stage = coarse_stage(tiny_space)
    ctrl = _leaning_to_the_largest(stage.sizes)
    costs = {
        _cost(stage.arch(list(c))) for c in itertools.product(*(range(n) for n in stage.sizes))
    }
    target = 10 * max(costs)  # out of reach: the most expensive network is the closest
    chosen = choose(ctrl, stage, _cost, target, ChoiceConfig("in_band", 0.1, 2048), seed=0)
    assert chosen.in_band == 0
    assert chosen.predicted_ms == max(costs)


def test_the_same_seed_gives_the_same_network_on_every_replica(tiny_space):
    stage = coarse_stage(tiny_space)
    ctrl = _leaning_to_the_largest(stage.sizes)
    target = 0.6 * _cost(stage.arch(ctrl.argmax()))
    rule = ChoiceConfig("in_band", 0.1, 8)  # few draws: the result depends on which
    results = {choose(ctrl, stage, _cost, target, rule, seed=7).arch for _ in range(3)}
    assert len(results) == 1
