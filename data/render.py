"""One uint8 HWC path that renders a view on the CPU: decode, crop-and-resize, mix.

The builder and the loader both render through these functions, so the teacher labels exactly
the pixels a training step will see. Every kernel is integer arithmetic (libjpeg-turbo's integer
IDCT, OpenCV's bit-exact bilinear resize, fixed-point blends), never a float expression that a
compiler or a SIMD path could round differently, and no step converts to PIL or to a tensor on
the way. Measured per stage in ``python -m bench feed``.
"""

from __future__ import annotations

import cv2
import numpy as np

from common.images import decode_jpeg_hwc


class BadRecipe(ValueError):
    """A stored recipe that cannot be rendered (unknown op, missing image, bad field)."""


def decode_source(data: bytes) -> np.ndarray:
    """A stored source image's JPEG bytes -> uint8 [H, W, 3] (libjpeg-turbo, accurate IDCT)."""
    return decode_jpeg_hwc(data).numpy()


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
    """The ``box`` of ``img`` [H, W, 3] resized to ``size`` x ``size``, in one bilinear pass.

    The crop is a view (no copy); OpenCV's bit-exact bilinear resize (half-pixel centres, as
    torchvision's) reads it directly. Bilinear has no anti-aliasing, so a crop at least twice the
    output is first halved with exact 2x2 averages (never at the presets: a 256-px source gives
    crops of at most 256 px for 224-px views).
    """
    top, left, h, w = check_box(box, img.shape)
    crop = img[top : top + h, left : left + w]
    while min(crop.shape[:2]) >= 2 * size:
        crop = _halve(crop)
    if crop.shape[:2] == (size, size):
        return np.ascontiguousarray(crop)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR_EXACT)


MIX_BITS = 15  # the mix weight's fixed-point precision: 1/32768


def mix(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
    """``weight * a + (1 - weight) * b`` rounded half up, in fixed point (``weight`` in [0, 1])."""
    wq = round(float(weight) * (1 << MIX_BITS))
    acc = a.astype(np.uint32) * wq
    acc += b.astype(np.uint32) * ((1 << MIX_BITS) - wq)
    acc += 1 << (MIX_BITS - 1)
    acc >>= MIX_BITS
    return acc.astype(np.uint8)


def flip(img: np.ndarray) -> np.ndarray:
    """Mirror left-right (a new contiguous array)."""
    return cv2.flip(img, 1)
