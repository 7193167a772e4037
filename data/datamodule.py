"""``DistillDataModule``: the shard sets a distillation run trains and validates on.

Offline mode (the paper's): teacher-labelled sets mixed by weight (D1:D2:D3 = 1:1:2 by default),
only a random horizontal flip on top. Online mode (function matching): a raw image set streamed
with a fresh Inception crop per view; the teacher labels each batch in the training step. Hybrid
mode: the offline mix, where the sets ``labels_from`` marks ``live`` are labelled by the teacher
in the training step (data/live.py) and the others by their stored labels.
Rank and world size come from the trainer and are bound into the pipelines explicitly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, get_args

import lightning as L

from data import remote, urls
from data.config import OnlineConfig
from data.live import LABEL_SOURCES
from data.recipes import version_drift
from data.shards import Manifest, ManifestError, read_manifest
from data.stream import loader, train_pipeline, val_pipeline

log = logging.getLogger(__name__)

# who decodes JPEGs: cpu (loader workers) | gpu (batched on the device) | auto (gpu on CUDA)
Decode = Literal["auto", "cpu", "gpu"]
DECODE_CHOICES = get_args(Decode)


class DistillDataModule(L.LightningDataModule):
    """Streams built shard sets.

    Args:
        root: directory or URL holding the sets (``<root>/<set>/manifest.json``; s3://, gs://,
            http(s)://, file:// and pipe: as data/urls.py reads them).
        train_sets: set name -> mixing weight (offline mode); weight 0 leaves a set out.
        val_set: the validation set name.
        batch_size: per-device batch size.
        num_workers: loader workers per device.
        samples_per_epoch: nominal epoch (default: the sum of the training sets' samples); an
            epoch is ``samples_per_epoch // (batch_size * world_size)`` batches on every rank.
        mode: ``"offline"`` (stored teacher labels), ``"online"`` (raw images) or ``"hybrid"``
            (the offline sets; those ``labels_from`` marks ``live`` labelled live).
        online: online mode's ``data.online`` section: the raw ``set``, ``crop_size``,
            ``crop_scale``.
        flip: random horizontal flip of training images.
        seed: base seed for shard sampling, mixing and flips (distinct per rank and worker).
        shuffle_buffer: training samples shuffled across shards.
        val_batch_size: validation batch size (default: ``batch_size``).
        recipe_check: recipe sets (data/recipes.py): skip a replayed view whose pixels differ
            from the ones the teacher labelled (digest check); ``False`` trains on it anyway.
        decode: where stored JPEGs are decoded: ``cpu`` (loader workers), ``gpu`` (workers
            pass bytes, the training device decodes each batch: data/batch_decode.py) or
            ``auto`` (``gpu`` when training on CUDA). Recipe views and online crops are
            always rendered in the workers.
        labels_from: hybrid mode: set name -> ``"stored"`` or ``"live"`` (unnamed sets:
            stored); at least one set with a positive weight must be live.

    ``python -m distill`` passes every argument from conf/train.yaml's ``data`` section.
    """

    def __init__(
        self,
        root: str | Path,
        train_sets: dict[str, float],
        val_set: str,
        *,
        batch_size: int,
        num_workers: int,
        samples_per_epoch: int | None = None,
        mode: str = "offline",
        online: OnlineConfig | None = None,
        flip: bool = True,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        val_batch_size: int | None = None,
        recipe_check: bool = True,
        decode: str = "auto",
        labels_from: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        if decode not in DECODE_CHOICES:
            raise ValueError(f"data.decode must be one of {DECODE_CHOICES}, got {decode!r}")
        if mode not in ("offline", "online", "hybrid"):
            raise ValueError(f"data mode must be 'offline', 'online' or 'hybrid', got {mode!r}")
        if mode == "online" and online is None:
            raise ValueError("online mode needs data.online: the raw image set to stream")
        self.root = urls.check(root)
        sets = dict(train_sets) if mode != "online" else {online.set: 1.0}
        bad = {k: w for k, w in sets.items() if not w >= 0}
        if bad:
            raise ValueError(f"mixing weights must be >= 0 (0 drops a set), got {bad}")
        self.train_sets = {k: w for k, w in sets.items() if w > 0}
        if not self.train_sets:
            raise ValueError(f"no training set has a positive weight: {sets}")
        self.live = live_sets(self.train_sets, labels_from) if mode == "hybrid" else []
        self.val_set, self.mode, self.online = val_set, mode, online
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_batch_size = val_batch_size or batch_size
        self.samples_per_epoch, self.flip, self.seed = samples_per_epoch, flip, seed
        self.shuffle_buffer = shuffle_buffer
        self.recipe_check, self.decode = recipe_check, decode
        self.manifests: dict[str, Manifest] = {}
        self._warned_cpu_decode = False

    def prepare(self) -> None:
        """Read every manifest and check the sets agree on classes (clear errors, no work)."""
        if self.manifests:
            return
        names = [*self.train_sets, self.val_set]
        missing = [n for n in names if not _set_exists(urls.join(self.root, n))]
        if missing:
            raise ManifestError(
                f"shard sets {missing} not found under {urls.redact(self.root)}: build them with "
                "python -m data.build (the distill app does this for the embedded default)"
            )
        manifests = {n: read_manifest(urls.join(self.root, n)) for n in names}
        for n, m in manifests.items():
            _require_samples(n, m)
        self.manifests = manifests
        classes = {n: m.num_classes for n, m in self.manifests.items()}
        if len(set(classes.values())) != 1:
            raise ManifestError(f"shard sets disagree on the class count: {classes}")
        if self.mode != "online":
            stored = [n for n in self.train_sets if n not in self.live]
            unlabelled = [n for n in stored if not self.manifests[n].data.get("labels")]
            if unlabelled:
                raise ManifestError(
                    f"{self.mode} training needs teacher labels on its stored sets; "
                    f"{unlabelled} have none"
                    + (" (data.labels_from can mark them live)" if self.mode == "hybrid" else "")
                )
        for n in self.train_sets:
            _warn_on_version_drift(n, self.manifests[n])

    def setup(self, stage: str | None = None) -> None:
        self.prepare()
        self._check_val_size(self._world()[1])

    def _check_val_size(self, world: int) -> None:
        """Every rank must get a validation sample, or the ranks' collectives stop matching."""
        n = self.manifests[self.val_set].num_samples
        if n < world:
            raise ManifestError(
                f"validation set {self.val_set} ({urls.join(self.root, self.val_set)}) has {n} samples, "
                f"fewer than the {world} devices: each device needs at least one; use a larger "
                "validation set or fewer devices"
            )

    @property
    def num_classes(self) -> int:
        self.prepare()
        return self.manifests[self.val_set].num_classes

    @property
    def classes(self) -> list[str]:
        self.prepare()
        return self.manifests[self.val_set].classes

    @property
    def image_size(self) -> int:
        self.prepare()
        if self.mode == "online":
            return self.online.crop_size
        return int(next(iter(self.manifests.values())).data["image_size"])

    def decode_stage(self) -> str:
        """``data.decode`` resolved for this trainer's device: ``cpu`` or ``gpu``."""
        trainer = getattr(self, "trainer", None)
        device = trainer.strategy.root_device.type if trainer is not None else "cpu"
        if self.decode == "auto":
            return "gpu" if device == "cuda" else "cpu"
        if self.decode == "gpu" and device != "cuda" and not self._warned_cpu_decode:
            self._warned_cpu_decode = True
            log.warning(
                "data.decode=gpu on a %s trainer: each batch is decoded in the main process "
                "(slower than data.decode=cpu; meant for checking the GPU data path)",
                device,
            )
        return self.decode

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def steps_per_epoch(self, world: int | None = None) -> int:
        self.prepare()
        world = world or self._world()[1]
        total = self.samples_per_epoch or sum(
            self.manifests[n].num_samples for n in self.train_sets
        )
        steps = total // (self.batch_size * world)
        if steps < 1:
            raise ValueError(
                f"samples_per_epoch={total} is less than one batch ({self.batch_size}) per rank "
                f"(world size {world})"
            )
        return steps

    def train_dataloader(self):
        self.prepare()
        rank, world = self._world()
        online = None
        if self.mode == "online":
            online = {"size": self.image_size, "scale": tuple(self.online.crop_scale)}
        pipeline = train_pipeline(
            [self.manifests[n].urls() for n in self.train_sets],
            list(self.train_sets.values()),
            rank,
            world,
            self.batch_size,
            self.num_classes,
            self.seed,
            self.flip,
            self.shuffle_buffer,
            online,
            list(self.train_sets),
            [self.manifests[n].data.get("recipe") for n in self.train_sets],
            self.recipe_check,
            self.decode_stage(),
            [n in self.live for n in self.train_sets],
        )
        steps = self.steps_per_epoch(world)
        return loader(pipeline, self.num_workers, self.seed, rank, steps, self._start_method())

    def val_dataloader(self):
        self.prepare()
        rank, world = self._world()
        self._check_val_size(world)
        m = self.manifests[self.val_set]
        shards = m.urls()
        counts = [m.shard_counts[urls.name(u)] for u in shards]
        pipeline = val_pipeline(
            shards,
            rank,
            world,
            self.val_batch_size,
            self.num_classes,
            bool(m.data.get("labels")),
            counts,
            self.decode_stage(),
        )
        # every rank reads every validation shard; its workers split them
        workers = min(self.num_workers, len(shards))
        return loader(pipeline, workers, self.seed, rank, start_method=self._start_method())

    def _start_method(self) -> str | None:
        """Loader workers reading through the remote transport start fresh (``spawn``): its
        runtime, already running in this process, does not survive a fork."""
        return "spawn" if remote.uses_runtime(self.root) else None


def _set_exists(set_dir: str) -> bool:
    """A local set is a directory (its manifest may be missing: read_manifest says so); a remote
    one exists when its manifest does (object stores have no directories)."""
    if urls.is_remote(set_dir):
        return remote.exists(urls.join(set_dir, "manifest.json"))
    return urls.local_path(set_dir).is_dir()


def live_sets(train_sets: dict[str, float], labels_from: dict[str, str] | None) -> list[str]:
    """The training sets (positive weight) whose labels come from the live teacher.

    Raises ``ValueError`` naming ``data.labels_from`` for a value other than stored/live and for
    a hybrid run with no live set.
    """
    labels_from = dict(labels_from or {})
    bad = {k: v for k, v in labels_from.items() if v not in LABEL_SOURCES}
    if bad:
        raise ValueError(f"mode=hybrid: data.labels_from values must be stored or live, got {bad}")
    live = [n for n in train_sets if labels_from.get(n) == "live" and train_sets[n] > 0]
    if not live:
        marked = sorted(k for k, v in labels_from.items() if v == "live")
        raise ValueError(
            "mode=hybrid needs at least one training set marked live in data.labels_from "
            f"(marked live: {marked or 'none'}; training sets with a weight: "
            f"{sorted(k for k, w in train_sets.items() if w > 0)}), e.g. "
            "data.labels_from.mixup=live"
        )
    return live


def _warn_on_version_drift(name: str, m: Manifest) -> None:
    """A recipe set rendered by other library versions may not replay exactly: say so."""
    recipe = m.data.get("recipe")
    if not recipe:
        return
    drift = version_drift(recipe.get("versions", {}))
    if drift:
        changes = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in sorted(drift.items()))
        log.warning(
            "recipe set %s (%s) was rendered with other library versions (%s): views that do not "
            "replay exactly are skipped; check with python -m data.verify %s",
            name,
            m.set_dir,
            changes,
            m.set_dir,
        )


def _require_samples(name: str, m: Manifest) -> None:
    """A set with no sample would stream nothing (training) or validate nothing: refuse it now."""
    if m.num_samples > 0:
        return
    examples = "; ".join(f"{ref}: {why}" for ref, why in m.skipped_examples[:3])
    raise ManifestError(
        f"shard set {name} ({m.set_dir}) holds 0 samples according to {urls.name(m.path)}"
        + (f" ({m.skipped} inputs skipped while building it, e.g. {examples})" if m.skipped else "")
        + "; fix its source and rebuild it with python -m data.build"
    )
