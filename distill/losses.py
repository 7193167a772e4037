"""Distillation losses, computed in fp32 whatever the training precision (stack.md §7).

``soft_ce``: cross-entropy between stored teacher probabilities and the student's softmax, the
paper's offline loss (mnv4.md §8.3); it equals KL up to the teacher's (constant) entropy.
``kl``: T^2 * KL(softmax(teacher/T) || softmax(student/T)), Beyer et al.'s function matching;
the T^2 factor is always applied (unlike torchdistill with alpha = 0, mnv4.md §10.7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("soft_ce", "kl")


def soft_cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c p_teacher(c) log p_student(c)."""
    log_p = F.log_softmax(student_logits.float(), dim=-1)
    return -(teacher_probs.float() * log_p).sum(-1).mean()


def kl_divergence(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """T^2 * KL(teacher || student) with the student softened by T; ``teacher_probs`` at T."""
    log_p = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(log_p, teacher_probs.float(), reduction="batchmean") * temperature**2


def kd_loss(
    kind: str, student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """The named distillation loss (``soft_ce`` or ``kl``)."""
    if kind == "soft_ce":
        if temperature != 1.0:
            raise ValueError("soft_ce uses the stored T=1 labels; use kind=kl for a temperature")
        return soft_cross_entropy(student_logits, teacher_probs)
    if kind == "kl":
        return kl_divergence(student_logits, teacher_probs, temperature)
    raise ValueError(f"unknown distillation loss {kind!r}; expected one of {KINDS}")
