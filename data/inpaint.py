"""Inpainted variants: random masks (rectangles and free-form strokes) filled by an inpainter.

The default backend is OpenCV's ``cv2.inpaint`` (Telea or Navier-Stokes). Any callable
``(rgb [H, W, 3] uint8, mask [H, W] uint8) -> rgb`` can be plugged in instead, e.g. a
generative model, through the variant config's ``inpainter`` (Hydra ``_target_``).
"""

from __future__ import annotations

import math
from typing import Protocol

import cv2
import numpy as np


class Inpainter(Protocol):
    def __call__(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray: ...


class OpenCVInpainter:
    """``cv2.inpaint`` with ``method`` ``"telea"`` (default) or ``"ns"`` (Navier-Stokes)."""

    def __init__(self, method: str = "telea", radius: float = 3.0) -> None:
        flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
        if method not in flags:
            raise ValueError(f"inpaint method must be 'telea' or 'ns', got {method!r}")
        self.flag, self.radius = flags[method], radius

    def __call__(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return cv2.inpaint(np.ascontiguousarray(rgb), mask, self.radius, self.flag)


def random_mask(
    h: int,
    w: int,
    rng: np.random.Generator,
    area: tuple[float, float] = (0.05, 0.25),
    kinds: tuple[str, ...] = ("rect", "stroke"),
) -> tuple[np.ndarray, dict]:
    """A uint8 mask (255 = fill) covering a random fraction of the image within ``area``.

    Rectangles and free-form strokes (random walks drawn with round caps) are added until the
    target fraction is reached. Returns the mask and its parameters for the sample's json.
    """
    target = rng.uniform(*area)
    mask = np.zeros((h, w), np.uint8)
    shapes: list[dict] = []
    for _ in range(64):
        if (mask > 0).mean() >= target:
            break
        kind = kinds[rng.integers(len(kinds))]
        if kind == "rect":
            side = math.sqrt(target * h * w) * rng.uniform(0.4, 1.0)
            rh = int(np.clip(side * rng.uniform(0.5, 2.0), 2, h))
            rw = int(np.clip(side * side / max(rh, 1), 2, w))
            y, x = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
            mask[y : y + rh, x : x + rw] = 255
            shapes.append({"rect": [x, y, rw, rh]})
        else:
            width = max(1, int(min(h, w) * rng.uniform(0.03, 0.1)))
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h)))]
            for _ in range(int(rng.integers(3, 8))):
                angle, step = rng.uniform(0, 2 * math.pi), rng.uniform(0.1, 0.3) * min(h, w)
                x, y = pts[-1]
                pts.append(
                    (
                        int(np.clip(x + step * math.cos(angle), 0, w - 1)),
                        int(np.clip(y + step * math.sin(angle), 0, h - 1)),
                    )
                )
            cv2.polylines(mask, [np.array(pts, np.int32)], False, 255, width, cv2.LINE_AA)
            mask = np.where(mask > 0, 255, 0).astype(np.uint8)
            shapes.append({"stroke": pts, "width": width})
    return mask, {
        "target_area": round(float(target), 4),
        "area": round(float((mask > 0).mean()), 4),
        "shapes": shapes,
    }
