"""One uint8 HWC path that renders a view on the CPU: decode, crop-and-resize, mix.

The builder and the loader both render through these functions, so the teacher labels exactly
the pixels a training step will see. Every kernel is integer arithmetic, or float arithmetic
whose every step is exact (libjpeg-turbo's integer IDCT, OpenCV's bit-exact bilinear resize,
table lookups and fixed-point integer sums), never an expression a compiler or a SIMD path
could round differently, and no step converts to PIL or to a tensor on the way. Sources are
decoded to RGBA (libjpeg-turbo's fastest output, the same RGB values) because OpenCV's bit-exact
resize runs about 1.7x faster on 4 channels than on 3; a view comes out RGB. Measured per stage
in ``python -m bench feed``.
"""

from __future__ import annotations

import cv2
import numpy as np
import simplejpeg

from common.images import decode_jpeg_hwc


class BadRecipe(ValueError):
    """A stored recipe that cannot be rendered (unknown op, missing image, bad field)."""


def decode_source(data: bytes) -> np.ndarray:
    """A stored source image's JPEG bytes -> uint8 [H, W, 4] RGBA (libjpeg-turbo, accurate IDCT;
    alpha 255). Not a JPEG (a hand-made set): decoded by PIL."""
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGBA")
    except ValueError:
        return cv2.cvtColor(decode_jpeg_hwc(data).numpy(), cv2.COLOR_RGB2RGBA)


def check_box(box, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """``box`` (top, left, height, width) as ints, or ``BadRecipe`` when it leaves the image."""
    top, left, h, w = (int(v) for v in box)
    if h <= 0 or w <= 0 or top < 0 or left < 0 or top + h > shape[0] or left + w > shape[1]:
        raise BadRecipe(f"crop box {[top, left, h, w]} outside the {tuple(shape[:2])} image")
    return top, left, h, w


def _halve(img: np.ndarray) -> np.ndarray:
    """2x2 box average with round-half-up (odd last row/column dropped): exact integer."""
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    blocks = img[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).astype(np.uint16)
    return ((blocks.sum(axis=(1, 3)) + 2) >> 2).astype(np.uint8)


def crop_resize(img: np.ndarray, box, size: int) -> np.ndarray:
    """The ``box`` of ``img`` [H, W, 3 or 4] resized to ``size`` x ``size``, RGB [size, size, 3].

    The crop is a view (no copy); OpenCV's bit-exact bilinear resize (half-pixel centres, as
    torchvision's) reads it directly. Bilinear has no anti-aliasing, so a crop at least twice the
    output is first halved with exact 2x2 averages (never at the presets: a 256-px source gives
    crops of at most 256 px for 224-px views).
    """
    top, left, h, w = check_box(box, img.shape)
    crop = img[top : top + h, left : left + w]
    while min(crop.shape[:2]) >= 2 * size:
        crop = _halve(crop)
    if crop.shape[:2] != (size, size):
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR_EXACT)
    if crop.shape[2] == 4:
        return cv2.cvtColor(crop, cv2.COLOR_RGBA2RGB)
    return np.ascontiguousarray(crop)


def blend(img: np.ndarray, other: np.ndarray, factor: float) -> np.ndarray:
    """``factor * img + (1 - factor) * other`` per pixel as ``img + (factor - 1) * (img - other)``
    in int16 fixed point (1/128 steps of ``factor - 1``, rounded half up), saturated to uint8;
    ``|factor - 1| <= 0.9``."""
    step = round((factor - 1.0) * 128)
    if abs(step) > 115:  # 255 * 115 is the most an int16 product may hold here
        raise ValueError(f"blend factor {factor} outside [0.1, 1.9]")
    acc = img.astype(np.int16)
    acc -= other
    acc *= step
    acc += 64
    acc >>= 7
    acc += img
    return np.clip(acc, 0, 255, out=acc).astype(np.uint8)


def mix(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
    """Extreme mixup's ``weight * a + (1 - weight) * b`` of two uint8 views, in uint16 fixed point
    (``weight`` in 1/256 steps, rounded half up)."""
    wq = round(float(weight) * 256)
    if not 0 <= wq <= 256:
        raise ValueError(f"mix weight {weight} outside [0, 1]")
    acc = a.astype(np.uint16)
    acc *= wq
    other = b.astype(np.uint16)
    other *= 256 - wq
    acc += other
    acc += 128
    acc >>= 8
    return acc.astype(np.uint8)


def flip(img: np.ndarray) -> np.ndarray:
    """Mirror left-right (a new contiguous array)."""
    return cv2.flip(img, 1)
