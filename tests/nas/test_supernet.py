"""A point cut out of the SuperNet is the standalone student of its spec with the same weights,
and a sampled step trains only the sampled branches."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from nas.paths import path_of
from nas.space import arch_to_spec, random_arch
from nas.stages import coarse_stage, fine_stage
from nas.supernet import SuperNet
from students.mnv4 import MobileNetV4


def _student(space, arch) -> MobileNetV4:
    """The standalone student of a point, in the SuperNet's memory layout (same conv kernels:
    the comparison is then exact up to float rounding order)."""
    return MobileNetV4(arch_to_spec(space, arch), num_classes=10, channels_last=False)


def _randomized(net: nn.Module, seed: int = 0) -> nn.Module:
    """BN affines and running statistics away from 1/0, so every slice matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net


@pytest.mark.parametrize(
    "train",
    [pytest.param(True, marks=pytest.mark.slow), False],  # eval mode in the fast tier
    ids=["batch-stats", "running-stats"],
)
def test_a_cut_out_point_equals_the_standalone_student(conv_s_space, train):
    space = conv_s_space
    net = _randomized(SuperNet(space, 10, space.kernels, space.kernels, space.expansions))
    rng = random.Random(1)
    x = torch.randn(4, 3, 32, 32)
    for _ in range(3):
        arch = random_arch(space, rng)
        student = _student(space, arch)
        student.load_state_dict(net.subnet_state_dict(path_of(arch)), strict=True)
        net.train(train)
        student.train(train)
        with torch.no_grad():
            torch.testing.assert_close(net(x, path_of(arch)), student(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # a whole Conv-S-sized supernet against its student
def test_a_fine_stage_point_equals_its_student(conv_s_space):
    coarse = coarse_stage(conv_s_space)
    base = coarse.arch([1] * len(coarse.decisions))
    fine = fine_stage(conv_s_space, base, (4.0,))
    net = _randomized(
        SuperNet(fine.space, 10, fine.start_kernels, fine.mid_kernels, fine.expansions)
    )
    net.eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(3):
        choices = [int(torch.randint(len(d.options), (1,), generator=g)) for d in fine.decisions]
        arch = fine.arch(choices)
        student = _student(fine.space, arch).eval()
        student.load_state_dict(net.subnet_state_dict(path_of(arch)))
        with torch.no_grad():
            torch.testing.assert_close(net(x, path_of(arch)), student(x), atol=1e-5, rtol=1e-5)


def test_only_the_sampled_branches_get_gradients(conv_s_space):
    coarse = coarse_stage(conv_s_space)
    base = coarse.arch([0] * len(coarse.decisions))
    fine = fine_stage(conv_s_space, base, (4.0,))
    net = SuperNet(fine.space, 10, fine.start_kernels, fine.mid_kernels, fine.expansions)
    names = [d.name for d in fine.decisions]
    choices = [0] * len(names)  # every start DW absent, every stride-1 middle DW absent
    arch = fine.arch(choices)
    net(torch.randn(4, 3, 32, 32), path_of(arch)).sum().backward()
    dw = {n: p.grad for n, p in net.named_parameters() if ".dw_start." in n or ".dw_mid." in n}
    used = {n for n, g in dw.items() if g is not None}
    assert used and all(".dw_mid." in n and ".blocks" not in n for n in used)
    assert all(".0.dw_mid." in n for n in used)  # only the stride-2 blocks' middle DWs ran


def test_the_warmup_runs_the_largest_averaged_network(conv_s_space):
    coarse = coarse_stage(conv_s_space)
    arch = coarse.arch([0] * len(coarse.decisions))
    path = coarse.path(arch, all_ops=True, largest=True)
    assert [s.width for s in path.stages] == [max(s.widths) for s in conv_s_space.stages]
    depths = [len(s.blocks) for s in path.stages]
    assert depths == [1, 1, 6, 8]
    weights = [b.weight for b in path.stages[3].blocks]
    assert weights[0] == 1 and weights[-1] == pytest.approx(1 / 8)
    net = SuperNet(coarse.space, 10, coarse.start_kernels, coarse.mid_kernels, coarse.expansions)
    assert net(torch.randn(2, 3, 32, 32), path).shape == (2, 10)


def test_the_fine_stage_inherits_the_coarse_weights_cut_to_its_widths(conv_s_space):
    from nas.search import inherit

    coarse = coarse_stage(conv_s_space)
    base = coarse.arch([0] * len(coarse.decisions))  # the narrowest widths
    big = _randomized(SuperNet(coarse.space, 10, coarse.start_kernels, coarse.mid_kernels, (4.0,)))
    fine = fine_stage(conv_s_space, base, (4.0,))
    small = SuperNet(fine.space, 10, fine.start_kernels, fine.mid_kernels, fine.expansions)
    assert inherit(small, big.state_dict()) > 0
    arch = fine.arch([fine.decisions[i].options.index(v) for i, v in enumerate(_ib_choices(fine))])
    assert arch == base  # every fine block an IB e4 k3: the coarse point itself
    x = torch.randn(4, 3, 32, 32)
    big.eval()
    small.eval()
    with torch.no_grad():
        torch.testing.assert_close(small(x, path_of(arch)), big(x, path_of(base)))


def _ib_choices(stage) -> list:
    return [
        0 if d.name.endswith("k_start") else 3 if d.name.endswith("k_mid") else 4.0
        for d in stage.decisions
    ]
