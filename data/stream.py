"""Streams of batches from shard sets, for training and validation.

Both streams are ``IterableDataset`` classes holding only plain settings, so they pickle into
spawn/forkserver workers. Rank and world size are passed in explicitly; nothing reads them from
the environment inside a worker.

- Training: per set, the rank's own shards (``urls[rank::world]``) resampled forever, read,
  shuffled through a buffer, decoded; the sets mixed per sample by weight; full batches only. The
  loader caps every rank at the same number of batches (``with_epoch`` on the loader).
- Reproducible: every random choice (shard picks, shuffle buffer, mixing, flips, online crops)
  draws from its own ``random.Random`` seeded from (seed, rank, loader worker, epoch, purpose),
  never from global state, so the same seed gives the same batches for any ``num_workers``.
  The epoch is the number of times this stream was iterated in its process (loader workers are
  persistent, so it counts epochs).
- A shard that yields no decodable sample (truncated, corrupt, empty) is left out of its set's
  rotation. When every shard of a rank is unusable the rank falls back to the whole set; when
  the whole set is unusable the stream raises ``NoUsableSample`` naming each shard and why,
  instead of resampling forever (which also ignored SIGTERM: Lightning checks between batches).
- Hybrid (``live`` flags, data/live.py): the live sets and the stored sets are mixed apart and
  every batch takes a fixed count from each, live samples first (``hybrid_batches``).
- Validation: exact and balanced whatever the shard count. Every rank reads every validation
  shard and keeps the samples whose global index ``i`` (manifest order) has
  ``i % world == rank``; loader workers split the shards. Trade-off: each rank reads the whole
  validation set from disk (world x the I/O of splitting by shard) but decodes only its share;
  validation sets are small next to training, and splitting by shard gave a rank no samples at
  all when there were fewer shards than ranks, which hung every rank at the first validation.
- Bad samples (undecodable image, missing key, a recipe group missing an image, a truncated
  shard) are dropped and counted where they are found: a shard's errors when it is read (before
  the shuffle buffer, which is rebuilt every nominal epoch and would lose them), a sample's when
  it is decoded. Each stream's ``SkipLog`` holds them; every batch carries those found since the
  previous one as ``skipped`` (where, reason) entries, so the training loop can count and report
  them. Shard errors read ``("shard", "<ErrorType>: <url>: <detail>")``.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, default_collate, get_worker_info

from common.images import decode_jpeg_hwc
from data.augment import random_resized_crop
from data.batch_decode import jpeg_problem, pack_jpegs
from data.labels import decode_soft_label
from data.live import fresh_view, live_per_batch
from data.recipes import Replayer, ReplicaPicker, group_size, image_member
from data.remote import ServerGone, open_read, read_json
from data.render import flip as flip_view
from data.tario import samples as tar_members_by_key

log = logging.getLogger(__name__)

_END = object()
DECODE_STAGES = ("cpu", "gpu")


class NoUsableSample(RuntimeError):
    """Every shard of a training set was tried and none yielded a decodable sample."""


# -- seeding ----------------------------------------------------------------------------------
def split_by_rank(urls: list[str], rank: int, world: int) -> list[str]:
    """This rank's shards; when there are fewer shards than ranks every rank reads them all."""
    return list(urls[rank::world]) if len(urls) >= world else list(urls)


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info else (0, 1)


def stream_rng(seed: int, rank: int, worker: int, epoch: int, purpose: str) -> random.Random:
    """An RNG owned by one purpose of one stream; a string seed hashes stably across processes."""
    return random.Random(f"{seed}/{rank}/{worker}/{epoch}/{purpose}")


def seed_worker(worker_id: int, seed: int, rank: int) -> None:
    """``worker_init_fn``: seed torch, numpy and ``random`` per (seed, rank, worker).

    The streams do not use these global generators; this keeps any other code in a worker
    (e.g. a torchvision transform) deterministic and distinct across ranks (webdataset #25).
    """
    s = seed * 1_000_003 + rank * 1000 + worker_id
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % 2**32)


