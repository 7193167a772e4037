"""Soft labels on disk: one ``.npy`` member per sample, never a pickle.

Full labels are the teacher's fp16 probabilities over all classes. Top-k labels are one array of
k ``(class int32, prob fp16)`` records, probabilities descending. One member per sample matters:
every tar member costs a 512-byte header plus 512-byte blocks (bench/teachers.py).
"""

from __future__ import annotations

import io

import numpy as np
import torch

TOPK_DTYPE = np.dtype([("cls", "<i4"), ("prob", "<f2")])


def encode_npy(arr: np.ndarray) -> bytes:
    """``.npy`` bytes of ``arr``, never a pickle: what every array member of a shard holds
    (soft labels, recipe view records and classes), read back by ``load_npy``."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def encode_soft_label(probs: np.ndarray, indices: np.ndarray | None = None) -> bytes:
    """``.npy`` bytes for full fp16 probabilities, or top-k records when ``indices`` is given."""
    if indices is None:
        arr = np.asarray(probs, dtype=np.float16)
    else:
        arr = np.empty(len(indices), dtype=TOPK_DTYPE)
        arr["cls"], arr["prob"] = indices, probs
    return encode_npy(arr)


def densify_topk(
    cls: np.ndarray, probs: np.ndarray, num_classes: int, renormalize: bool = True
) -> torch.Tensor:
    """Dense fp32 probabilities [num_classes] from top-k (class, probability) pairs, the one
    rule for pixel and recipe sets alike: the other classes get 0 and, by default, the kept mass
    is renormalised to sum to 1 (the dropped tail is not spread over the other classes).
    ``ValueError`` for a class outside [0, num_classes)."""
    out = torch.zeros(num_classes, dtype=torch.float32)
    idx = torch.from_numpy(np.asarray(cls).astype(np.int64))
    if idx.numel() and (idx.max() >= num_classes or idx.min() < 0):
        raise ValueError(f"soft label has class {int(idx.max())} outside [0, {num_classes})")
    out[idx] = torch.from_numpy(np.asarray(probs).astype(np.float32))
    if renormalize and out.sum() > 0:
        out /= out.sum()
    return out


_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], int]] = {}


def load_npy(data: bytes) -> np.ndarray:
    """``np.load`` with the parsed header cached: labels share a handful of headers, and parsing
    one (``ast.literal_eval``) costs more than reading the array."""
    if data[:6] == b"\x93NUMPY" and data[6] == 1:
        end = 10 + int.from_bytes(data[8:10], "little")
        header = data[:end]
        meta = _HEADERS.get(header)
        if meta is None:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
            if not arr.dtype.hasobject and arr.flags.c_contiguous:
                _HEADERS[header] = (arr.dtype, arr.shape, end)
            return arr
        dtype, shape, offset = meta
        return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    return np.load(io.BytesIO(data), allow_pickle=False)


def decode_soft_label(data: bytes, num_classes: int, renormalize_topk: bool = True) -> torch.Tensor:
    """Dense fp32 probabilities [num_classes] from ``encode_soft_label`` bytes.

    Top-k records are scattered into zeros and, by default, renormalised to sum to 1 (the
    dropped tail mass is not spread over the other classes).
    """
    arr = load_npy(data)
    if arr.dtype == TOPK_DTYPE:
        return densify_topk(arr["cls"], arr["prob"], num_classes, renormalize_topk)
    if arr.shape != (num_classes,):
        raise ValueError(f"soft label has shape {arr.shape}, expected ({num_classes},)")
    return torch.from_numpy(arr.astype(np.float32))
