"""Building the mixed distillation dataset: augment, JPEG round trip, teacher-label, write shards.

For each configured variant (conf/variant/*.yaml) this plans the units (source image x replica)
deterministically, splits them into fixed shards, and builds the shards this process owns
(shard i goes to rank i % world; ``torchrun --nproc_per_node=N -m data.build`` runs N of them).
Finished shards are kept, so a rerun resumes; a set is sealed by its manifest once all of its
shards exist. Bad inputs are skipped, counted and reported by file, never a crash mid-build.

``SetBuilder`` orchestrates; each job has its own module: the set's identity hash
(data/set_identity.py), the extra set's pool scoring and selection (data/pool_selection.py), the
shard writers (data/pixel_shards.py, data/recipe_build.py), storage accounting
(data/set_storage.py) and the manifest that seals a set (data/set_manifest.py).

Entry point: ``python -m data.build`` (data/build.py, the Hydra app over ``conf/build.yaml``).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from data import urls
from data.config import (
    BuildConfig,
    InpaintVariantConfig,
    Store,
    TeacherConfig,
    VariantConfig,
    typed,
    variant_config,
)
from data.extra import Selection
from data.pixel_shards import render_pixel_shard
from data.pool_selection import pool_selection
from data.recipe_build import plan_groups, render_recipe_shard, view_codec
from data.recipes import ViewCodec
from data.set_identity import check_identity, set_identity
from data.set_manifest import seal_set, shard_present
from data.set_storage import storage_line, storage_mode
from data.set_store import SetStore
from data.shards import clean_partials, read_manifest, shard_name, write_shard
from data.sources import Source
from data.variants import ExtraVariant, Variant, make_variant
from teachers import FrozenTeacher, soft_labels

log = logging.getLogger(__name__)


@dataclass
class SetReport:
    """What one build of one set did."""

    name: str
    written: int = 0
    reused_shards: int = 0
    built_shards: int = 0
    samples: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    views: int = 0
    images_per_s: float = 0.0  # views rendered (and labelled) per second
    teacher_images_per_s: float = 0.0
    complete: bool = False
    balance: Selection | None = None
    storage: dict | None = None  # the manifest's "storage" once the set is sealed

    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(r.split(":")[0] for _, r in set(self.skipped)))


class SetBuilder:
    """Builds one shard set (one variant over one source) with one teacher."""

    def __init__(
        self,
        variant: Variant,
        source: Source,
        teacher: FrozenTeacher | None,
        out_dir: Path,
        cfg: BuildConfig,
        rank: int = 0,
        world: int = 1,
        teacher_cfg: TeacherConfig | None = None,
    ) -> None:
        self.variant, self.source, self.teacher = variant, source, teacher
        self.teacher_cfg = teacher_cfg
        self.cfg, self.rank, self.world = cfg, rank, world
        # local sets are written in place; remote ones staged in self.set_dir, then uploaded
        self.place = SetStore(out_dir, variant.name)
        self.set_dir = self.place.dir
        self.shard_size, self.top_k, self.temperature = cfg.shard_size, cfg.top_k, cfg.temperature
        self.batch_size, self.num_workers = cfg.batch_size, cfg.num_workers
        self.quality = variant.cfg.jpeg_quality
        self.progress = cfg.progress
        self.recipe = storage_mode(variant.kind, cfg.store) == Store.recipe
        self.raw_size = variant.cfg.raw_size if self.recipe else None

    # -- identity and resume ------------------------------------------------------------------
    def identity(self) -> dict:
        return set_identity(
            self.variant,
            self.source,
            self.teacher,
            self.top_k,
            self.temperature,
            self.shard_size,
            self.recipe,
            self.raw_size,
            self._pack(),
        )

    # -- building -----------------------------------------------------------------------------
    def _label(self, images: torch.Tensor | list[torch.Tensor]):
        """The teacher's ``soft_labels`` of one batch, per image, and the seconds they took."""
        if self.teacher is None:
            return [None] * len(images), [None] * len(images), 0.0
        start = time.perf_counter()
        top_k = int(self.top_k) if self.top_k else None
        batch = images if isinstance(images, torch.Tensor) else torch.stack(images)
        labels = soft_labels(
            self.teacher, batch, self.temperature, top_k, batch_size=len(batch)
        )  # its fp16 copy to the CPU waits for the device, so the time is the teacher's
        elapsed = time.perf_counter() - start
        if labels.indices is None:
            return list(labels.probs.numpy()), [None] * len(images), elapsed
        return list(labels.probs.numpy()), list(labels.indices.int().numpy()), elapsed

    def _build_shard(self, index: int, part: list, bar) -> float:
        """Render, label and write shard ``index`` (pixel units or recipe groups), then publish."""
        if self.recipe:
            samples, rec, images, views, teacher_s = render_recipe_shard(
                self.variant,
                self.source,
                part,
                self.codec(),
                self.raw_size,
                self.quality,
                self.batch_size,
                self.num_workers,
                self._label,
                bar,
            )
        else:
            samples, rec, images, views, teacher_s = render_pixel_shard(
                self.variant,
                self.source,
                part,
                self.quality,
                self.batch_size,
                self.num_workers,
                self._label,
                bar,
            )
        record = {"shard": shard_name(self.variant.name, index), **rec}
        write_shard(self.set_dir, self.variant.name, index, samples, record)
        self.place.publish(shard_name(self.variant.name, index))
        self.report.skipped.extend(rec["skipped"])
        self.report.written += images
        self.report.views += views
        return teacher_s

    def _plan(self) -> list:
        """Pixel sets: one unit per view. Recipe sets: one group of source images per sample."""
        plan = (
            plan_groups(self.variant, self.source, self._pack())
            if self.recipe
            else self.variant.units(self.source)
        )
        if not plan:
            raise ValueError(f"variant {self.variant.name!r} has no units to build")
        return plan

    def _pack(self) -> int:
        """Source images per recipe sample: the variant's ``pack``, at most a shard's worth (a
        mixup sample is its partner group whatever the shard size)."""
        if self.variant.group > 1:
            return self.variant.group
        return max(1, min(self.variant.pack, self.shard_size))

    def _per_shard(self) -> int:
        """Tar samples per shard: ``shard_size`` source images (pixel sets: views)."""
        return max(1, self.shard_size // self._pack()) if self.recipe else self.shard_size

    def _views(self, plan: list) -> int:
        if not self.recipe:
            return len(plan)
        return sum(len(g.items) for g in plan) * self.variant.replicas

    def codec(self) -> ViewCodec:
        """The record layout of this recipe set's views."""
        return view_codec(self.variant, self.teacher, self.top_k)

    def run(self, overwrite: bool = False) -> SetReport:
        """Build this process's shards of the set under its build lock (data/set_store.py)."""
        wait_s = self.cfg.wait_s
        with self.place.lock(self.rank, self.world, wait_s):
            return self._run(overwrite)

    def _run(self, overwrite: bool) -> SetReport:
        self.report = SetReport(self.variant.name)
        self.report.skipped.extend(self.source.skipped.entries)
        h = check_identity(self.place, self.identity(), self.rank, overwrite)
        if self.rank == 0:
            clean_partials(self.set_dir)
        if isinstance(self.variant, ExtraVariant):
            sel = pool_selection(
                self.place,
                self.variant,
                self.source,
                self.teacher,
                self.batch_size,
                self.progress,
                self.rank,
                self.cfg.wait_s,
                self.report.skipped,
            )
            self.variant.selection = sel.entries
            if self.rank == 0:
                log.info(
                    "%s class balance:\n%s", self.variant.name, sel.report(self.source.classes)
                )
            self.report.balance = sel
        plan = self._plan()
        per_shard = self._per_shard()
        n_shards = -(-len(plan) // per_shard)
        mine = [i for i in range(n_shards) if i % self.world == self.rank]
        present = self.place.names()
        todo = [i for i in mine if not shard_present(present, self.variant.name, i)]
        self.report.reused_shards = len(mine) - len(todo)
        todo_views = sum(self._views(plan[i * per_shard : (i + 1) * per_shard]) for i in todo)
        bar = tqdm(
            total=todo_views,
            desc=f"{self.variant.name} (rank {self.rank}/{self.world})",
            unit="view",
            disable=not self.progress,
        )
        start, teacher_s = time.perf_counter(), 0.0
        for i in todo:
            teacher_s += self._build_shard(i, plan[i * per_shard : (i + 1) * per_shard], bar)
            self.report.built_shards += 1
        bar.close()
        elapsed = time.perf_counter() - start
        if todo_views and elapsed > 0:
            self.report.images_per_s = self.report.views / elapsed
            self.report.teacher_images_per_s = self.report.views / teacher_s if teacher_s else 0.0
        storage = seal_set(
            self.place,
            self.variant,
            self.source,
            self.teacher,
            self.teacher_cfg,
            n_shards,
            h,
            self.codec() if self.recipe else None,
            self.raw_size,
            self.top_k,
            self.temperature,
        )
        self.report.complete = storage is not None
        if storage is not None:
            self.report.storage = storage
        return self.report


def dist_env() -> tuple[int, int, int]:
    """(rank, world, local rank) of this builder process as torchrun sets them (1 process: 0,1,0).

    Reading the environment is right here: this is the launched process itself, not a data
    loader worker (Lightning's launcher does not set ``RANK``, and a spawned worker does not
    inherit the process group).
    """
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def build_sets(
    variants: Mapping[str, VariantConfig | Mapping],
    sources: dict[str, Source],
    teacher: FrozenTeacher | None,
    out_dir: str | Path,
    cfg: BuildConfig | Mapping,
    rank: int = 0,
    world: int = 1,
    overwrite: bool = False,
    teacher_cfg: TeacherConfig | None = None,
) -> list[SetReport]:
    """Build every variant in ``variants`` (name -> variant config naming its ``source``).

    ``cfg`` is the ``build`` section; ``teacher_cfg`` the teacher's, recorded in recipe
    manifests so ``data.verify`` can rerun that teacher. Plain mappings (tests, benchmarks) are
    typed here, a bad value naming its key.
    """
    cfg = typed(BuildConfig, cfg, "build")
    reports = []
    for name, vcfg in variants.items():
        if not isinstance(vcfg, VariantConfig):
            vcfg = variant_config(name, vcfg)
        source = sources[vcfg.source]
        variant = make_variant(vcfg, _inpainter(vcfg))
        needs_teacher = vcfg.label
        if needs_teacher and teacher is None:
            raise ValueError(f"variant {name!r} is labelled by a teacher but none is configured")
        if teacher is not None and source.classes and teacher.num_classes != len(source.classes):
            raise ValueError(
                f"teacher {teacher.info.spec} has {teacher.num_classes} classes but source "
                f"{source.describe()} has {len(source.classes)}: they must label the same classes"
            )
        builder = SetBuilder(
            variant,
            source,
            teacher if needs_teacher else None,
            out_dir,
            cfg,
            rank,
            world,
            teacher_cfg,
        )
        reports.append(builder.run(overwrite))
    return reports


def _inpainter(vcfg: VariantConfig):
    target = vcfg.inpainter if isinstance(vcfg, InpaintVariantConfig) else None
    if not target:
        return None
    from hydra.utils import instantiate

    return instantiate(target)


def summary(reports: list[SetReport], out_dir: str | Path) -> str:
    """A printable end-of-build summary: written, reused, skipped and why (by file), storage."""
    lines = [f"{'set':<12}{'views':>9}{'shards new/kept':>17}{'views/s':>9}{'teacher img/s':>15}"]
    for r in reports:
        lines.append(
            f"{r.name:<12}{r.views:>9}{f'{r.built_shards}/{r.reused_shards}':>17}"
            f"{r.images_per_s:>9.1f}{r.teacher_images_per_s:>15.1f}"
            + ("" if r.complete else "  (waiting for other ranks' shards)")
        )
    for r in reports:
        skipped = sorted(set(r.skipped))
        if skipped:
            lines.append(f"{r.name}: skipped {len(skipped)} input(s) {r.skip_counts()}")
            lines += [f"  {ref}: {reason}" for ref, reason in skipped[:50]]
            if len(skipped) > 50:
                lines.append(f"  ... and {len(skipped) - 50} more")
    for r in reports:
        if r.complete:
            m = read_manifest(urls.join(out_dir, r.name))
            lines.append(f"{r.name}: {m.num_samples} samples in {len(m.shard_counts)} shards")
            if "storage" in m.data:
                lines.append("  " + storage_line(r.name, m.data["storage"]))
    return "\n".join(lines)
