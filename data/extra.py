"""Class-balanced extra data (D3, paper §8): score an unlabelled pool, filter, balance.

The scorer (the teacher, or a separate model) labels each pool image on its evaluation view.
Images whose top probability is below ``threshold`` (0.3 in the paper) are dropped; each class
keeps its ``per_class`` most confident images; classes with fewer are replicated cyclically up to
the same count, so every class that has any image ends with exactly the same number.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch


@dataclass
class Selection:
    """The balanced list of (item index, class, copy number) plus the counts behind it."""

    entries: list[tuple[int, int, int]]
    before: dict[int, int]
    kept: dict[int, int]
    after: dict[int, int]
    target: int
    empty_classes: list[int]

    def report(self, classes: list[str] | None = None) -> str:
        name = (lambda c: classes[c]) if classes else str
        lines = [f"{'class':<20}{'scored':>8}{'> thr':>8}{'balanced':>10}"]
        for c in sorted(set(self.before) | set(self.after) | set(self.empty_classes)):
            lines.append(
                f"{name(c):<20}{self.before.get(c, 0):>8}{self.kept.get(c, 0):>8}"
                f"{self.after.get(c, 0):>10}"
            )
        if self.empty_classes:
            lines.append(f"no image above the threshold for classes {self.empty_classes}")
        return "\n".join(lines)


def balance(
    top_prob: torch.Tensor,
    top_class: torch.Tensor,
    num_classes: int,
    threshold: float = 0.3,
    per_class: int | None = None,
) -> Selection:
    """Filter by ``threshold``, keep the top ``per_class`` per class, replicate rare classes.

    ``per_class=None`` balances to the largest kept class. Deterministic: ties break by index.
    """
    before = Counter(top_class.tolist())
    by_class: dict[int, list[int]] = {}
    kept: dict[int, int] = {}
    for c in range(num_classes):
        idx = ((top_class == c) & (top_prob > threshold)).nonzero().flatten()
        order = sorted(idx.tolist(), key=lambda i: (-float(top_prob[i]), i))
        if order:
            kept[c] = len(order)
            by_class[c] = order[:per_class] if per_class is not None else order
    target = per_class if per_class is not None else max(kept.values(), default=0)
    entries = []
    for c, order in by_class.items():
        for n in range(target):
            entries.append((order[n % len(order)], c, n // len(order)))
    after = Counter(c for _, c, _ in entries)
    empty = [c for c in range(num_classes) if c not in by_class]
    return Selection(entries, dict(before), kept, dict(after), target, empty)
