"""RandAugment (Cubuk et al., 2020) with replayable draws and exact integer kernels on uint8 HWC.

The op table, the 31 magnitude bins, which ops take a random sign and the magnitude ranges are
torchvision's ``RandAugment``; the kernels are this module's, written for the loader's hot path:

- geometric ops (shear, translate, rotate) sample the nearest pixel through an integer map that
  is computed once per (op, magnitude, size) and cached, fill 0 (torchvision's default);
- colour ops are lookup tables: one 256-entry table per channel (brightness, contrast,
  posterize, solarize, autocontrast, equalize), or for the blends against a per-pixel image
  (colour: the grey image; sharpness: the 3x3 smoothed image, borders kept, as PIL's
  ``ImageEnhance`` defines them) two fixed-point tables summed (data/render.py ``blend``).

Every table entry is rounded once, in float64 on 256 values, and applied as a lookup, so a view
comes out bit-identical on any CPU. On one core they run several times faster than
torchvision's PIL kernels with their image conversions (``python -m bench feed``).
"""

from __future__ import annotations

import math
import random
from functools import lru_cache

import cv2
import numpy as np

from data.render import BadRecipe, blend

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
    return np.minimum(np.maximum(np.floor(values + 0.5), 0), 255).astype(np.uint8)


@lru_cache(maxsize=256)
def _table(name: str, mag: float, mean: int = 0) -> np.ndarray:
    """The 256-entry table of a per-pixel colour op (contrast: around the grey ``mean``)."""
    if name == "Brightness":
        return _round_u8((1.0 + mag) * _LEVELS)
    if name == "Contrast":
        return _round_u8(mean + (1.0 + mag) * (_LEVELS - mean))
    if name == "Posterize":
        return (np.arange(256) & ((0xFF << (8 - int(mag))) & 0xFF)).astype(np.uint8)
    # Solarize, as PIL's: pixels at or above the threshold inverted
    return np.where(255.0 * mag <= _LEVELS, 255 - _LEVELS, _LEVELS).astype(np.uint8)


# -- geometric ops ----------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _source_map(name: str, mag: float, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 [H, W] x and y of each output pixel's source pixel: whole numbers, so OpenCV's
    nearest lookup reads them exactly (-1 or past the edge: the fill)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5  # output pixel centres
    if name == "ShearX":  # about the top-left corner, as torchvision's RandAugment
        sx, sy = xs + mag * ys, ys
    elif name == "ShearY":
        sx, sy = xs, ys + mag * xs
    else:  # Rotate: counter-clockwise by mag degrees about the image centre
        theta = math.radians(mag)
        cos, sin = math.cos(theta), math.sin(theta)
        dx, dy = xs - w / 2, ys - h / 2
        sx = cos * dx - sin * dy + w / 2
        sy = sin * dx + cos * dy + h / 2
    edge = max(h, w)
    return (
        np.clip(np.floor(sx), -1, edge).astype(np.float32),
        np.clip(np.floor(sy), -1, edge).astype(np.float32),
    )


def _translate(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``img`` moved by whole pixels (``out[y, x] = img[y - dy, x - dx]``), fill 0."""
    h, w = img.shape[:2]
    out = np.zeros_like(img)
    if abs(dx) < w and abs(dy) < h:
        out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
            max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
        ]
    return out


def _geometric(img: np.ndarray, name: str, mag: float) -> np.ndarray:
    if name == "TranslateX":
        return _translate(img, int(mag), 0)
    if name == "TranslateY":
        return _translate(img, 0, int(mag))
    h, w = img.shape[:2]
    map_x, map_y = _source_map(name, mag, h, w)
    return cv2.remap(
        img, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )


# -- colour ops -------------------------------------------------------------------------------
def _gray(img: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, integer fixed point (OpenCV), [H, W] uint8."""
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def _smooth(img: np.ndarray) -> np.ndarray:
    """PIL's SMOOTH filter (3x3, centre weight 5, sum 13, rounded), border pixels kept.

    An integer 3x3 sum plus 4x the centre, then one scaling by 1/13: a whole number over 13 is
    never within float error of a half, so every CPU rounds it the same way.
    """
    total = cv2.boxFilter(img, cv2.CV_16U, (3, 3), normalize=False, borderType=cv2.BORDER_REPLICATE)
    total += img.astype(np.uint16) << 2
    out = cv2.convertScaleAbs(total, alpha=1.0 / 13)
    out[0], out[-1], out[:, 0], out[:, -1] = img[0], img[-1], img[:, 0], img[:, -1]
    return out


def _histograms(img: np.ndarray) -> np.ndarray:
    """[channels, 256] histograms (exact counts)."""
    return np.stack(
        [cv2.calcHist([img], [c], None, [256], [0, 256]).reshape(-1) for c in range(img.shape[2])]
    ).astype(np.int64)


def _autocontrast_luts(hist: np.ndarray) -> np.ndarray:
    """PIL's ``ImageOps.autocontrast`` (no cutoff) per channel: [channels, 256] uint8, each
    channel's darkest level to 0 and brightest to 255, rounded half up."""
    used = hist > 0
    lo = used.argmax(axis=1)[:, None]
    hi = 255 - used[:, ::-1].argmax(axis=1)[:, None]
    span = np.maximum(hi - lo, 1)
    out = ((np.arange(256) - lo) * 510 + span) // (2 * span)
    out = np.where(hi > lo, out, np.arange(256))
    return np.minimum(np.maximum(out, 0), 255).astype(np.uint8)


def _equalize_luts(hist: np.ndarray) -> np.ndarray:
    """PIL's ``ImageOps.equalize`` per channel: [channels, 256] uint8 (integer arithmetic)."""
    luts = []
    for h in hist:
        used = h[h > 0]
        step = (int(used.sum()) - int(used[-1])) // 255 if len(used) > 1 else 0
        if step == 0:
            luts.append(np.arange(256))
            continue
        before = np.concatenate([[0], np.cumsum(h)[:-1]])
        luts.append(np.minimum((step // 2 + before) // step, 255))
    return np.stack(luts).astype(np.uint8)


def _colour(img: np.ndarray, name: str, mag: float) -> np.ndarray:
    if name in ("Brightness", "Posterize", "Solarize"):
        return cv2.LUT(img, _table(name, mag))
    if name == "Contrast":
        mean = math.floor(float(_gray(img).mean()) + 0.5)
        return cv2.LUT(img, _table(name, mag, mean))
    if name == "Color":
        return blend(img, cv2.cvtColor(_gray(img), cv2.COLOR_GRAY2RGB), 1.0 + mag)
    if name == "Sharpness":
        return blend(img, _smooth(img), 1.0 + mag)
    luts = (_autocontrast_luts if name == "AutoContrast" else _equalize_luts)(_histograms(img))
    return cv2.LUT(img, np.ascontiguousarray(luts.T).reshape(256, 1, img.shape[2]))


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
