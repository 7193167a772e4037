"""Top-1/top-5 accuracy of a teacher (or any classifier on [0, 1] images) on a labelled set."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torchmetrics.classification import MulticlassAccuracy


@torch.no_grad()
def evaluate(
    predict: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
) -> dict[str, float]:
    """Micro-averaged (standard) top-1 and top-5 of ``predict`` (images -> scores) over batches.

    torchmetrics' class-specific metrics default to macro averaging, which is not top-1 accuracy
    when classes are unbalanced, so ``average="micro"`` is set explicitly.
    """
    top1 = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro")
    top5 = MulticlassAccuracy(num_classes=num_classes, top_k=min(5, num_classes), average="micro")
    seen = 0
    for images, labels in batches:
        scores = predict(images).float().cpu()
        top1.update(scores, labels)
        top5.update(scores, labels)
        seen += len(labels)
    if not seen:
        raise ValueError("evaluate() got no labelled samples")
    return {"top1": top1.compute().item(), "top5": top5.compute().item(), "samples": seen}
