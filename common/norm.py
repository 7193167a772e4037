"""Input normalisation: ImageNet constants (RGB in [0, 1]), the default of teachers and students,
and the one path from stored uint8 pixels to a model's normalised input."""

from __future__ import annotations

from collections.abc import Sequence

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels [0, 255] -> float32 [0, 1]; float input is taken as already in [0, 1]."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def normalize(
    x: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """``(x - mean) / std`` per channel of [B, C, H, W] floats in [0, 1]."""
    m = torch.as_tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def normalized_input(
    images: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """uint8 (or [0, 1] float) images [B, C, H, W] -> the normalised model input, unresized."""
    return normalize(to_unit(images), mean, std)
