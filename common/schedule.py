"""The learning-rate schedule shared by teacher training and distillation."""

from __future__ import annotations

import torch


def warmup_cosine(optimizer, warmup_steps: int, total_steps: int, floor: float = 1e-3):
    """Linear warm-up then cosine decay to ``floor`` x peak, stepped every optimizer step."""
    warmup_steps = max(1, min(warmup_steps, total_steps - 1))
    peak = optimizer.param_groups[0]["lr"]  # read first: LinearLR scales it down at once
    return torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        [
            torch.optim.lr_scheduler.LinearLR(optimizer, 1e-3, 1.0, total_iters=warmup_steps),
            torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=floor * peak
            ),
        ],
        milestones=[warmup_steps],
    )
