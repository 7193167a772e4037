"""RandAugment (Cubuk et al., 2020) with replayable draws and exact integer kernels on uint8 HWC.

The op table, the 31 magnitude bins, which ops take a random sign and the magnitude ranges are
torchvision's ``RandAugment``; the kernels are this module's, written for the loader's hot path:

- geometric ops (shear, translate, rotate) sample the nearest pixel through an integer map that
  is computed once per (op, magnitude, size) and cached, fill 0 (torchvision's default);
- colour ops are lookup tables: one 256-entry table per channel (brightness, contrast,
  posterize, solarize, autocontrast, equalize) or one 256 x 256 table of (pixel, degenerate
  pixel) for the blends against a per-pixel image (colour: the grey image; sharpness: the
  3x3 smoothed image, borders kept, as PIL's ``ImageEnhance`` defines them).

Every table entry is rounded once, in float64 on at most 65,536 values, and applied as a lookup,
so a view comes out bit-identical on any CPU. On one core they run several times faster than
torchvision's PIL kernels with their image conversions (``python -m bench feed``).
"""

from __future__ import annotations

import math
import random
from functools import lru_cache

import cv2
import numpy as np

from data.render import BadRecipe

OPS: tuple[str, ...] = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)
SIGNED = frozenset(
    ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
    + ("Brightness", "Color", "Contrast", "Sharpness")
)
BINS = 31
_LEVELS = np.arange(256, dtype=np.float64)


def magnitude(name: str, signed_bin: int, height: int, width: int) -> float:
    """The op's magnitude at ``signed_bin`` of ``BINS`` (torchvision's ranges; sign applied)."""
    t = abs(signed_bin) / (BINS - 1)
    value = {
        "ShearX": 0.3 * t,
        "ShearY": 0.3 * t,
        "TranslateX": 150.0 / 331.0 * width * t,
        "TranslateY": 150.0 / 331.0 * height * t,
        "Rotate": 30.0 * t,
        "Brightness": 0.9 * t,
        "Color": 0.9 * t,
        "Contrast": 0.9 * t,
        "Sharpness": 0.9 * t,
        "Posterize": float(round(8 - abs(signed_bin) / ((BINS - 1) / 4))),
        "Solarize": 1.0 - t,
    }.get(name, 0.0)
    return -value if name in SIGNED and signed_bin < 0 else value


def _round_u8(values: np.ndarray) -> np.ndarray:
    """Round half up and saturate to uint8."""
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


# -- geometric ops ----------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _source_map(name: str, mag: float, h: int, w: int) -> np.ndarray:
    """[H, W, 2] int16 (x, y) source pixel of each output pixel (outside: the fill)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5  # output pixel centres
    if name == "ShearX":  # about the top-left corner, as torchvision's RandAugment
        sx, sy = xs + mag * ys, ys
    elif name == "ShearY":
        sx, sy = xs, ys + mag * xs
    elif name == "TranslateX":
        sx, sy = xs - int(mag), ys
    elif name == "TranslateY":
        sx, sy = xs, ys - int(mag)
    else:  # Rotate: counter-clockwise by mag degrees about the image centre
        theta = math.radians(mag)
        cos, sin = math.cos(theta), math.sin(theta)
        dx, dy = xs - w / 2, ys - h / 2
        sx = cos * dx - sin * dy + w / 2
        sy = sin * dx + cos * dy + h / 2
    out = np.stack([np.floor(sx), np.floor(sy)], axis=-1)
    return np.clip(out, -1, max(h, w)).astype(np.int16)


def _geometric(img: np.ndarray, name: str, mag: float) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.remap(
        img,
        _source_map(name, mag, h, w),
        None,
        cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


# -- colour ops -------------------------------------------------------------------------------
BLEND_BITS = 6  # fixed point of the blend tables: int16 holds 255 * 1.9 * 64


@lru_cache(maxsize=64)
def _blend_tables(factor: float) -> tuple[np.ndarray, np.ndarray]:
    """int16 tables of ``factor * x`` and ``(1 - factor) * d`` in fixed point."""
    scale = float(1 << BLEND_BITS)
    a = np.floor(factor * _LEVELS * scale + 0.5).astype(np.int16)
    b = np.floor((1.0 - factor) * _LEVELS * scale + 0.5).astype(np.int16)
    return a, b


def _blend(img: np.ndarray, degenerate: np.ndarray, factor: float) -> np.ndarray:
    """PIL's ``ImageEnhance`` blend ``degenerate + factor * (img - degenerate)`` per pixel, as
    two table lookups and an integer sum (``degenerate``: [H, W, 3], or [H, W] for all channels).
    """
    a, b = _blend_tables(factor)
    acc = cv2.LUT(img, a)
    d = cv2.LUT(degenerate, b)
    acc += d if d.ndim == 3 else d[..., None]
    acc += 1 << (BLEND_BITS - 1)
    acc >>= BLEND_BITS
    return np.clip(acc, 0, 255).astype(np.uint8)


def _gray(img: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, integer fixed point (OpenCV), [H, W] uint8."""
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13


