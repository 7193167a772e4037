"""The distillation losses: what they compute and where T^2 goes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.losses import kd_loss, kl_divergence, soft_cross_entropy


def test_soft_cross_entropy_is_kl_plus_the_teacher_entropy():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g).softmax(1)
    entropy = -(teacher * teacher.log()).sum(1).mean()
    torch.testing.assert_close(
        soft_cross_entropy(student, teacher), kl_divergence(student, teacher) + entropy
    )


def test_kl_scales_by_t_squared_and_is_zero_at_the_teacher():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 5, generator=g)
    t = 3.0
    teacher = F.softmax(logits / t, 1)
    assert kl_divergence(logits, teacher, t).abs() < 1e-6
    other = torch.randn(4, 5, generator=g)
    manual = F.kl_div(F.log_softmax(other / t, 1), teacher, reduction="batchmean") * t * t
    torch.testing.assert_close(kd_loss("kl", other, teacher, t), manual)


def test_bad_kind_and_softened_soft_ce_are_errors():
    x, p = torch.randn(2, 3), torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="unknown distillation loss"):
        kd_loss("mse", x, p)
    with pytest.raises(ValueError, match="use kind=kl"):
        kd_loss("soft_ce", x, p, temperature=2.0)


def test_losses_are_computed_in_fp32_under_bf16():
    x = torch.randn(2, 3).bfloat16()
    assert soft_cross_entropy(x, torch.full((2, 3), 1 / 3)).dtype == torch.float32
