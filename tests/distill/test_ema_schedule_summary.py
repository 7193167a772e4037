"""Small pieces with exact answers: the EMA's decay warm-up, the LR schedule's shape and the
summary's teacher top-1 on a real shard set."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from common.schedule import warmup_cosine
from distill.module import ema_update
from distill.summary import teacher_top1
from tests.helpers import write_set


@pytest.mark.parametrize("n", [0, 1, 5, 30, 200])
def test_ema_decay_ramps_as_1_plus_n_over_10_plus_n_capped_at_decay(n):
    decay = 0.95
    update = ema_update(decay)
    ema, current = [torch.zeros(3)], [torch.ones(3)]
    update(ema, current, torch.tensor(n))
    d = min(decay, (1 + n) / (10 + n))
    torch.testing.assert_close(ema[0], torch.full((3,), 1 - d))


def test_ema_without_warmup_uses_the_decay_from_the_first_update():
    ema = [torch.zeros(2)]
    ema_update(0.9, warmup=False)(ema, [torch.ones(2)], torch.tensor(0))
    torch.testing.assert_close(ema[0], torch.full((2,), 0.1))


def test_ema_copies_integer_buffers_and_averages_the_rest_in_an_averaged_model():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    averaged = AveragedModel(model, multi_avg_fn=ema_update(0.99), use_buffers=True)
    averaged.update_parameters(model)  # n = 0: a copy
    start = model[0].weight.detach().clone()
    for _ in range(3):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        model(torch.randn(4, 2))  # BatchNorm counts a batch
        averaged.update_parameters(model)  # called with n = step + 1
    expected = start.clone()
    for step in range(3):
        n = step + 1
        d = min(0.99, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * (start + step + 1)
    torch.testing.assert_close(averaged.module[0].weight, expected)
    assert int(averaged.module[1].num_batches_tracked) == int(model[1].num_batches_tracked) == 3


def _lrs(warmup: int, total: int, floor: float, peak: float = 0.1) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=peak)
    sched = warmup_cosine(opt, warmup, total, floor)
    lrs = []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


PEAK, WARMUP, TOTAL, FLOOR = 0.1, 10, 50, 0.01


def test_lr_warms_up_linearly_to_the_peak_at_warmup_steps_then_decreases():
    lrs = _lrs(WARMUP, TOTAL, FLOOR, PEAK)
    start = 1e-3 * PEAK
    for s in range(WARMUP + 1):  # linear from 1e-3 x peak to the peak at warmup_steps
        assert lrs[s] == pytest.approx(start + (PEAK - start) * s / WARMUP, rel=1e-6)
    assert max(lrs) == pytest.approx(PEAK) and lrs.index(max(lrs)) == WARMUP
    assert all(a > b for a, b in zip(lrs[WARMUP:], lrs[WARMUP + 1 :], strict=False))


def test_lr_follows_a_cosine_from_the_peak_to_floor_times_peak_at_total():
    lrs = _lrs(WARMUP, TOTAL, FLOOR, PEAK)
    low = FLOOR * PEAK
    for s in range(WARMUP, TOTAL + 1):
        t = (s - WARMUP) / (TOTAL - WARMUP)
        assert lrs[s] == pytest.approx(low + (PEAK - low) * (1 + math.cos(math.pi * t)) / 2)
    assert lrs[TOTAL] == pytest.approx(low)


def test_lr_warmup_longer_than_the_run_still_reaches_the_peak_before_the_end():
    lrs = _lrs(warmup=100, total=20, floor=0.0)
    assert lrs.index(max(lrs)) == 19 and max(lrs) == pytest.approx(0.1)


def test_teacher_top1_is_the_share_of_samples_whose_stored_label_argmax_is_the_class(tmp_path):
    write_set(tmp_path, "val", [7, 6, 5], wrong_every=4)  # samples 0, 4, 8, 12, 16 are wrong
    result = teacher_top1(tmp_path, "val")
    assert result["samples"] == 18 and result["skipped"] == []
    assert result["top1"] == pytest.approx(13 / 18)
