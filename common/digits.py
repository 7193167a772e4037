"""The embedded default dataset: scikit-learn's digits as RGB images, so everything runs offline.

1,797 real handwritten digits (8x8, 16 grey levels, UCI ML hand-written digits) ship inside
scikit-learn. They are upsampled to ``size`` px (bicubic, antialiased), scaled to 0-255 and
replicated over three channels, white strokes on black.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DIGIT_CLASSES = [str(i) for i in range(10)]

# The dataset's split (conf/dataset/digits.yaml ``digits.fractions``): a labelled split the
# teacher trains on, an unlabelled pool and the validation split every result is reported on.
DIGIT_FRACTIONS = {"labelled": 0.1, "pool": 0.6, "val": 0.3}


def load_digits_images(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as uint8 RGB [N, 3, size, size] and int64 labels [N]."""
    from sklearn.datasets import load_digits

    if size < 8:
        raise ValueError(f"digit images need size >= 8 px, got {size}")
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return x, torch.from_numpy(digits.target.astype(np.int64))


def stratified_split(
    labels: torch.Tensor, sizes: dict[str, float], seed: int = 0
) -> dict[str, torch.Tensor]:
    """Split sample indices into named parts with the same class balance in each.

    ``sizes`` maps part name -> fraction of every class (fractions sum to at most 1; any rest is
    left out). Deterministic for a given seed.
    """
    if sum(sizes.values()) > 1 + 1e-9:
        raise ValueError(f"split fractions sum to more than 1: {sizes}")
    g = torch.Generator().manual_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in sizes}
    for c in labels.unique(sorted=True):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        start = 0
        for name, frac in sizes.items():
            n = round(frac * len(idx))
            parts[name].append(idx[start : start + n])
            start += n
    return {name: torch.cat(chunks).sort().values for name, chunks in parts.items()}


def digits_split(
    labels: torch.Tensor, fractions: dict[str, float] | None = None, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Indices of each split of the digits dataset (``DIGIT_FRACTIONS`` unless given).

    The one split rule for digits: the dataset's sources and the teacher-training CLI both take
    their parts from here, so a teacher trained by either never sees the validation images.
    """
    return stratified_split(labels, dict(fractions or DIGIT_FRACTIONS), seed)