def _smooth(img: np.ndarray) -> np.ndarray:
    """PIL's SMOOTH filter (3x3, centre weight 5, sum 13, rounded), border pixels kept.

    The float kernel rounds exactly: a sum of integers over 13 is never within float error of a
    half, so every CPU rounds it the same way.
    """
    out = cv2.filter2D(img, -1, _SMOOTH, borderType=cv2.BORDER_REPLICATE)
    out[0], out[-1], out[:, 0], out[:, -1] = img[0], img[-1], img[:, 0], img[:, -1]
    return out


def _histograms(img: np.ndarray) -> list[np.ndarray]:
    """Per-channel 256-bin histograms (exact counts)."""
    return [
        cv2.calcHist([img], [c], None, [256], [0, 256]).reshape(-1).astype(np.int64)
        for c in range(img.shape[2])
    ]


def _per_channel(img: np.ndarray, luts: list[np.ndarray]) -> np.ndarray:
    return cv2.LUT(img, np.stack(luts, axis=-1).reshape(256, 1, 3))


def _autocontrast_lut(hist: np.ndarray) -> np.ndarray:
    used = np.flatnonzero(hist)
    lo, hi = int(used[0]), int(used[-1])
    if hi <= lo:
        return np.arange(256, dtype=np.uint8)
    span = hi - lo
    i = np.arange(256, dtype=np.int64)
    return np.clip(((i - lo) * 510 + span) // (2 * span), 0, 255).astype(np.uint8)


def _equalize_lut(hist: np.ndarray) -> np.ndarray:
    """PIL's ``ImageOps.equalize`` table for one channel (integer arithmetic)."""
    used = hist[hist > 0]
    step = (int(used.sum()) - int(used[-1])) // 255 if len(used) > 1 else 0
    if step == 0:
        return np.arange(256, dtype=np.uint8)
    before = np.concatenate([[0], np.cumsum(hist)[:-1]])
    return np.clip((step // 2 + before) // step, 0, 255).astype(np.uint8)


def _colour(img: np.ndarray, name: str, mag: float) -> np.ndarray:
    if name == "Brightness":
        return cv2.LUT(img, _round_u8((1.0 + mag) * _LEVELS))
    if name == "Contrast":
        mean = math.floor(float(_gray(img).mean()) + 0.5)
        return cv2.LUT(img, _round_u8(mean + (1.0 + mag) * (_LEVELS - mean)))
    if name == "Color":
        return _blend(img, _gray(img), 1.0 + mag)
    if name == "Sharpness":
        return _blend(img, _smooth(img), 1.0 + mag)
    if name == "Posterize":
        keep = (0xFF << (8 - int(mag))) & 0xFF
        return cv2.LUT(img, (np.arange(256) & keep).astype(np.uint8))
    if name == "Solarize":
        inverted = 255.0 * mag <= _LEVELS  # PIL's solarize: pixels at or above the threshold
        return cv2.LUT(img, np.where(inverted, 255 - _LEVELS, _LEVELS).astype(np.uint8))
    lut = _autocontrast_lut if name == "AutoContrast" else _equalize_lut  # else: Equalize
    return _per_channel(img, [lut(h) for h in _histograms(img)])


GEOMETRIC = frozenset(("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"))


def apply_op(img: np.ndarray, name: str, signed_bin: int) -> np.ndarray:
    """One op at ``signed_bin`` on ``img`` uint8 [H, W, 3] (a new array; Identity: ``img``)."""
    if name == "Identity":
        return img
    mag = magnitude(name, signed_bin, img.shape[0], img.shape[1])
    return _geometric(img, name, mag) if name in GEOMETRIC else _colour(img, name, mag)


class RandAugment:
    """``num_ops`` ops at ``magnitude`` drawn from a seeded ``random.Random`` and replayed.

    ``draw`` records each choice as (op index into ``OPS``, signed magnitude bin); ``apply``
    replays a record. ``OPS`` is recorded in recipe manifests, so a set built with another table
    is refused rather than rendered with the wrong ops.
    """

    OPS = OPS

    def __init__(self, num_ops: int = 2, magnitude: int = 9) -> None:
        if not 0 <= magnitude < BINS:
            raise ValueError(f"RandAugment magnitude must be in [0, {BINS}), got {magnitude}")
        self.num_ops, self.magnitude = int(num_ops), int(magnitude)

    def draw(self, rng: random.Random) -> list[list[int]]:
        ops = []
        for _ in range(self.num_ops):
            op = rng.randrange(len(OPS))
            sign = -1 if OPS[op] in SIGNED and rng.random() < 0.5 else 1
            ops.append([op, sign * self.magnitude])
        return ops

    def apply(self, img: np.ndarray, ops: list[list[int]]) -> np.ndarray:
        """``img`` uint8 [H, W, 3] through the ops; ``BadRecipe`` for an op or bin out of range."""
        for op, signed_bin in ops:
            op, signed_bin = int(op), int(signed_bin)
            if not 0 <= op < len(OPS):
                raise BadRecipe(f"RandAugment op {op} unknown (the table has {len(OPS)})")
            if abs(signed_bin) >= BINS:
                raise BadRecipe(f"RandAugment magnitude bin {signed_bin} out of range")
            img = apply_op(img, OPS[op], signed_bin)
        return img
