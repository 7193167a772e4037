"""Live training sets (``mode=hybrid``): views the teacher labels in the training step.

A set marked ``live`` needs no stored label, so a recipe set is not limited to its stored
replicas: each visit plans a fresh view with the set's own variant (crop box, RandAugment ops,
mixup partner and weight, inpaint mask drawn from the stream's seeded generator) and renders it
with the code the builder used. The teacher then labels exactly those pixels (after the flip), as
in online mode. A live pixel set (JPEG views) streams its stored views; only the label is live.

Hybrid batches hold a fixed number of live samples (``live_per_batch``), always first: the
teacher's input has one shape every step (one compiled graph, a predictable cost) and every rank
takes the same steps, since each batch is full whatever the sets yield.
"""

from __future__ import annotations

import random

import numpy as np
import simplejpeg
import torch

from data.labels import load_npy
from data.recipes import CLASSES, Replayer, group_size, image_member
from data.render import decode_source
from data.render import flip as flip_view

LABEL_SOURCES = ("stored", "live")


def live_per_batch(batch_size: int, weights: list[float], live: list[bool]) -> int:
    """Live samples in each batch: the live sets' share of the mixing weights, rounded, and at
    least one live and (when a stored set has weight) one stored sample."""
    total = sum(weights)
    share = sum(w for w, is_live in zip(weights, live, strict=True) if is_live) / total
    stored = any(w > 0 and not is_live for w, is_live in zip(weights, live, strict=True))
    return min(max(round(share * batch_size), 1), batch_size - 1 if stored else batch_size)


def fresh_view(
    sample: dict,
    replay: Replayer,
    num_classes: int,
    source: int,
    flip: bool,
    rng: random.Random,
) -> dict:
    """Image ``__image__`` of a recipe sample as a new view of the set's variant (no label).

    Every random choice is drawn from ``rng``; a sample that cannot be rendered is a skip
    (``__bad__``) naming the sample, as in the stored stream.
    """
    if "__bad__" in sample:
        return sample
    i = int(sample.get("__image__", 0))
    where = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
    try:
        n = group_size(sample)
        shapes = [_shape(sample[image_member(j)]) for j in range(n)]
        nrng = np.random.default_rng(rng.getrandbits(64))
        recipe = replay.variant.plan(shapes, i, rng, nrng)
        images = [None] * n
        for j in {i, recipe.get("partner", i)}:
            images[j] = decode_source(sample[image_member(j)])
        view = replay.variant.render(recipe, images, i)
        label = int(load_npy(sample[CLASSES])[i])
        if not -1 <= label < num_classes:
            raise ValueError(f"class {label} outside [0, {num_classes})")
    except KeyError as e:
        return {"__bad__": (where, f"sample missing a key: {e.args[0]}")}
    except Exception as e:  # a source image or plan this variant cannot render: skip it
        return {"__bad__": (f"{where}:{i}", f"{type(e).__name__}: {str(e)[:200]}")}
    if flip and rng.random() < 0.5:
        view = flip_view(view)
    return {
        "image": torch.from_numpy(view),
        "label": label,
        "source": source,
        "url": sample.get("__url__", ""),
        "key": f"{sample.get('__key__', '')}.{i}",
    }


def _shape(data: bytes) -> tuple[int, int]:
    """A source image's (H, W) from its JPEG header (decoded only when it is not a JPEG)."""
    try:
        return tuple(simplejpeg.decode_jpeg_header(data)[:2])
    except ValueError:
        return decode_source(data).shape[:2]
