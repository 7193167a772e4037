"""What input a teacher expects, and turning any image batch into exactly that input.

A teacher's preprocessing travels with it (input size, mean/std, interpolation, crop_pct), taken
from timm's pretrained config where one exists. Images enter as RGB in [0, 1] (or uint8) at any
size: the student's crop is resized to the teacher's own resolution and normalised with the
teacher's own statistics: one crop, two resizes (Beyer et al.'s 384/224 trick, arXiv 2106.05237).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.images import EVAL_CROP_PCT
from common.norm import IMAGENET_MEAN, IMAGENET_STD, normalize, to_unit

_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


@dataclass(frozen=True)
class Preprocessing:
    """The input contract of a model: ``input_size`` px square, normalised by ``mean``/``std``."""

    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = EVAL_CROP_PCT

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}"
            )
        if self.input_size < 1:
            raise ValueError(f"input_size must be positive, got {self.input_size}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(
            input_size=int(d["input_size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            interpolation=d.get("interpolation", "bicubic"),
            crop_pct=float(d.get("crop_pct", EVAL_CROP_PCT)),
        )

    @classmethod
    def from_timm(cls, model: nn.Module, input_size: int | None = None) -> Preprocessing:
        """From a timm model's pretrained config, at its test-time size where it has one."""
        from timm.data import resolve_data_config

        cfg = resolve_data_config(model=model, use_test_size=True)
        interpolation = cfg.get("interpolation", "bicubic")
        return cls(
            input_size=input_size or int(cfg["input_size"][-1]),
            mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]),
            interpolation=interpolation if interpolation in _INTERPOLATIONS else "bicubic",
            crop_pct=float(cfg.get("crop_pct", EVAL_CROP_PCT)),
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """RGB [B, 3, H, W] in [0, 1] (or uint8) -> the model's normalised input."""
        return to_model_input(images, self)


def to_model_input(images: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """Resize a batch of crops to ``prep.input_size`` and normalise with ``prep``'s mean/std."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images [B, 3, H, W], got shape {tuple(images.shape)}")
    x = to_unit(images)
    if x.shape[-2:] != (prep.input_size, prep.input_size):
        antialias = prep.interpolation != "nearest" and x.shape[-1] > prep.input_size
        x = F.interpolate(
            x,
            size=(prep.input_size, prep.input_size),
            mode=prep.interpolation,
            align_corners=False if prep.interpolation != "nearest" else None,
            antialias=antialias,
        )
    return normalize(x, prep.mean, prep.std)


def from_normalized(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo a normalisation: a student batch normalised with ``mean``/``std`` back to [0, 1]."""
    m = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return x * s + m
