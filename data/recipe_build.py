"""Building a recipe set: store each source image once, render its views, keep only records.

Per group of source images (data/recipes.py): load each image, shrink its short side to
``raw_size``, JPEG it once (the stored bytes) and decode it again with the loader's decoder (the
pixels every view is rendered from, in the builder and in the loader alike). Views are rendered
in DataLoader workers in chunks of about one teacher batch, so 1000 replicas never sit in memory
at once; the teacher labels exactly those uint8 views and only the records are written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF

from common.images import BadImage, jpeg_round_trip
from data.augment import to_chw
from data.labels import encode_npy
from data.recipes import (
    CLASSES,
    VIEWS,
    ViewCodec,
    image_member,
    pixel_hash,
    sample_json,
    tar_bytes,
)
from data.render import decode_source
from data.sources import Item, Source
from data.variants import ExtraVariant, Variant, shuffled_order

if TYPE_CHECKING:  # DataLoader workers import this module: no teacher code there
    from teachers import FrozenTeacher


@dataclass
class Group:
    """Source images stored in one tar sample: ``pack`` of them (mixup: one partner group). ``copies`` and ``pseudo_classes`` are per image (the extra set's selection)."""

    key: str
    items: list[Item]
    copies: list[int] = field(default_factory=list)
    pseudo_classes: list[int | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.copies = self.copies or [0] * len(self.items)
        self.pseudo_classes = self.pseudo_classes or [None] * len(self.items)

    def view_key(self, i: int, replica: int) -> str:
        copy = f"_c{self.copies[i]}" if self.copies[i] else ""
        return f"{self.items[i].key}{copy}_r{replica}"

    def subset(self, keep: list[int]) -> Group:
        """The group with only the images at ``keep`` (the others failed to load)."""
        return Group(
            self.key,
            [self.items[i] for i in keep],
            [self.copies[i] for i in keep],
            [self.pseudo_classes[i] for i in keep],
        )


def plan_groups(variant: Variant, source: Source, pack: int) -> list[Group]:
    """The set's groups in a seeded order, ``pack`` images each (mixup: its partner group).

    The extra set's images are the entries of its class-balanced selection (a replicated rare
    image is stored once per copy, so classes stay balanced per visit).
    """
    size = variant.group if variant.group > 1 else pack
    if isinstance(variant, ExtraVariant):
        if variant.selection is None:
            raise RuntimeError("the extra variant needs its class-balanced selection first")
        entries = [
            variant.selection[p]
            for p in shuffled_order(len(variant.selection), variant.seed * 1000)
        ]
        out = []
        for k in range(0, len(entries), size):
            part = entries[k : k + size]
            items = [source.items[i] for i, _, _ in part]
            first = f"{items[0].key}_c{part[0][2]}" if part[0][2] else items[0].key
            key = first if len(part) == 1 else f"{first}_g"
            out.append(Group(key, items, [c for _, _, c in part], [cls for _, cls, _ in part]))
        return out
    order = [source.items[i] for i in shuffled_order(len(source.items), variant.seed * 1000)]
    chunks = [order[k : k + size] for k in range(0, len(order), size)]
    if len(chunks) > 1 and len(chunks[-1]) == 1 and variant.group > 1:  # no lone mixup image
        chunks[-2] += chunks.pop()
    return [Group(c[0].key if len(c) == 1 else f"{c[0].key}_g", c) for c in chunks]


@dataclass
class Chunk:
    """One unit of worker work: replicas ``[start, stop)`` of every image of one group."""

    group: int
    start: int
    stop: int
    chunks: int = field(default=1, compare=False)


def chunks_of(groups: list[Group], replicas: int, batch_size: int) -> list[Chunk]:
    out = []
    for g, group in enumerate(groups):
        per = max(1, batch_size // len(group.items))
        starts = list(range(0, replicas, per))
        out += [Chunk(g, s, min(s + per, replicas), len(starts)) for s in starts]
    return out


def shrink(img: torch.Tensor, raw_size: int) -> torch.Tensor:
    """Resize so the short side is at most ``raw_size`` (never up)."""
    h, w = img.shape[-2:]
    if min(h, w) <= raw_size:
        return img
    return TF.resize(img, [raw_size], antialias=True)


class RecipeChunks(Dataset):
    """Renders chunks in loader workers: stored JPEGs (first chunk), views, records, digests."""

    def __init__(
        self,
        variant: Variant,
        source: Source,
        groups: list[Group],
        chunks: list[Chunk],
        raw_size: int,
        quality: int,
        max_side: int,
    ) -> None:
        self.variant, self.source, self.groups, self.chunks = variant, source, groups, chunks
        self.raw_size, self.quality, self.max_side = raw_size, quality, max_side
        # a group's chunks are consecutive: each worker keeps the last group it loaded, so 1000
        # replicas in 16 chunks load, shrink and JPEG the source once per worker, not 16 times
        self._last: tuple[int, tuple] | None = None

    def __len__(self) -> int:
        return len(self.chunks)

    def _sources(self, group: Group) -> tuple[list[bytes], list[np.ndarray], list[int], list]:
        """The group's usable images: JPEG bytes, decoded as the loader will (HWC), their
        indices in the group, and skips."""
        data, decoded, kept, skipped = [], [], [], []
        for k, item in enumerate(group.items):
            try:
                rgb = self.source.load(item, self.max_side)
                small = shrink(to_chw(rgb), self.raw_size)
                jpg, _ = jpeg_round_trip(small.permute(1, 2, 0).contiguous().numpy(), self.quality)
                pixels = decode_source(jpg)
            except BadImage as e:
                skipped.append((item.ref, str(e)))
                continue
            data.append(jpg)
            decoded.append(pixels)
            kept.append(k)
        return data, decoded, kept, skipped

    def __getitem__(self, k: int) -> dict:
        chunk = self.chunks[k]
        group = self.groups[chunk.group]
        out = {"chunk": chunk, "skipped": []}
        if self._last is None or self._last[0] != chunk.group:
            self._last = (chunk.group, self._sources(group))
        data, decoded, kept, skipped = self._last[1]
        out["skipped"] = skipped
        if not kept:
            return {**out, "failed": [(group.items[0].ref, "no usable image in its group")]}
        group = group.subset(kept)
        shapes = [im.shape[:2] for im in decoded]
        views, recipes = [], []
        for i in range(len(kept)):
            try:
                for r in range(chunk.start, chunk.stop):
                    _, rng, nrng = self.variant.rngs(group.view_key(i, r))
                    recipe = self.variant.plan(shapes, i, rng, nrng)
                    views.append(self.variant.render(recipe, decoded, i))
                    recipes.append(recipe)
            except Exception as e:  # an input that breaks an augmentation: skip it, say why
                why = str(e) if isinstance(e, BadImage) else f"error: {type(e).__name__}: {e}"
                bad = group.items[i].ref
                # the sample's records must cover all its images: the group is left out whole
                others = [(it.ref, f"left out with {bad}") for it in group.items if it.ref != bad]
                return {**out, "failed": [(bad, why), *others]}
        out.update(
            group=group,
            views=torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2),
            recipes=recipes,
            pixels=[pixel_hash(v) for v in views],
        )
        if chunk.start == 0:  # the stored images, and what one view would cost as pixels
            out["jpgs"] = data
            out["pixel_view_bytes"] = len(jpeg_round_trip(views[0], self.quality)[0])
        return out


def _first(batch: list[dict]) -> dict:
    return batch[0]


class GroupAssembler:
    """Collects a group's chunks (in order) into one tar sample once the last one is in."""

    def __init__(self, codec: ViewCodec, replicas: int) -> None:
        self.codec, self.replicas = codec, replicas
        self.parts: list[np.ndarray] = []
        self.head: dict | None = None
        self.failed = False

    def add(self, made: dict, probs, indices) -> dict | None:
        chunk: Chunk = made["chunk"]
        if chunk.start == 0:
            self.parts, self.head, self.failed = [], made, False
        if "failed" in made:
            self.failed = True
        if self.failed:
            return None
        group: Group = made["group"]
        n_img, n_rep = len(group.items), chunk.stop - chunk.start
        classes = [-1 if it.label is None else it.label for it in group.items]
        rec = self.codec.encode(
            made["recipes"], made["pixels"], np.repeat(classes, n_rep).tolist(), probs, indices
        )
        self.parts.append(rec.reshape(n_img, n_rep))
        return self._sample() if chunk.stop >= self.replicas else None

    def _sample(self) -> dict:
        head, group = self.head, self.head["group"]
        views = np.concatenate(self.parts, axis=1)
        classes = np.array(
            [-1 if it.label is None else it.label for it in group.items], dtype=np.int32
        )
        sample = {"__key__": group.key}
        for i, jpg in enumerate(head["jpgs"]):
            sample[image_member(i)] = jpg
        pseudo = group.pseudo_classes
        extra = {} if all(c is None for c in pseudo) else {"pseudo_classes": pseudo}
        sample.update(
            {
                CLASSES: encode_npy(classes),
                VIEWS: encode_npy(views),
                "json": sample_json(
                    [it.key for it in group.items], [it.ref for it in group.items], extra
                ),
            }
        )
        return sample


def storage_of(sample: dict) -> dict:
    """On-disk bytes of one recipe sample: its view records and its source images."""
    views = tar_bytes(len(sample[VIEWS]))
    images = sum(tar_bytes(len(v)) for k, v in sample.items() if k.endswith(".jpg"))
    other = sum(
        tar_bytes(len(v))
        for k, v in sample.items()
        if not k.startswith("__") and k != VIEWS and not k.endswith(".jpg")
    )
    return {"views_bytes": views, "image_bytes": images + other}


def recipe_loader(
    variant: Variant,
    source: Source,
    groups: list[Group],
    raw_size: int,
    quality: int,
    max_side: int,
    batch_size: int,
    num_workers: int,
) -> DataLoader:
    """The chunks of ``groups`` rendered by ``num_workers`` workers, in order."""
    chunks = chunks_of(groups, variant.replicas, batch_size)
    data = RecipeChunks(variant, source, groups, chunks, raw_size, quality, max_side)
    return DataLoader(data, batch_size=1, num_workers=num_workers, collate_fn=_first)


def view_codec(variant: Variant, teacher: FrozenTeacher | None, top_k: int | None) -> ViewCodec:
    """The record layout of a recipe set's views."""
    labelled = teacher is not None
    return ViewCodec(
        variant.kind,
        int(getattr(variant, "num_ops", 0)),
        teacher.num_classes if labelled else 0,
        ("topk" if top_k else "full") if labelled else None,
        int(top_k) if labelled and top_k else None,
    )


def render_recipe_shard(
    variant: Variant,
    source: Source,
    groups: list[Group],
    codec: ViewCodec,
    raw_size: int,
    quality: int,
    batch_size: int,
    num_workers: int,
    label: Callable,
    bar,
) -> tuple[list[dict], dict, int, int, float]:
    """(samples, shard record, images written, views written, teacher seconds) of ``groups``:
    every view rendered and labelled (``label``: images -> probs, indices, seconds), only its
    record kept."""
    loader = recipe_loader(
        variant,
        source,
        groups,
        raw_size,
        quality,
        variant.cfg.source_side,
        batch_size,
        num_workers,
    )
    assembler = GroupAssembler(codec, variant.replicas)
    samples, skipped, teacher_s = [], [], 0.0
    sizes = {"views_bytes": 0, "image_bytes": 0, "images": 0, "views": 0}
    pixel_bytes = []
    for made in loader:
        chunk = made["chunk"]
        if chunk.start == 0:
            skipped += made["skipped"]
        if "failed" in made:
            skipped += [f for f in made["failed"] if f not in skipped]
            bar.update((chunk.stop - chunk.start) * len(groups[chunk.group].items))
            continue
        probs, indices, secs = label(made["views"])
        teacher_s += secs
        if "pixel_view_bytes" in made:
            pixel_bytes.append(made["pixel_view_bytes"])
        bar.update(len(made["views"]))
        sample = assembler.add(made, probs, indices)
        if sample is not None:
            samples.append(sample)
            n_img = len(made["group"].items)
            sizes["images"] += n_img
            sizes["views"] += n_img * variant.replicas
            for k, v in storage_of(sample).items():
                sizes[k] += v
    record = {
        "skipped": skipped,
        **sizes,
        "pixel_view_bytes": [sum(pixel_bytes), len(pixel_bytes)],
    }
    return samples, record, sizes["images"], sizes["views"], teacher_s