# -- reading shards ---------------------------------------------------------------------------
def _error_text(exn: Exception, url: str) -> str:
    """``<ErrorType>: <url>: <detail>`` (the url once, whatever the error's own message has)."""
    detail = str(exn).replace(f"{url}: ", "").replace(url, Path(url).name)
    return f"{type(exn).__name__}: {url}: {detail[:200]}"


def shard_samples(url: str) -> Iterator[dict]:
    """Raw samples of one shard (at any location: data/remote.py), then a bad-shard marker if
    reading it failed part way (a remote one after its bounded retries)."""
    try:
        with open_read(url) as stream:
            yield from tar_members_by_key(stream, url)
    except ServerGone:  # not one bad shard: the run cannot go on without its server
        raise
    except Exception as e:  # truncated, corrupt or missing: keep the samples read so far
        yield {"__bad__": ("shard", _error_text(e, url))}


def sample_key(sample: dict) -> str:
    return f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"


def decode_sample(
    sample: dict,
    num_classes: int,
    source: int,
    flip: bool,
    need_soft: bool,
    rng: random.Random | None = None,
    keep_jpeg: bool = False,
) -> dict:
    """Raw tar members -> image uint8 [H, W, 3], dense soft label, class, source index.

    Images stay HWC until ``collate`` stacks them: the batch is then a channels_last [B, 3, H, W]
    view with no copy, the layout the students run in. ``flip`` draws from ``rng``.
    ``keep_jpeg`` (``data.decode=gpu``): no pixel work; the checked JPEG bytes and the drawn
    flip travel on for ``data.batch_decode`` to decode the whole batch on the device.
    """
    try:
        if keep_jpeg:
            image = sample["jpg"]
            problem = jpeg_problem(image)
            if problem:
                raise ValueError(problem)
        else:
            image = decode_jpeg_hwc(sample["jpg"])
        soft = None
        if need_soft:
            soft = decode_soft_label(sample["soft.npy"], num_classes)
        label = int(sample["cls"]) if "cls" in sample else -1
        if not -1 <= label < num_classes:
            raise ValueError(f"class {label} outside [0, {num_classes})")
    except KeyError as e:
        return {"__bad__": (sample_key(sample), f"sample missing a key: {e.args[0]}")}
    except Exception as e:
        return {"__bad__": (sample_key(sample), f"{type(e).__name__}: {str(e)[:200]}")}
    flipped = bool(flip and rng is not None and rng.random() < 0.5)
    if keep_jpeg:
        out = {"jpeg": image, "flip": flipped}
    else:
        out = {"image": image.flip(1) if flipped else image}
    out |= {
        "label": label,
        "source": source,
        "url": sample.get("__url__", ""),
        "key": sample.get("__key__", ""),
    }
    if soft is not None:
        out["soft"] = soft
    return out


def expand_groups(samples: Iterable[dict]) -> Iterator[dict]:
    """Recipe sets: one entry per source image of each group sample (bytes shared, not copied);
    an image whose ``<i>.jpg`` member is missing becomes a bad-sample marker naming it."""
    for s in samples:
        if "__bad__" in s:
            yield s
            continue
        try:
            n = group_size(s)
        except Exception as e:  # an unreadable cls.npy
            yield {"__bad__": (sample_key(s), f"{type(e).__name__}: {str(e)[:200]}")}
            continue
        if n == 0:
            yield {"__bad__": (sample_key(s), "recipe sample has no source image (0.jpg)")}
        for i in range(n):
            if image_member(i) in s:
                yield {**s, "__image__": i}
            else:
                yield {"__bad__": (f"{sample_key(s)}:{i}", f"group lacks {image_member(i)}")}


