"""Writing a pixel set's shard: every view rendered, JPEG'd, labelled and stored whole.

Views are made in DataLoader workers (augment, then the JPEG round trip); the teacher labels the
decoded JPEG, the pixels a loader will read. Inputs that fail are skipped with their reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from torch.utils.data import DataLoader, Dataset

from common.images import BadImage, jpeg_round_trip
from data.augment import to_chw
from data.labels import encode_soft_label
from data.sources import Source
from data.variants import Unit, Variant


class UnitImages(Dataset):
    """Makes the units of one shard in DataLoader workers: augment, then JPEG round trip."""

    def __init__(self, variant: Variant, source: Source, units: list[Unit], quality: int) -> None:
        self.variant, self.source, self.units, self.quality = variant, source, units, quality
        self.max_side = variant.cfg.source_side

    def __len__(self) -> int:
        return len(self.units)

    def _load(self, item):
        return self.source.load(item, self.max_side)

    def __getitem__(self, k: int) -> dict:
        unit = self.units[k]
        try:
            rgb, params = self.variant.make(unit, self._load)
            data, decoded = jpeg_round_trip(rgb, self.quality)
        except BadImage as e:
            return {"unit": k, "ref": unit.item.ref, "reason": str(e)}
        except Exception as e:  # an input that breaks an augmentation: skip it, say why
            return {"unit": k, "ref": unit.item.ref, "reason": f"error: {type(e).__name__}: {e}"}
        return {"unit": k, "jpg": data, "image": to_chw(decoded), "params": params}


def _collate(batch: list[dict]) -> list[dict]:
    return batch


def pixel_sample(unit: Unit, made: dict, variant: Variant, probs, indices) -> dict:
    """The tar sample of one view: its JPEG, class, soft label and a json of how it was made."""
    meta = {
        "key": unit.item.key,
        "ref": unit.item.ref,
        "variant": variant.name,
        "kind": variant.kind,
        "replica": unit.replica,
        "label": unit.label,
        "params": made["params"],
    }
    sample = {"__key__": unit.key, "jpg": made["jpg"]}
    if unit.label is not None:
        sample["cls"] = str(unit.label).encode()
    if probs is not None:
        sample["soft.npy"] = encode_soft_label(probs, indices)
        top = int(indices[0]) if indices is not None else int(probs.argmax())
        meta["teacher_top1"] = [top, float(probs.max())]
    sample["json"] = json.dumps(meta, default=str).encode()
    return sample


def render_pixel_shard(
    variant: Variant,
    source: Source,
    units: list[Unit],
    quality: int,
    batch_size: int,
    num_workers: int,
    label: Callable,
    bar,
) -> tuple[list[dict], dict, int, int, float]:
    """(samples, shard record, images written, views written, teacher seconds) of ``units``;
    ``label`` maps a batch of images to (probs, indices, seconds)."""
    loader = DataLoader(
        UnitImages(variant, source, units, quality),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    samples, skipped, teacher_s = [], [], 0.0
    for made in loader:
        good = [m for m in made if "jpg" in m]
        for m in made:
            if "jpg" not in m:
                skipped.append((m["ref"], m["reason"]))
        if good:
            probs, indices, secs = label([m["image"] for m in good])
            teacher_s += secs
            for m, p, i in zip(good, probs, indices, strict=True):
                samples.append(pixel_sample(units[m["unit"]], m, variant, p, i))
        bar.update(len(made))
    return samples, {"skipped": skipped}, len(samples), len(samples), teacher_s
