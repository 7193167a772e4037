"""Reading any image file as RGB uint8, or saying exactly why it cannot be used.

Handles what real folders contain: CMYK and palette images, alpha (composited on white),
16-bit PNGs (scaled, not clipped), greyscale, EXIF rotation, and images too large to decode
safely. Everything else (zero-byte, truncated, not an image) raises ``BadImage`` with a reason.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
import simplejpeg
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")
MAX_PIXELS = 100_000_000  # refuse decompression bombs; PIL's own warning starts at 89M


class BadImage(ValueError):
    """An input that cannot be used; ``reason`` is a short category for the build summary."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _open(data: bytes | Path) -> Image.Image:
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(src)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise BadImage("too large", str(e).splitlines()[0]) from e
        except UnidentifiedImageError as e:
            raise BadImage("not an image", str(e).splitlines()[0]) from e
        except (OSError, SyntaxError, ValueError) as e:  # a header cut short or garbled
            raise BadImage("corrupt image", str(e).splitlines()[0] or type(e).__name__) from e
    if img.width * img.height > MAX_PIXELS:
        raise BadImage("too large", f"{img.width}x{img.height} px exceeds {MAX_PIXELS:,} pixels")
    return img


def check_header(path: Path) -> None:
    """Cheap pre-scan: the file exists, is non-empty and has an image header (no full decode)."""
    if path.stat().st_size == 0:
        raise BadImage("empty file", "zero bytes")
    _open(path).close()


def to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> RGB uint8 [H, W, 3]."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale: scale, do not clip
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_rgb(source: bytes | Path, max_side: int | None = None) -> np.ndarray:
    """Decode fully to RGB uint8 [H, W, 3], downscaling so the long side is <= ``max_side``.

    Raises ``BadImage`` for empty, truncated, unreadable or oversized inputs.
    """
    if isinstance(source, Path) and source.stat().st_size == 0:
        raise BadImage("empty file", "zero bytes")
    if isinstance(source, bytes) and not source:
        raise BadImage("empty file", "zero bytes")
    img = _open(source)
    try:
        if max_side and max(img.size) > 2 * max_side and img.format == "JPEG":
            img.draft("RGB", (max_side, max_side))  # decode JPEGs at reduced size directly
        img.load()
    except OSError as e:  # truncated or corrupt data
        raise BadImage("corrupt image", str(e).splitlines()[0]) from e
    rgb = to_rgb(img)
    if max_side and max(rgb.shape[:2]) > max_side:
        h, w = rgb.shape[:2]
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BICUBIC))
    return rgb


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> tuple[bytes, np.ndarray]:
    """JPEG encode and decode: the paper (arXiv 2404.10518 §8) labels the compressed image."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    data = buf.getvalue()
    return data, decode_jpeg(data).permute(1, 2, 0).numpy()


def decode_jpeg_hwc(data: bytes) -> torch.Tensor:
    """JPEG bytes -> uint8 [H, W, 3] (contiguous): see ``decode_jpeg``."""
    try:
        arr = simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:
        with Image.open(io.BytesIO(data)) as img:
            arr = np.array(img.convert("RGB"))
    return torch.from_numpy(arr)


def decode_jpeg(data: bytes) -> torch.Tensor:
    """JPEG bytes -> uint8 [3, H, W]; the one decoder used both when labelling and training.

    simplejpeg decodes with libjpeg-turbo straight into an array (PIL's image-to-array copy goes
    through an encoder), with identical pixels; no benchmark row compares the two decoders.
    ``torchvision.io``'s codecs are deprecated since 0.29. Other formats (PNG in imported
    shards) fall back to PIL.
    """
    return decode_jpeg_hwc(data).permute(2, 0, 1)


def center_view(img: torch.Tensor, size: int, crop_pct: float) -> torch.Tensor:
    """Resize the short side to size / crop_pct, then centre crop ``size`` (evaluation view).

    The one eval crop: shard builds (data/variants.py ``plain``) and teacher validation
    (teachers/train.py) both use it.
    """
    img = TF.resize(img, [max(size, math.floor(size / crop_pct))], antialias=True)
    return TF.center_crop(img, [size, size])