def decode_view(
    sample: dict,
    replay: Replayer,
    pick: ReplicaPicker | None,
    num_classes: int,
    source: int,
    flip: bool,
    rng: random.Random | None = None,
    sources: dict | None = None,
) -> dict:
    """A recipe sample's image ``__image__`` rendered as one of its stored views (the replica
    ``pick`` chooses; replica 0 without one), with its stored label; bad recipes are skips.
    ``sources``: decoded source images shared by the calls on one sample."""
    if "__bad__" in sample:
        return sample
    i = int(sample.get("__image__", 0))
    try:
        views = replay.records(sample)
        # the shard's file name, not its path: the same seed picks the same views wherever the
        # shards live (a path made every cache location pick differently)
        shard = sample.get("__url__", "").rpartition("/")[2]
        name = f"{shard}:{sample.get('__key__', '')}:{i}"
        replica = pick(name, views.shape[1]) if pick is not None else 0
        soft = replay.codec.soft_label(replay.row(views, i, replica))  # a bad class, by name
        view, _, label = replay.render(sample, i, replica, views, sources)
        if not -1 <= label < num_classes:
            raise ValueError(f"class {label} outside [0, {num_classes})")
    except KeyError as e:
        return {"__bad__": (sample_key(sample), f"sample missing a key: {e.args[0]}")}
    except Exception as e:  # a bad recipe, an undecodable source image
        return {"__bad__": (f"{sample_key(sample)}:{i}", f"{type(e).__name__}: {str(e)[:200]}")}
    if flip and rng is not None and rng.random() < 0.5:
        view = flip_view(view)
    return {
        "image": torch.from_numpy(view),
        "label": label,
        "source": source,
        "url": sample.get("__url__", ""),
        "key": f"{sample.get('__key__', '')}.{i}",
        "soft": soft,
    }


def rendered_groups(
    samples: Iterable[dict], render: Callable[..., dict], skip: Callable[[str, str], None]
) -> Iterator[dict]:
    """Recipe sets whose views read other images of their sample (mixup): every image of a
    sample rendered as soon as the sample is read, each source decoded once for all of them.
    Bad samples and views go to ``skip(where, why)`` instead of the stream."""
    for s in samples:
        if "__bad__" in s:
            skip(*s["__bad__"])
            continue
        try:
            n = group_size(s)
        except Exception as e:  # an unreadable cls.npy
            skip(sample_key(s), f"{type(e).__name__}: {str(e)[:200]}")
            continue
        if n == 0:
            skip(sample_key(s), "recipe sample has no source image (0.jpg)")
        sources: dict = {}
        for i in range(n):
            if image_member(i) not in s:
                skip(f"{sample_key(s)}:{i}", f"group lacks {image_member(i)}")
                continue
            out = render({**s, "__image__": i}, sources=sources)
            if "__bad__" in out:
                skip(*out["__bad__"])
            else:
                yield out


def crop_raw(
    sample: dict, size: int, scale: tuple[float, float], flip: bool, rng: random.Random
) -> dict:
    """Online mode: a fresh Inception crop (and flip) of a raw image, every time it is seen."""
    img = sample["image"].permute(2, 0, 1)  # HWC -> CHW view for torchvision
    img, _ = random_resized_crop(img, size, scale, rng)
    if flip and rng.random() < 0.5:
        img = img.flip(-1)
    return {**sample, "image": img.permute(1, 2, 0).contiguous()}


# -- generic stream stages --------------------------------------------------------------------
def shuffled(items: Iterable, size: int, rng: random.Random, warm: int | None = None) -> Iterator:
    """Items in random order through a buffer of ``size``; starts yielding after ``warm``.

    ``warm`` defaults to the whole buffer: the stream restarts every (nominal) epoch, and a
    buffer that starts yielding early fills the first batches of each epoch from one shard
    per set (a 100-sample warm-up cost 2.5 points of digits top-1, mean of 5 seeds; the buffer holds
    undecoded samples, about 30 KB each at 224 px).
    """
    warm = size if warm is None else warm
    if size <= 1:
        yield from items
        return
    it, buf, warm = iter(items), [], min(warm, size)
    for item in it:
        buf.append(item)
        if len(buf) < size:  # still growing: take two for each one given out
            extra = next(it, _END)
            if extra is not _END:
                buf.append(extra)
        if len(buf) < warm:
            continue
        k = rng.randrange(len(buf))
        buf[k], buf[-1] = buf[-1], buf[k]
        yield buf.pop()
    rng.shuffle(buf)
    yield from buf


