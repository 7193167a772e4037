"""webdataset pipelines that stream shard sets to training (stack.md §10).

Everything here is a module-level function parameterised with ``functools.partial`` so the
pipelines pickle into spawn/forkserver workers. Rank and world size are always passed in
explicitly; nothing reads them from the environment inside a worker.

- Training: per set, the rank's own shards (``urls[rank::world]``) resampled forever, decoded,
  shuffled; the sets mixed per sample by weight (``wds.RandomMix``); full batches only. The loader
  caps every rank at the same number of batches (``with_epoch`` on the loader, not the dataset).
- Validation: each shard read once (split by rank, then by worker), no resampling, partial last
  batch, so every sample is seen exactly once across ranks.
- Bad samples (undecodable image, missing key, truncated shard) are dropped and travel with the
  next good sample as ``skipped`` entries, so the training loop can count and report them.
"""

from __future__ import annotations

import random
from functools import partial

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import default_collate
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from data.images import decode_jpeg_hwc
from data.labels import decode_soft_label
from data.tario import tar_samples

_worker_errors: list[tuple[str, str]] = []  # per worker process: errors outside any sample


def record_error(exn: Exception) -> bool:
    """webdataset handler: remember the error (e.g. a truncated shard) and keep going."""
    _worker_errors.append(("shard", f"{type(exn).__name__}: {str(exn)[:200]}"))
    return True


class ShardList(torch.utils.data.IterableDataset):
    """A fixed list of shard URLs, possibly empty (webdataset's own list refuses none)."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__()
        self.urls = list(urls)

    def __iter__(self):
        for url in self.urls:
            yield {"url": url}


def split_by_rank(urls: list[str], rank: int, world: int) -> list[str]:
    """This rank's shards; when there are fewer shards than ranks every rank reads them all."""
    return list(urls[rank::world]) if len(urls) >= world else list(urls)


def worker_seed(seed: int, rank: int) -> int:
    """Distinct per rank and worker, deterministic (webdataset #25: never equal across ranks)."""
    info = torch.utils.data.get_worker_info()
    return seed * 1_000_003 + rank * 1000 + (info.id if info else 0)


def seed_worker(worker_id: int, seed: int, rank: int) -> None:
    """``worker_init_fn``: seed torch, numpy and ``random`` per (seed, rank, worker)."""
    s = seed * 1_000_003 + rank * 1000 + worker_id
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % 2**32)


def decode_sample(sample: dict, num_classes: int, source: int, flip: bool, need_soft: bool) -> dict:
    """Raw tar members -> image uint8 [H, W, 3], dense soft label, class, source index.

    Images stay HWC until ``collate`` stacks them: the batch is then a channels_last [B, 3, H, W]
    view with no copy, the layout the students run in.
    """
    key = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
    try:
        image = decode_jpeg_hwc(sample["jpg"])
        soft = None
        if need_soft:
            soft = decode_soft_label(sample["soft.npy"], num_classes)
        label = int(sample["cls"]) if "cls" in sample else -1
        if not -1 <= label < num_classes:
            raise ValueError(f"class {label} outside [0, {num_classes})")
    except KeyError as e:
        return {"__bad__": (key, f"sample missing a key: {e.args[0]}")}
    except Exception as e:
        return {"__bad__": (key, f"{type(e).__name__}: {str(e)[:200]}")}
    if flip and random.random() < 0.5:  # seeded per rank and worker (seed_worker)
        image = image.flip(1)
    out = {
        "image": image,
        "label": label,
        "source": source,
        "url": sample.get("__url__", ""),
        "key": sample.get("__key__", ""),
    }
    if soft is not None:
        out["soft"] = soft
    return out


def crop_raw(sample: dict, size: int, scale: tuple[float, float], flip: bool) -> dict:
    """Online mode: a fresh Inception crop (and flip) of a raw image, every time it is seen."""
    if "__bad__" in sample:
        return sample
    img = sample["image"].permute(2, 0, 1)  # HWC -> CHW view for torchvision
    top, left, h, w = v2.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3])
    img = TF.resized_crop(img, top, left, h, w, [size, size], antialias=True)
    if flip and random.random() < 0.5:
        img = img.flip(-1)
    return {**sample, "image": img.permute(1, 2, 0).contiguous()}


