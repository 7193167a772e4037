"""Soft labels from a teacher, the way the paper stores them (arXiv 2404.10518 §8, App. H).

Full labels are the teacher's softmax over all classes in fp16. Top-k labels keep the k largest
probabilities (fp16, descending) and their class indices; they are *not* renormalised by default,
so ``probs.sum()`` is the mass the teacher put on those k classes (reading them back,
``data.labels.decode_soft_label`` renormalises them to sum to 1 by default, so the training
stream hands the loss a distribution). Pass
``renormalize=True`` to store renormalised top-k probabilities instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from teachers.frozen import FrozenTeacher


@dataclass
class SoftLabels:
    """``probs`` [N, C] (full) or [N, k] with ``indices`` [N, k] (top-k); fp16 probabilities."""

    probs: torch.Tensor
    indices: torch.Tensor | None = None

    @property
    def top_k(self) -> int | None:
        return None if self.indices is None else self.indices.shape[1]

    def dense(self, num_classes: int) -> torch.Tensor:
        """[N, C] fp32 probabilities (top-k scattered into zeros)."""
        if self.indices is None:
            return self.probs.float()
        out = torch.zeros(self.probs.shape[0], num_classes, dtype=torch.float32)
        return out.scatter_(1, self.indices.long(), self.probs.float())


def _batches(images: torch.Tensor | Iterable[torch.Tensor], batch_size: int):
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"expected images [N, 3, H, W], got shape {tuple(images.shape)}")
        yield from images.split(batch_size)
    else:
        yield from images


@torch.no_grad()
def soft_labels(
    teacher: FrozenTeacher,
    images: torch.Tensor | Iterable[torch.Tensor],
    temperature: float = 1.0,
    top_k: int | None = None,
    batch_size: int = 64,
    renormalize: bool = False,
) -> SoftLabels:
    """Label ``images`` (RGB in [0, 1] or uint8, any size) with ``teacher``'s probabilities.

    Args:
        teacher: a ``FrozenTeacher`` (an ensemble averages its members' probabilities).
        images: one tensor [N, 3, H, W] (split into ``batch_size`` chunks) or an iterable of
            batches.
        temperature: softmax temperature (1.0: the paper's recipe).
        top_k: keep only the k most probable classes (``None``: all classes).
        batch_size: teacher batch size when ``images`` is one tensor.
        renormalize: rescale top-k probabilities to sum to 1.
    """
    if top_k is not None and not 0 < top_k <= teacher.num_classes:
        raise ValueError(f"top_k must be in [1, {teacher.num_classes}], got {top_k}")
    probs, indices = [], []
    for batch in _batches(images, batch_size):
        p = teacher.probs(batch, temperature)
        if top_k is not None:
            p, idx = p.topk(top_k, dim=1, sorted=True)
            if renormalize:
                p = p / p.sum(dim=1, keepdim=True)
            indices.append(idx.to(torch.int16 if teacher.num_classes < 32768 else torch.int32))
        probs.append(p.half().cpu())
    if not probs:
        raise ValueError("no images to label")
    return SoftLabels(torch.cat(probs), torch.cat(indices).cpu() if indices else None)