def mixed(streams: list[Iterator], weights: list[float], rng: random.Random) -> Iterator:
    """Endless samples, each from a stream drawn with probability proportional to its weight."""
    cum = list(itertools.accumulate(weights))
    while True:
        i = min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(streams) - 1)
        yield next(streams[i])


def skip_key(where: str, reason: str) -> str:
    """What one skip is: a sample (``url:key``, ``url:key:image``) or, for shard errors, the
    shard's reason (it names the shard). A sample met again on a later read is the same skip."""
    return reason if where == "shard" else where


class SkipLog:
    """Where a stream counts what it leaves out: each bad sample or shard once, when found.

    Stages ``add`` a skip where it happens (reading a shard, decoding a sample); ``batches``
    hands what is new to the next batch (``drain``). Nothing waits in a shuffle buffer, so a
    buffer dropped at the end of a nominal epoch loses no skip; a shard that fails on every read
    is one skip (``skip_key``). A training stream keeps its log for its lifetime and hands all of
    it out again at the start of each epoch (``again``): the batches a loader had prefetched when
    the previous epoch ended were dropped, with the skips they carried.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, str]] = {}
        self._new: list[tuple[str, str]] = []

    def add(self, where: str, reason: str) -> None:
        key = skip_key(where, reason)
        if key not in self._seen:
            self._seen[key] = (where, reason)
            self._new.append((where, reason))

    def drain(self) -> list[tuple[str, str]]:
        """The skips found since the last call."""
        out, self._new = self._new, []
        return out

    def again(self) -> None:
        """Hand every skip found so far to the next batch (the reader keeps each once)."""
        self._new = list(self._seen.values())

    def drop_bad(self, samples: Iterable[dict]) -> Iterator[dict]:
        """The good samples; bad-sample markers (``__bad__``) are added here."""
        for s in samples:
            if "__bad__" in s:
                self.add(*s["__bad__"])
            else:
                yield s


def collate(samples: list[dict], skipped: list[tuple[str, str]] | None = None) -> dict:
    """Stack a list of decoded samples into one batch dict (``skipped``: the stream's new skips).

    With ``data.decode=gpu`` some samples hold JPEG bytes instead of pixels: those come last,
    packed (``data.batch_decode.PACKED_KEYS``) for the device to decode; every per-sample entry
    follows the same order.
    """
    jpegs = [s for s in samples if "jpeg" in s]
    if jpegs:
        samples = [s for s in samples if "jpeg" not in s] + jpegs
    pixels = samples[: len(samples) - len(jpegs)]
    batch = {
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.long),
        "source": torch.tensor([s["source"] for s in samples], dtype=torch.long),
        "url": [s["url"] for s in samples],
        "key": [s["key"] for s in samples],
        "skipped": list(skipped or []),
    }
    if pixels:
        # default_collate stacks straight into shared memory inside a loader worker, saving
        # the copy a plain torch.stack would need on the way to the main process
        batch["image"] = default_collate([s["image"] for s in pixels]).permute(0, 3, 1, 2)
    if jpegs:
        batch["jpeg_data"], batch["jpeg_offsets"] = pack_jpegs([s["jpeg"] for s in jpegs])
        batch["jpeg_flip"] = torch.tensor([s["flip"] for s in jpegs], dtype=torch.bool)
    if "soft" in samples[0]:
        batch["soft"] = default_collate([s["soft"] for s in samples])
    return batch


def batches(
    samples: Iterable[dict], size: int, partial_last: bool, skips: SkipLog
) -> Iterator[dict]:
    """Batches of ``size``, each with the skips found since the previous one.

    A finite stream (``partial_last``: its last partial batch too) holds each batch back until
    the next one is full, so skips found after the last good sample still ride on a batch.
    """
    held: list[list[dict]] = []
    batch: list[dict] = []
    for s in samples:
        batch.append(s)
        if len(batch) == size:
            held.append(batch)
            batch = []
            if not partial_last or len(held) > 1:
                yield collate(held.pop(0), skips.drain())
    if partial_last and batch:
        held.append(batch)
    for b in held:
        yield collate(b, skips.drain())
    left = skips.drain()
    if left:
        log.warning("no batch left to report %d skipped samples with: %s", len(left), left[:5])


def hybrid_batches(
    live: Iterator[dict],
    stored: Iterator[dict] | None,
    n_live: int,
    size: int,
    num_classes: int,
    skips: SkipLog,
) -> Iterator[dict]:
    """``mode=hybrid``: full batches of ``n_live`` live samples, then ``size - n_live`` stored.

    Live samples come first (they are always pixels, so ``collate`` keeps them in front) and
    ``live`` marks them; their ``soft`` rows are NaN, since no stored label may stand in for the
    teacher's. Each batch carries the skips found since the previous one.
    """
    no_label = torch.full((num_classes,), float("nan"))
    marks = torch.arange(size) < n_live
    while True:
        head = [{**s, "soft": no_label} for s in itertools.islice(live, n_live)]
        tail = list(itertools.islice(stored, size - n_live)) if stored is not None else []
        batch = collate(head + tail, skips.drain())
        batch["live"] = marks.clone()
        yield batch


def check_decode(decode: str) -> None:
    """Where pixels are decoded: ``cpu`` (loader workers) or ``gpu`` (the training device)."""
    if decode not in DECODE_STAGES:
        raise ValueError(f"decode must be one of {DECODE_STAGES} once resolved, got {decode!r}")


# -- training ---------------------------------------------------------------------------------
class ShardPool:
    """Resamples one set's shards; leaves out those with nothing usable; raises when none is left.

    A shard is usable once one of its samples decodes (checked with ``check`` until then, so a
    known-good shard costs nothing). One read decides: a shard that yields no decodable sample
    is dead for the rest of this stream. What a read finds bad (the shard's own error, a sample
    the check or ``expand`` rejects) goes to ``skips`` there and then, never downstream.
    """

    def __init__(
        self,
        name: str,
        own: list[str],
        everyone: list[str],
        rng: random.Random,
        check: Callable[[dict], dict],
        where: str,
        skips: SkipLog,
        expand: Callable[[Iterable[dict]], Iterable[dict]] | None = None,
    ) -> None:
        self.name, self.own, self.everyone, self.rng, self.check = name, own, everyone, rng, check
        self.where, self.skips, self.expand = where, skips, expand
        self.good: set[str] = set()
        self.dead: dict[str, str] = {}

    def __iter__(self) -> Iterator[dict]:
        pool = self.own
        while True:
            live = [u for u in pool if u not in self.dead]
            if not live:
                if pool is self.own and set(self.everyone) - set(self.own):
                    log.warning(
                        "training set %s: all %d shards of %s are unusable (%s); reading the "
                        "whole set instead",
                        self.name,
                        len(self.own),
                        self.where,
                        self._reasons(),
                    )
                    pool = self.everyone
                    continue
                raise NoUsableSample(
                    f"no usable sample in training set {self.name} after trying all "
                    f"{len(self.dead)} shards: {self._reasons()}"
                )
            yield from self._read(self.rng.choice(live))

    def _read(self, url: str) -> Iterator[dict]:
        usable, reason = url in self.good, None
        samples = shard_samples(url)
        for s in self.expand(samples) if self.expand is not None else samples:
            if not usable and "__bad__" not in s:
                verdict = self.check(s)
                if "__bad__" in verdict:
                    s = verdict
                else:
                    usable = True
                    self.good.add(url)
            if "__bad__" in s:
                self.skips.add(*s["__bad__"])
                if reason is None:
                    reason = s["__bad__"][1].replace(f"{url}: ", "")
                continue
            yield s
        if not usable:
            self.dead[url] = reason or "no samples (empty shard)"

    def _reasons(self, shown: int = 10) -> str:
        """The first ``shown`` dead shards by name with why; a long set is summarised."""
        dead = sorted(self.dead.items())
        text = ", ".join(f"{Path(u).name}: {r}" for u, r in dead[:shown])
        return text + (f" ... and {len(dead) - shown} more" if len(dead) > shown else "")


def _set_name(urls: list[str]) -> str:
    return Path(urls[0]).parent.name if urls else "?"


class TrainStream(IterableDataset):
    """Infinite batches mixing ``sets`` by ``weights``; ``online`` = crop settings for raw sets.

    See the module docstring; build it with ``train_pipeline``.
    """

    def __init__(
        self,
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
        names: list[str] | None = None,
        recipes: list[dict | None] | None = None,
        recipe_check: bool = True,
        decode: str = "cpu",
        live: list[bool] | None = None,
    ) -> None:
        super().__init__()
        check_decode(decode)
        if len(sets) != len(weights) or not sets:
            raise ValueError("train_pipeline needs one weight per shard set")
        if any(not urls for urls in sets):
            raise ValueError(
                f"a training set has no shards: {[len(u) for u in sets]} shards per set"
            )
        self.names = list(names) if names else [_set_name(urls) for urls in sets]
        self.sets, self.weights = sets, list(weights)
        self.rank, self.world, self.seed = rank, world, seed
        self.batch_size, self.num_classes = batch_size, num_classes
        self.flip, self.shuffle, self.online = flip, shuffle, online
        self.recipes = list(recipes) if recipes else [None] * len(sets)
        if len(self.recipes) != len(sets):
            raise ValueError("train_pipeline needs one recipe spec (or None) per shard set")
        # fail now, in the main process, on a recipe this loader cannot render
        for spec in self.recipes:
            if spec is not None:
                Replayer(spec, num_classes)
        self.recipe_check, self.decode = recipe_check, decode
        self.live = list(live) if live else [False] * len(sets)
        if len(self.live) != len(sets):
            raise ValueError("train_pipeline needs one live flag per shard set")
        self.epoch = 0
        self._pickers: dict[int, ReplicaPicker] = {}
        self.skips = SkipLog()  # one per process: a loader worker's copy lives across epochs

    def __iter__(self) -> Iterator[dict]:
        worker, _ = _worker()
        rng = partial(stream_rng, self.seed, self.rank, worker, self.epoch)
        self.epoch += 1
        self.skips.again()
        streams = [self._set_stream(i, rng) for i in range(len(self.sets))]
        if any(self.live):
            return self._hybrid(streams, rng)
        stream = streams[0] if len(streams) == 1 else mixed(streams, self.weights, rng("mix"))
        return batches(stream, self.batch_size, False, self.skips)

    def _pool(
        self,
        idx: int,
        rng: Callable[[str], random.Random],
        check: Callable[[dict], dict],
        expand: Callable[[Iterable[dict]], Iterable[dict]] | None = None,
    ) -> ShardPool:
        """This rank's shard pool of set ``idx``, recording what its reads find bad here."""
        urls = self.sets[idx]
        return ShardPool(
            self.names[idx],
            split_by_rank(urls, self.rank, self.world),
            list(urls),
            rng(f"shards{idx}"),
            check,
            f"rank {self.rank}/{self.world}",
            self.skips,
            expand,
        )

    def _hybrid(self, streams: list[Iterator], rng: Callable[[str], random.Random]) -> Iterator:
        """Live and stored sets mixed apart, then joined at a fixed count per batch."""
        parts = {}
        for flag, purpose in ((True, "mix_live"), (False, "mix_stored")):
            idx = [i for i, live in enumerate(self.live) if live == flag]
            if idx:
                sub, w = [streams[i] for i in idx], [self.weights[i] for i in idx]
                parts[flag] = sub[0] if len(sub) == 1 else mixed(sub, w, rng(purpose))
        n_live = live_per_batch(self.batch_size, self.weights, self.live)
        return hybrid_batches(
            parts[True], parts.get(False), n_live, self.batch_size, self.num_classes, self.skips
        )

    def _set_stream(self, idx: int, rng: Callable[[str], random.Random]) -> Iterator[dict]:
        need_soft = self.online is None and not self.live[idx]
        if self.recipes[idx] is not None:
            yield from self._recipe_stream(idx, rng)
            return
        decode = partial(
            decode_sample,
            num_classes=self.num_classes,
            source=idx,
            need_soft=need_soft,
            keep_jpeg=self.decode == "gpu" and need_soft,  # online crops and live views: pixels
        )
        pool = self._pool(idx, rng, partial(decode, flip=False))
        aug = rng(f"augment{idx}")
        for raw in shuffled(pool, self.shuffle, rng(f"shuffle{idx}")):
            s = decode(raw, flip=self.flip and self.online is None, rng=aug)
            if "__bad__" in s:
                self.skips.add(*s["__bad__"])
                continue
            if self.online is not None:
                s = crop_raw(s, **self.online, flip=self.flip, rng=aug)
            yield s

    def _recipe_stream(self, idx: int, rng: Callable[[str], random.Random]) -> Iterator[dict]:
        """A recipe set: groups read, one entry per image shuffled, each rendered as the next of
        its replicas (``ReplicaPicker``: different views on successive visits)."""
        replay = Replayer(self.recipes[idx], self.num_classes, self.recipe_check)
        worker, _ = _worker()
        pick = self._pickers.setdefault(idx, ReplicaPicker(self.seed, self.rank, worker))
        aug, order = rng(f"augment{idx}"), rng(f"shuffle{idx}")
        if self.live[idx]:  # a new view each visit, labelled by the teacher in the step
            live = partial(fresh_view, replay=replay, num_classes=self.num_classes, source=idx)
            check = partial(live, flip=False, rng=random.Random(0))
            pool = self._pool(idx, rng, check, expand_groups)
            yield from self._render_shuffled(pool, partial(live, flip=self.flip, rng=aug), order)
            return
        decode = partial(
            decode_view, replay=replay, num_classes=self.num_classes, source=idx, flip=self.flip
        )
        if replay.variant.group == 1:  # a view reads its own image only: render after the shuffle
            pool = self._pool(idx, rng, partial(decode, pick=None, flip=False), expand_groups)
            yield from self._render_shuffled(pool, partial(decode, pick=pick, rng=aug), order)
            return
        # mixup: a sample's views read each other's images, so the sample is rendered when it is
        # read (one decode per source instead of one per view and partner) and the buffer holds
        # rendered views; what the rendering finds bad is counted at once, never buffered
        pool = self._pool(idx, rng, partial(decode, pick=None, flip=False))
        render = partial(decode, pick=pick, rng=aug)
        yield from shuffled(rendered_groups(pool, render, self.skips.add), self.shuffle, order)

    def _render_shuffled(
        self, pool: Iterable[dict], render: Callable[[dict], dict], order: random.Random
    ) -> Iterator[dict]:
        """Entries shuffled as they are (cheap), each rendered as it leaves the buffer."""
        for raw in shuffled(pool, self.shuffle, order):
            s = render(raw)
            if "__bad__" in s:
                self.skips.add(*s["__bad__"])
                continue
            yield s


def train_pipeline(*args, **kwargs) -> TrainStream:
    """Infinite batches mixing shard sets by weight: ``TrainStream``'s arguments."""
    return TrainStream(*args, **kwargs)


# -- validation -------------------------------------------------------------------------------
class ValStream(IterableDataset):
    """Each validation sample exactly once across ranks, balanced by sample; see the docstring."""

    def __init__(
        self,
        urls: list[str],
        counts: list[int],
        rank: int,
        world: int,
        batch_size: int,
        num_classes: int,
        need_soft: bool,
        decode: str = "cpu",
    ) -> None:
        super().__init__()
        check_decode(decode)
        self.urls, self.counts, self.rank, self.world = urls, counts, rank, world
        self.batch_size, self.num_classes, self.need_soft = batch_size, num_classes, need_soft
        self.decode = decode

    def __iter__(self) -> Iterator[dict]:
        worker, workers = _worker()
        skips = SkipLog()  # each pass reports its own skips
        return batches(skips.drop_bad(self._samples(worker, workers)), self.batch_size, True, skips)

    def _samples(self, worker: int, workers: int) -> Iterator[dict]:
        offsets = [0, *itertools.accumulate(self.counts)]
        for s in range(worker, len(self.urls), workers):  # loader workers split the shards
            k = 0
            for raw in shard_samples(self.urls[s]):
                if raw.get("__bad__", ("",))[0] == "shard":
                    if s % self.world == self.rank:  # one rank reports a shard's error
                        yield raw
                    continue
                mine = (offsets[s] + k) % self.world == self.rank
                k += 1
                if mine:
                    yield decode_sample(
                        raw,
                        self.num_classes,
                        0,
                        False,
                        self.need_soft,
                        keep_jpeg=self.decode == "gpu",
                    )


def record_counts(urls: list[str]) -> list[int]:
    """Samples per shard from the records written beside the shards (0 where there is none)."""
    counts = []
    for url in urls:
        record = url.removesuffix(".tar") + ".json"
        try:
            counts.append(int(read_json(record)["samples"]))
        except FileNotFoundError:
            counts.append(0)
    return counts


def val_pipeline(
    urls: list[str],
    rank: int,
    world: int,
    batch_size: int,
    num_classes: int,
    need_soft: bool,
    counts: list[int] | None = None,
    decode: str = "cpu",
) -> ValStream:
    """Each sample once and every rank a share; ``counts`` = samples per shard.

    ``counts`` default to the shard records (``<shard>.json``); where a count is unknown the index
    restarts at 0 in that shard: still exact, balanced only within the shard.
    """
    counts = list(counts) if counts is not None else record_counts(urls)
    if len(counts) != len(urls):
        raise ValueError(f"val_pipeline: {len(urls)} shards but {len(counts)} sample counts")
    if 0 < sum(counts) < world:
        raise ValueError(
            f"validation set {_set_name(urls)} has {sum(counts)} samples, fewer than the "
            f"{world} ranks: every rank needs at least one"
        )
    return ValStream(urls, counts, rank, world, batch_size, num_classes, need_soft, decode)


def loader(
    pipeline: IterableDataset,
    num_workers: int,
    seed: int,
    rank: int,
    steps: int | None = None,
    start_method: str | None = None,
) -> wds.WebLoader:
    """A WebLoader over batches; ``steps`` caps (and sets the length of) a training epoch.

    ``start_method`` (e.g. ``"spawn"``) starts the workers afresh instead of forking them: the
    remote transport's runtime (data/remote.py) does not survive a fork.
    """
    ld = wds.WebLoader(
        pipeline,
        batch_size=None,
        num_workers=num_workers,
        worker_init_fn=partial(seed_worker, seed=seed, rank=rank),
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        multiprocessing_context=start_method if num_workers > 0 else None,
    )
    if steps is not None:
        ld = ld.with_epoch(steps).with_length(steps, silent=True)
    return ld
