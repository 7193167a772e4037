"""Building the mixed distillation dataset: augment, JPEG round trip, teacher-label, write shards.

For each configured variant (conf/variant/*.yaml) this plans the units (source image x replica)
deterministically, splits them into fixed shards, and builds the shards this process owns
(shard i goes to rank i % world; ``torchrun --nproc_per_node=N -m data.build`` runs N of them).
Finished shards are kept, so a rerun resumes; a set is sealed by its manifest once all of its
shards exist. Bad inputs are skipped, counted and reported by file, never a crash mid-build.

Entry point: ``python -m data.build`` (data/build.py, the Hydra app over ``conf/build.yaml``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from common.images import BadImage, center_view, jpeg_round_trip
from data import urls
from data.augment import to_chw
from data.extra import Selection, balance
from data.labels import encode_soft_label
from data.randaug import RandAugment
from data.recipe_build import Group, GroupAssembler, plan_groups, recipe_loader, storage_of
from data.recipes import RECIPE_VERSION, ViewCodec, render_versions, tar_bytes
from data.set_store import SetStore
from data.shards import (
    clean_partials,
    config_hash,
    read_manifest,
    shard_name,
    write_shard,
)
from data.sources import Source
from data.variants import ExtraVariant, Unit, Variant, make_variant
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


class UnitImages(Dataset):
    """Makes the units of one shard in DataLoader workers: augment, then JPEG round trip."""

    def __init__(self, variant: Variant, source: Source, units: list[Unit], quality: int) -> None:
        self.variant, self.source, self.units, self.quality = variant, source, units, quality
        self.max_side = int(variant.cfg.get("max_side", 4 * variant.size))

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


def _sample(unit: Unit, made: dict, variant: Variant, probs, indices) -> dict:
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


class SetBuilder:
    """Builds one shard set (one variant over one source) with one teacher."""

    def __init__(
        self,
        variant: Variant,
        source: Source,
        teacher: FrozenTeacher | None,
        out_dir: Path,
        cfg: dict,
        rank: int = 0,
        world: int = 1,
        teacher_cfg: dict | None = None,
    ) -> None:
        self.variant, self.source, self.teacher = variant, source, teacher
        self.teacher_cfg = teacher_cfg
        self.cfg, self.rank, self.world = cfg, rank, world
        # local sets are written in place; remote ones staged in self.set_dir, then uploaded
        self.place = SetStore(out_dir, variant.name)
        self.set_dir = self.place.dir
        self.shard_size = int(cfg.get("shard_size", 500))  # conf/train.yaml, conf/build.yaml
        self.top_k = cfg.get("top_k")
        self.temperature = float(cfg.get("temperature", 1.0))
        self.batch_size = int(cfg.get("batch_size", 64))
        self.num_workers = int(cfg.get("num_workers", 0))
        self.quality = int(variant.cfg.get("jpeg_quality", 90))
        self.progress = bool(cfg.get("progress", True))
        self.store = str(cfg.get("store", "pixels"))
        if self.store not in STORES:
            raise ValueError(f"build.store must be one of {STORES}, got {self.store!r}")
        # plain sets (validation, raw images) have one fixed view each: always stored as pixels
        self.recipe = self.store == "recipe" and variant.kind != "plain"
        self.raw_size = int(variant.cfg.get("raw_size") or round(variant.size * 256 / 224))

    # -- identity and resume ------------------------------------------------------------------
    def identity(self) -> dict:
        return {
            "variant": {
                k: v
                for k, v in self.variant.cfg.items()
                if self.recipe or k not in RECIPE_ONLY_KEYS
            },
            "source": self.source.describe(),
            "items": len(self.source.items),
            "teacher": None if self.teacher is None else self.teacher.info.spec,
            "top_k": self.top_k,
            "temperature": self.temperature,
            "shard_size": self.shard_size,
            # only recipe sets name their storage: pixel sets built before it keep their hash
            **(
                {
                    "store": "recipe",
                    "raw_size": self.raw_size,
                    "recipe_version": RECIPE_VERSION,
                    "pack": self._pack(),
                }
                if self.recipe
                else {}
            ),
        }

    def _check_identity(self, overwrite: bool) -> str:
        ident = self.identity()
        h = config_hash(ident)
        old = self.place.read_json("build.json")
        if old is not None and old.get("config_hash") != h:
            if not overwrite:
                raise ValueError(
                    f"{urls.redact(self.place.url)} holds shards built from a different config "
                    f"({old.get('config_hash')} vs {h}); pass overwrite=true to rebuild it or "
                    "choose another out_dir"
                )
            self.place.clear()
        self.set_dir.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            self.place.write_json("build.json", {"config_hash": h, "config": ident})
        return h

    # -- the extra set's selection ------------------------------------------------------------
    @torch.no_grad()
    def _score_pool(self) -> tuple[torch.Tensor, torch.Tensor]:
        scorer = self.teacher
        size, crop_pct = self.variant.size, float(self.variant.cfg.get("score_crop_pct", 0.875))
        probs_top, cls_top = (
            torch.zeros(len(self.source.items)),
            torch.full((len(self.source.items),), -1, dtype=torch.long),
        )
        batch, idx = [], []
        bar = tqdm(
            total=len(self.source.items),
            desc=f"{self.variant.name}: scoring pool",
            disable=not self.progress,
            unit="img",
        )

        def flush():
            p = scorer.probs(torch.stack(batch))
            top = p.max(1)
            probs_top[idx], cls_top[idx] = top.values.cpu(), top.indices.cpu()
            bar.update(len(batch))
            batch.clear()
            idx.clear()

        for i, item in enumerate(self.source.items):
            try:
                img = self.source.load(item, 4 * size)
            except BadImage as e:
                self.report.skipped.append((item.ref, str(e)))
                bar.update(1)
                continue
            batch.append(center_view(to_chw(img), size, crop_pct))
            idx.append(i)
            if len(batch) == self.batch_size:
                flush()
        if batch:
            flush()
        bar.close()
        return probs_top, cls_top

    def _selection(self) -> Selection:
        data = self.place.read_json("selection.json")
        if data is not None:
            entries = [tuple(e) for e in data["entries"]]
            return Selection(
                entries,
                *({int(k): v for k, v in data[n].items()} for n in ("before", "kept", "after")),
                data["target"],
                data["empty_classes"],
            )
        if self.rank != 0:  # rank 0 scores the pool once; the others wait for its selection
            timeout_s = float(self.cfg.get("wait_s", 24 * 3600))
            where = self.place.file("selection.json")
            self.place.wait_for(
                "selection.json", timeout_s, f"waited too long for {where} from rank 0"
            )
            return self._selection()
        if self.teacher is None:
            raise ValueError(f"variant {self.variant.name!r} (extra) needs a teacher to score")
        before = len(self.report.skipped)
        top_prob, top_cls = self._score_pool()
        scoring_skips = self.report.skipped[before:]
        sel = balance(
            top_prob,
            top_cls,
            self.teacher.num_classes,
            float(self.variant.cfg.get("threshold", 0.3)),
            self.variant.cfg.get("per_class"),
        )
        self.place.write_json(
            "selection.json",
            {
                "entries": sel.entries,
                "before": sel.before,
                "kept": sel.kept,
                "after": sel.after,
                "target": sel.target,
                "empty_classes": sel.empty_classes,
                "skipped": scoring_skips,  # pool images that failed to load: kept for the manifest
            },
        )
        return sel

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

    def _build_shard(self, index: int, units: list[Unit], bar) -> float:
        loader = DataLoader(
            UnitImages(self.variant, self.source, units, self.quality),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=_collate,
        )
        samples, skipped, teacher_s = [], [], 0.0
        for made in loader:
            good = [m for m in made if "jpg" in m]
            for m in made:
                if "jpg" not in m:
                    skipped.append((m["ref"], m["reason"]))
            if good:
                probs, indices, secs = self._label([m["image"] for m in good])
                teacher_s += secs
                for m, p, i in zip(good, probs, indices, strict=True):
                    samples.append(_sample(units[m["unit"]], m, self.variant, p, i))
            bar.update(len(made))
        record = {"shard": shard_name(self.variant.name, index), "skipped": skipped}
        write_shard(self.set_dir, self.variant.name, index, samples, record)
        self.place.publish(shard_name(self.variant.name, index))
        self.report.skipped.extend(skipped)
        self.report.written += len(samples)
        self.report.views += len(samples)
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
        labelled = self.teacher is not None
        return ViewCodec(
            self.variant.kind,
            int(getattr(self.variant, "num_ops", 0)),
            self.teacher.num_classes if labelled else 0,
            ("topk" if self.top_k else "full") if labelled else None,
            int(self.top_k) if labelled and self.top_k else None,
        )

    def _build_recipe_shard(self, index: int, groups: list[Group], bar) -> float:
        """Render every view of ``groups``, label them, write records (data/recipe_build.py)."""
        loader = recipe_loader(
            self.variant,
            self.source,
            groups,
            self.raw_size,
            self.quality,
            int(self.variant.cfg.get("max_side", 4 * self.variant.size)),
            self.batch_size,
            self.num_workers,
        )
        assembler = GroupAssembler(self.codec(), self.variant.replicas)
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
            probs, indices, secs = self._label(made["views"])
            teacher_s += secs
            if "pixel_view_bytes" in made:
                pixel_bytes.append(made["pixel_view_bytes"])
            bar.update(len(made["views"]))
            sample = assembler.add(made, probs, indices)
            if sample is not None:
                samples.append(sample)
                n_img = len(made["group"].items)
                sizes["images"] += n_img
                sizes["views"] += n_img * self.variant.replicas
                for k, v in storage_of(sample).items():
                    sizes[k] += v
        record = {
            "shard": shard_name(self.variant.name, index),
            "skipped": skipped,
            **sizes,
            "pixel_view_bytes": [sum(pixel_bytes), len(pixel_bytes)],
        }
        write_shard(self.set_dir, self.variant.name, index, samples, record)
        self.place.publish(shard_name(self.variant.name, index))
        self.report.skipped.extend(skipped)
        self.report.written += sizes["images"]
        self.report.views += sizes["views"]
        return teacher_s

    def run(self, overwrite: bool = False) -> SetReport:
        """Build this process's shards of the set under its build lock (data/set_store.py)."""
        wait_s = float(self.cfg.get("wait_s", 24 * 3600))
        with self.place.lock(self.rank, self.world, wait_s):
            return self._run(overwrite)

    def _complete(self, names: set[str], index: int) -> bool:
        tar = shard_name(self.variant.name, index)
        return tar in names and tar.removesuffix(".tar") + ".json" in names

    def _run(self, overwrite: bool) -> SetReport:
        self.report = SetReport(self.variant.name)
        self.report.skipped.extend(self.source.skipped.entries)
        h = self._check_identity(overwrite)
        if self.rank == 0:
            clean_partials(self.set_dir)
        if isinstance(self.variant, ExtraVariant):
            sel = self._selection()
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
        todo = [i for i in mine if not self._complete(present, i)]
        self.report.reused_shards = len(mine) - len(todo)
        todo_views = sum(self._views(plan[i * per_shard : (i + 1) * per_shard]) for i in todo)
        bar = tqdm(
            total=todo_views,
            desc=f"{self.variant.name} (rank {self.rank}/{self.world})",
            unit="view",
            disable=not self.progress,
        )
        start, teacher_s = time.perf_counter(), 0.0
        build = self._build_recipe_shard if self.recipe else self._build_shard
        for i in todo:
            teacher_s += build(i, plan[i * per_shard : (i + 1) * per_shard], bar)
            self.report.built_shards += 1
        bar.close()
        elapsed = time.perf_counter() - start
        if todo_views and elapsed > 0:
            self.report.images_per_s = self.report.views / elapsed
            self.report.teacher_images_per_s = self.report.views / teacher_s if teacher_s else 0.0
        self.report.complete = self._seal(n_shards, h)
        return self.report

    def _storage(self, records: list[dict]) -> dict:
        """Bytes per stored view (and per source image for recipe sets), from the shard records."""
        total_bytes = sum(int(r.get("bytes", 0)) for r in records)
        if not self.recipe:
            views = sum(r["samples"] for r in records)
            return {
                "mode": "pixels",
                "replicas": self.variant.replicas,
                "views": views,
                "bytes_per_view": round(total_bytes / views, 1) if views else None,
            }
        views = sum(r["views"] for r in records)
        images = sum(r["images"] for r in records)
        px_sum = sum(r["pixel_view_bytes"][0] for r in records)
        px_n = sum(r["pixel_view_bytes"][1] for r in records)
        codec = self.codec()
        label = 0
        if codec.label == "full":
            label = tar_bytes(len(encode_soft_label(np.zeros(codec.num_classes))))
        elif codec.label == "topk":
            label = tar_bytes(len(encode_soft_label(np.zeros(codec.top_k), np.zeros(codec.top_k))))
        # a pixel set stores per view: the JPEG, the label, the class and a json (~1 block each)
        pixel_view = (tar_bytes(round(px_sum / px_n)) + label + 2 * 1024) if px_n else None
        return {
            "mode": "recipe",
            "replicas": self.variant.replicas,
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

    def _recipe_spec(self) -> dict:
        """What the loader and ``data.verify`` need to render this set's views again."""
        tcfg = self.teacher_cfg or {}
        return {
            "version": RECIPE_VERSION,
            "variant": {k: v for k, v in self.variant.cfg.items() if k != "inpainter"},
            "codec": self.codec().spec(),
            "ops": list(RandAugment.OPS),
            "raw_size": self.raw_size,
            "versions": render_versions(),
            "teacher": {
                "spec": None if self.teacher is None else self.teacher.info.spec,
                "checkpoint": tcfg.get("checkpoint"),
                "pretrained": tcfg.get("pretrained", True),
                "temperature": self.temperature,
                "top_k": self.top_k,
            },
        }

    def _skip_summary(self, records: list[dict]) -> dict:
        """Everything this set left out: source listing, pool scoring and every shard's units.

        Read from disk (shard records, selection.json), so it is whole whichever rank seals the
        set and however many runs built its shards.
        """
        entries = list(self.source.skipped.entries)
        selection = self.place.read_json("selection.json")
        if isinstance(self.variant, ExtraVariant) and selection is not None:
            entries += selection.get("skipped", [])
        for r in records:
            entries += r["skipped"]
        return _skip_summary_of(entries)

    def _seal(self, n_shards: int, h: str) -> bool:
        """Write the manifest once every shard of the set exists (any rank may be last)."""
        names = [shard_name(self.variant.name, i) for i in range(n_shards)]
        present = self.place.names()
        if not all(self._complete(present, i) for i in range(n_shards)):
            return False
        records = [self.place.read_json(n.removesuffix(".tar") + ".json") for n in names]
        count = "images" if self.recipe else "samples"  # recipe sets: one view per image visit
        teacher = self.teacher
        manifest = {
            "name": self.variant.name,
            "kind": self.variant.kind,
            "num_samples": sum(r[count] for r in records),
            "shards": {n: r[count] for n, r in zip(names, records, strict=True)},
            "classes": self.source.classes or (teacher.info.classes if teacher else None),
            "num_classes": len(self.source.classes or [])
            or (teacher.num_classes if teacher else 0),
            "image_size": self.variant.size,
            "teacher": None if teacher is None else teacher.info.spec,
            "labels": None
            if teacher is None
            else {
                "format": "topk" if self.top_k else "full",
                "top_k": self.top_k,
                "temperature": self.temperature,
            },
            "source": self.source.describe(),
            "config_hash": h,
            **self._skip_summary(records),
            "storage": self._storage(records),
        }
        if self.recipe:
            manifest["recipe"] = self._recipe_spec()
        if self.source.classes and teacher and teacher.num_classes != len(self.source.classes):
            raise ValueError(
                f"teacher {teacher.info.spec} has {teacher.num_classes} classes, source "
                f"{self.source.describe()} has {len(self.source.classes)}"
            )
        self.place.write_json("manifest.json", manifest)  # last: the set is complete
        self.report.storage = manifest["storage"]
        return True


STORES = ("pixels", "recipe")
RECIPE_ONLY_KEYS = (
    "raw_size",
    "group",
    "pack",
)  # left out of a pixel set's identity (hash unchanged)
SKIP_EXAMPLES = 20


def _skip_summary_of(entries: list[tuple[str, str]]) -> dict:
    """Manifest fields for what a build left out: distinct (input, reason) pairs."""
    distinct = list(dict.fromkeys((str(ref), str(why)) for ref, why in entries))
    return {
        "skipped": len(distinct),
        "skipped_by_reason": dict(Counter(why.split(":")[0] for _, why in distinct)),
        "skipped_examples": [list(e) for e in distinct[:SKIP_EXAMPLES]],
    }


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
    variants: dict[str, dict],
    sources: dict[str, Source],
    teacher: FrozenTeacher | None,
    out_dir: str | Path,
    cfg: dict,
    rank: int = 0,
    world: int = 1,
    overwrite: bool = False,
    teacher_cfg: dict | None = None,
) -> list[SetReport]:
    """Build every variant in ``variants`` (name -> variant cfg naming its ``source``).

    ``cfg`` is the ``build`` section (``store``: ``pixels`` or ``recipe``); ``teacher_cfg`` the
    teacher's config, recorded in recipe manifests so ``data.verify`` can rerun that teacher.
    """
    reports = []
    for name, vcfg in variants.items():
        vcfg = {**vcfg, "name": vcfg.get("name") or name}
        source = sources[vcfg["source"]]
        variant = make_variant(vcfg, _inpainter(vcfg))
        needs_teacher = vcfg.get("label", True)
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


def _inpainter(vcfg: dict):
    target = vcfg.get("inpainter")
    if not target:
        return None
    from hydra.utils import instantiate

    return instantiate(target)


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
