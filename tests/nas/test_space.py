"""The search space: the Conv models are points of it, points round-trip through their specs,
and the latency table's coverage holds every block a stage can sample."""

from __future__ import annotations

import random

import pytest

import students
from nas.latency import network_blocks
from nas.space import NotInSpace, arch_to_spec, point_of, random_arch
from nas.stages import StageSearch, coarse_stage, fine_stage


def test_conv_s_is_a_point_of_the_digits_space(conv_s_space):
    spec = students.SPECS["mnv4_conv_s"]
    arch = point_of(conv_s_space, spec)
    assert arch_to_spec(conv_s_space, arch).stages == spec.stages
    assert [s.depth for s in arch.stages] == [1, 1, 6, 6]


@pytest.mark.parametrize("name", ["mnv4_conv_m", "mnv4_conv_l"])
def test_conv_m_and_l_are_points_of_their_layout(conv_ml_space, name):
    spec = students.SPECS[name]
    assert arch_to_spec(conv_ml_space, point_of(conv_ml_space, spec)).stages == spec.stages


@pytest.mark.parametrize("name", ["mnv4_hybrid_m", "mnv4_hybrid_l"])
def test_the_hybrids_are_not_points(conv_ml_space, name):
    with pytest.raises(NotInSpace, match="layer scale"):
        point_of(conv_ml_space, students.SPECS[name])


def test_a_spec_outside_the_space_says_what_differs(conv_s_space):
    with pytest.raises(NotInSpace, match="blocks.0 is not a conv_pair"):
        point_of(conv_s_space, students.SPECS["mnv4_conv_m"])


def test_random_points_round_trip(conv_s_space):
    rng = random.Random(0)
    for _ in range(20):
        arch = random_arch(conv_s_space, rng)
        assert point_of(conv_s_space, arch_to_spec(conv_s_space, arch)) == arch


def _stages(space):
    coarse = coarse_stage(space)
    arch = coarse.arch([0] * len(coarse.decisions))
    one = StageSearch("one", space, widths=True, blocks=True, expansions=(2.0, 4.0))
    return [coarse, fine_stage(space, arch, (4.0,)), one]


def test_the_table_coverage_holds_every_block_a_stage_samples(conv_s_space):
    import torch

    for stage in _stages(conv_s_space):
        covered = {(row, c, size) for row, c, size in stage.sampled_rows()}
        g = torch.Generator().manual_seed(0)
        from nas.controller import Controller

        ctrl = Controller(stage.sizes, 0.1, 10, 0)
        for _ in range(30):
            arch = stage.arch(ctrl.sample(g))
            spec = arch_to_spec(stage.space, arch)
            for key in network_blocks(spec, 32, 10)[:-1]:  # the head is keyed by the app
                assert (key.row, key.in_chs, key.size) in covered, (stage.name, key.text())
