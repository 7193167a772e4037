"""Decoding a batch of JPEGs on the training device (``data.decode=gpu``).

With ``decode=gpu`` the loader workers do no pixel work: they read tar members, check that each
image is a whole JPEG (``jpeg_problem``) and pass the bytes on, packed into one uint8 tensor with
offsets (``pack_jpegs``; one tensor crosses the worker queue instead of one per image). The
main process decodes the whole batch in one call on the training device, nvJPEG on CUDA
(``decode_jpegs``), then applies the flips the workers drew. A JPEG the decoder rejects, or one
of another size than the batch's, is dropped and counted as a skip naming its shard and key:
the batch shrinks, the epoch goes on, every rank still takes the same number of steps.

The decoder is TorchCodec's ``decode_jpeg`` (torchvision's image codecs are deprecated since
0.29 in its favour) and torchvision's where TorchCodec cannot load, as on machines with another
torch build; both batch nvJPEG on CUDA and decode with libjpeg-turbo on the CPU.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from functools import cache, partial

import torch

log = logging.getLogger(__name__)

JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
PACKED_KEYS = ("jpeg_data", "jpeg_offsets", "jpeg_flip")


def jpeg_problem(data: bytes) -> str | None:
    """Why ``data`` cannot be a whole JPEG (cheap marker checks, no decode), or ``None``."""
    if len(data) < 4:
        return f"not a JPEG: {len(data)} bytes"
    if not data.startswith(JPEG_SOI):
        kind = "PNG" if data.startswith(b"\x89PNG") else f"starts with {data[:4].hex()}"
        return f"not a JPEG ({kind}): data.decode=gpu needs JPEG shards"
    if JPEG_EOI not in data[-16:]:  # encoders may pad a few bytes after the end marker
        return "truncated JPEG: no end-of-image marker"
    return None


def pack_jpegs(blobs: Sequence[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated bytes (uint8) and offsets (int64, ``len(blobs) + 1``) of ``blobs``."""
    sizes = torch.tensor([0, *map(len, blobs)], dtype=torch.int64)
    offsets = sizes.cumsum(0)
    data = torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8)
    return data, offsets


def unpack_jpegs(data: torch.Tensor, offsets: torch.Tensor) -> list[torch.Tensor]:
    """The per-image byte tensors of a packed batch (views, no copy)."""
    ends = offsets.tolist()
    return [data[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]


@cache
def jpeg_decoder() -> tuple[str, Callable]:
    """(name, ``decode(jpegs, device)`` to RGB): TorchCodec's, or torchvision's where TorchCodec
    cannot load."""
    try:
        from torchcodec.decoders import decode_jpeg as codec_decode

        return "torchcodec", partial(codec_decode, mode="RGB")
    except (ImportError, OSError, RuntimeError) as e:  # missing, or built for another torch
        log.info("TorchCodec unavailable (%s); decoding JPEGs with torchvision.io", e)
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as vision_decode

    def torchvision_decode(data, device):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # deprecated for TorchCodec
            return vision_decode(data, mode=ImageReadMode.RGB, device=device)

    return "torchvision", torchvision_decode


def _decode_each(blobs: list[torch.Tensor], device: torch.device) -> list:
    """One at a time, after a batch call failed: each image's tensor or its error text."""
    decode = jpeg_decoder()[1]
    out: list = []
    for blob in blobs:
        try:
            out.append(decode(blob, device=device))
        except RuntimeError as e:
            out.append(f"{type(e).__name__}: {str(e).splitlines()[-1][:160]}")
    return out


def decode_jpegs(
    blobs: list[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor | None, list[int], dict[int, str]]:
    """Decode ``blobs`` (CPU uint8 tensors) on ``device`` to RGB uint8 [N, 3, H, W].

    Returns the stacked images, the indices of ``blobs`` they came from, and the reason for
    each one left out: rejected by the decoder, or of another size than the batch's most common
    one (the offline sets hold views of one size; a stray one cannot be stacked). ``None``
    when nothing decoded.
    """
    if not blobs:
        return None, [], {}
    decode = jpeg_decoder()[1]
    try:
        decoded: list = list(decode(blobs, device=device))
    except RuntimeError:  # one bad image fails the whole batched call: find which
        decoded = _decode_each(blobs, device)
    bad = {i: d for i, d in enumerate(decoded) if isinstance(d, str)}
    shapes = [tuple(d.shape) for d in decoded if not isinstance(d, str)]
    if not shapes:
        return None, [], bad
    shape = max(set(shapes), key=shapes.count)
    for i, d in enumerate(decoded):
        if i not in bad and tuple(d.shape) != shape:
            bad[i] = f"image is {tuple(d.shape[1:])}, the batch's are {shape[1:]}"
    kept = [i for i in range(len(decoded)) if i not in bad]
    return torch.stack([decoded[i] for i in kept]), kept, bad


def _take(value, kept: list[int], n: int):
    """Rows ``kept`` of a per-sample batch entry (tensor or list of length ``n``)."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
        return value[torch.tensor(kept, dtype=torch.long, device=value.device)]
    if isinstance(value, list) and len(value) == n:
        return [value[i] for i in kept]
    return value


def decode_batch(batch: dict, device: torch.device) -> dict:
    """A collated batch with packed JPEGs (``PACKED_KEYS``) -> one with ``image`` on ``device``.

    Samples the workers already decoded (recipe views, rendered on the CPU) come first in the
    batch as ``image``; the packed JPEGs are the rest. Flips are applied after decoding;
    rejected images are dropped from every per-sample entry and added to ``skipped``.
    """
    if "jpeg_data" not in batch:
        return batch
    data, offsets, flip = (batch.pop(k) for k in PACKED_KEYS)
    blobs = unpack_jpegs(data, offsets)
    images, kept, bad = decode_jpegs(blobs, device)
    ready = batch.pop("image", None)
    n_ready = 0 if ready is None else ready.shape[0]
    n = n_ready + len(blobs)
    if images is not None and flip.any():
        rows = flip[kept].to(images.device)
        images = torch.where(rows[:, None, None, None], images.flip(-1), images)
    parts = [p.to(device) for p in (ready, images) if p is not None and p.shape[0]]
    if not parts:
        raise ValueError(
            f"no image of this batch decoded: {[batch['key'][n_ready + i] for i in bad][:5]}"
        )
    if bad:
        keep = [*range(n_ready), *(n_ready + i for i in kept)]
        urls, keys = batch["url"], batch["key"]
        skipped = [(f"{urls[n_ready + i]}:{keys[n_ready + i]}", r) for i, r in bad.items()]
        batch = {k: _take(v, keep, n) for k, v in batch.items() if k != "skipped"} | {
            "skipped": [*batch.get("skipped", []), *skipped]
        }
    batch["image"] = torch.cat(parts) if len(parts) > 1 else parts[0]
    return batch
