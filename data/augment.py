"""Primitive augmentation ops on images and batches, shared by every caller.

The variants (data/variants.py) crop with ``random_resized_box``, the training stream
(data/stream.py) with ``random_resized_crop``, and the distillation module (distill/module.py)
mixes batches with ``extreme_mixup``; each draws from its own seeded generator.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF


def to_chw(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1)


def to_hwc(img: torch.Tensor) -> np.ndarray:
    return img.permute(1, 2, 0).contiguous().numpy()


def random_resized_box(
    h: int, w: int, scale: tuple[float, float], rng: random.Random
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop of ``scale`` area and 3/4..4/3 aspect.

    torchvision's ``RandomResizedCrop.get_params`` drawn from ``rng``, so a builder unit and a
    training stream each crop from their own seeded generator.
    """
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(lo, hi))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw
    # no draw fitted (a very long image): the largest centred box of allowed aspect
    ch, cw = h, w
    if w / h < 3 / 4:
        ch = round(w * 4 / 3)
    elif w / h > 4 / 3:
        cw = round(h * 4 / 3)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def random_resized_crop(
    img: torch.Tensor, size: int, scale: tuple[float, float], rng: random.Random
) -> tuple[torch.Tensor, dict]:
    """The Inception crop of ``img`` [C, H, W] resized to ``size``, with its box recorded."""
    top, left, h, w = random_resized_box(img.shape[-2], img.shape[-1], tuple(scale), rng)
    out = TF.resized_crop(img, top, left, h, w, [size, size], antialias=True)
    return out, {"crop": [int(top), int(left), int(h), int(w)]}


def extreme_mixup(
    images: torch.Tensor,
    alpha: float = 1.0,
    partners: torch.Tensor | None = None,
    draw: float | None = None,
) -> tuple[torch.Tensor, float]:
    """Extreme mixup: a ~ Beta(alpha, alpha), a = max(a, 1 - a), ``a * images + (1 - a) * partners``.

    Args:
        images: float [B, C, H, W] (or one image [C, H, W] with ``partners`` given).
        alpha: the Beta parameter (1.0: uniform).
        partners: same shape; default: the batch rolled by 1 (each image's neighbour).
        draw: a Beta draw made by the caller's seeded RNG; default: drawn from torch's RNG.

    Returns:
        The mixed float tensor and the weight a of ``images`` (a >= 0.5).
    """
    a = float(torch.distributions.Beta(alpha, alpha).sample()) if draw is None else float(draw)
    a = max(a, 1.0 - a)
    partners = images.roll(1, dims=0) if partners is None else partners
    return a * images + (1.0 - a) * partners, a
