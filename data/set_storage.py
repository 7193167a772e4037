"""Storage accounting of a sealed set: bytes per view, per source image, and the pixel-set
equivalent, from its shard records; recorded in the manifest and printed by the build summary."""

from __future__ import annotations

import numpy as np

from data.labels import encode_soft_label
from data.recipes import ViewCodec, tar_bytes


def set_storage(records: list[dict], replicas: int, codec: ViewCodec | None) -> dict:
    """Bytes per stored view (and per source image for recipe sets, ``codec`` given), from the
    shard records."""
    total_bytes = sum(int(r.get("bytes", 0)) for r in records)
    if codec is None:
        views = sum(r["samples"] for r in records)
        return {
            "mode": "pixels",
            "replicas": replicas,
            "views": views,
            "bytes_per_view": round(total_bytes / views, 1) if views else None,
        }
    views = sum(r["views"] for r in records)
    images = sum(r["images"] for r in records)
    px_sum = sum(r["pixel_view_bytes"][0] for r in records)
    px_n = sum(r["pixel_view_bytes"][1] for r in records)
    label = 0
    if codec.label == "full":
        label = tar_bytes(len(encode_soft_label(np.zeros(codec.num_classes))))
    elif codec.label == "topk":
        label = tar_bytes(len(encode_soft_label(np.zeros(codec.top_k), np.zeros(codec.top_k))))
    # a pixel set stores per view: the JPEG, the label, the class and a json (~1 block each)
    pixel_view = (tar_bytes(round(px_sum / px_n)) + label + 2 * 1024) if px_n else None
    return {
        "mode": "recipe",
        "replicas": replicas,
        "views": views,
        "source_images": images,
        "bytes_per_view": round(sum(r["views_bytes"] for r in records) / views, 1)
        if views
        else None,
        "bytes_per_source_image": round(sum(r["image_bytes"] for r in records) / images, 1)
        if images
        else None,
        "total_bytes": total_bytes,
        "pixel_equivalent_bytes_per_view": pixel_view,
    }


def _kb(n: float | None) -> str:
    return "?" if n is None else (f"{n / 1024:.1f} KB" if n >= 1024 else f"{n:.0f} B")


def storage_line(name: str, st: dict) -> str:
    """One set's storage figures: per view, per source image, and the pixel-mode equivalent."""
    if st["mode"] == "pixels":
        return f"{name}: pixels, {st['replicas']} replicas, {_kb(st['bytes_per_view'])}/view"
    return (
        f"{name}: recipe, {st['replicas']} replicas, {_kb(st['bytes_per_view'])}/view + "
        f"{_kb(st['bytes_per_source_image'])}/source image "
        f"(pixels: ~{_kb(st['pixel_equivalent_bytes_per_view'])}/view); "
        f"{st['views']} views of {st['source_images']} images in {_kb(st['total_bytes'])}"
    )