def drop_bad(samples):
    """Drop bad samples; attach what was dropped to the next good one as ``skipped``."""
    pending: list[tuple[str, str]] = []
    for s in samples:
        if _worker_errors:
            pending.extend(_worker_errors)
            _worker_errors.clear()
        if "__bad__" in s:
            pending.append(s["__bad__"])
            continue
        s["skipped"], pending = pending, []
        yield s


def collate(samples: list[dict]) -> dict:
    """Stack a list of decoded samples into one batch dict."""
    # default_collate stacks straight into shared memory inside a loader worker, saving the copy
    # a plain torch.stack would need on the way to the main process
    batch = {
        "image": default_collate([s["image"] for s in samples]).permute(0, 3, 1, 2),
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.long),
        "source": torch.tensor([s["source"] for s in samples], dtype=torch.long),
        "url": [s["url"] for s in samples],
        "key": [s["key"] for s in samples],
        "skipped": [x for s in samples for x in s["skipped"]],
    }
    if "soft" in samples[0]:
        batch["soft"] = default_collate([s["soft"] for s in samples])
    return batch


def _set_stream(urls, idx, rank, world, seed, num_classes, flip, need_soft, shuffle, online):
    stages = [
        wds.ResampledShards(
            split_by_rank(urls, rank, world),
            seed=seed + idx,
            worker_seed=partial(worker_seed, seed + idx, rank),
            deterministic=True,
        ),
        partial(tar_samples, handler=record_error),
        wds.shuffle(shuffle),
        wds.map(
            partial(
                decode_sample,
                num_classes=num_classes,
                source=idx,
                flip=flip and online is None,
                need_soft=need_soft,
            )
        ),
    ]
    if online is not None:
        stages.append(wds.map(partial(crop_raw, **online, flip=flip)))
    return wds.DataPipeline(*stages)


def train_pipeline(
    sets: list[list[str]],
    weights: list[float],
    rank: int,
    world: int,
    batch_size: int,
    num_classes: int,
    seed: int = 0,
    flip: bool = True,
    shuffle: int = 1000,
    online: dict | None = None,
) -> wds.DataPipeline:
    """Infinite batches mixing ``sets`` by ``weights``; ``online`` = crop settings for raw sets."""
    if len(sets) != len(weights) or not sets:
        raise ValueError("train_pipeline needs one weight per shard set")
    need_soft = online is None
    streams = [
        _set_stream(urls, i, rank, world, seed, num_classes, flip, need_soft, shuffle, online)
        for i, urls in enumerate(sets)
    ]
    mixed = streams[0] if len(streams) == 1 else wds.RandomMix(streams, list(weights))
    return wds.DataPipeline(
        mixed, drop_bad, wds.batched(batch_size, collation_fn=collate, partial=False)
    )


def val_pipeline(
    urls: list[str], rank: int, world: int, batch_size: int, num_classes: int, need_soft: bool
) -> wds.DataPipeline:
    """Each sample once: shards split by rank then by worker, no resampling, partial batches."""
    rank_urls = urls[rank::world]  # exactly-once: a rank with no shard simply yields nothing
    return wds.DataPipeline(
        ShardList(rank_urls),
        wds.split_by_worker,
        partial(tar_samples, handler=record_error),
        wds.map(
            partial(
                decode_sample, num_classes=num_classes, source=0, flip=False, need_soft=need_soft
            )
        ),
        drop_bad,
        wds.batched(batch_size, collation_fn=collate, partial=True),
    )


def loader(
    pipeline, num_workers: int, seed: int, rank: int, steps: int | None = None
) -> wds.WebLoader:
    """A WebLoader over batches; ``steps`` caps (and sets the length of) a training epoch."""
    ld = wds.WebLoader(
        pipeline,
        batch_size=None,
        num_workers=num_workers,
        worker_init_fn=partial(seed_worker, seed=seed, rank=rank),
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    if steps is not None:
        ld = ld.with_epoch(steps).with_length(steps, silent=True)
    return ld
