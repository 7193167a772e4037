"""A set's manifest: written last, once every shard exists, so its presence seals the set.

It records what a loader needs (shard counts, classes, label format, storage), what the build
left out and, for recipe sets, what ``data.verify`` needs to render the views again.
"""

from __future__ import annotations

from collections import Counter

from data.config import TeacherConfig
from data.randaug import RandAugment
from data.recipes import RECIPE_VERSION, ViewCodec, render_versions
from data.set_storage import set_storage
from data.set_store import SetStore
from data.shards import shard_name
from data.sources import Source
from data.variants import ExtraVariant, Variant
from teachers import FrozenTeacher

SKIP_EXAMPLES = 20


def shard_present(names: set[str], set_name: str, index: int) -> bool:
    """Whether shard ``index`` and its record are both among the set's file ``names``."""
    tar = shard_name(set_name, index)
    return tar in names and tar.removesuffix(".tar") + ".json" in names


def skip_summary_of(entries: list[tuple[str, str]]) -> dict:
    """Manifest fields for what a build left out: distinct (input, reason) pairs."""
    distinct = list(dict.fromkeys((str(ref), str(why)) for ref, why in entries))
    return {
        "skipped": len(distinct),
        "skipped_by_reason": dict(Counter(why.split(":")[0] for _, why in distinct)),
        "skipped_examples": [list(e) for e in distinct[:SKIP_EXAMPLES]],
    }


def set_skips(place: SetStore, variant: Variant, source: Source, records: list[dict]) -> dict:
    """Everything a set left out: source listing, pool scoring and every shard's units.

    Read from disk (shard records, selection.json), so it is whole whichever rank seals the
    set and however many runs built its shards.
    """
    entries = list(source.skipped.entries)
    selection = place.read_json("selection.json")
    if isinstance(variant, ExtraVariant) and selection is not None:
        entries += selection.get("skipped", [])
    for r in records:
        entries += r["skipped"]
    return skip_summary_of(entries)


def recipe_spec(
    variant: Variant,
    codec: ViewCodec,
    raw_size: int,
    teacher: FrozenTeacher | None,
    teacher_cfg: TeacherConfig | None,
    temperature: float,
    top_k: int | None,
) -> dict:
    """What the loader and ``data.verify`` need to render a recipe set's views again."""
    return {
        "version": RECIPE_VERSION,
        "variant": {k: v for k, v in variant.cfg.record().items() if k != "inpainter"},
        "codec": codec.spec(),
        "ops": list(RandAugment.OPS),
        "raw_size": raw_size,
        "versions": render_versions(),
        "teacher": {
            "spec": None if teacher is None else teacher.info.spec,
            "checkpoint": None if teacher_cfg is None else teacher_cfg.checkpoint,
            "pretrained": True if teacher_cfg is None else teacher_cfg.pretrained,
            "temperature": temperature,
            "top_k": top_k,
        },
    }


def seal_set(
    place: SetStore,
    variant: Variant,
    source: Source,
    teacher: FrozenTeacher | None,
    teacher_cfg: TeacherConfig | None,
    n_shards: int,
    config_hash: str,
    codec: ViewCodec | None,
    raw_size: int,
    top_k: int | None,
    temperature: float,
) -> dict | None:
    """Write the manifest once every shard of the set exists (any rank may be last); its
    storage figures, or None while shards are missing. ``codec``: a recipe set's, None for
    pixels."""
    recipe = codec is not None
    names = [shard_name(variant.name, i) for i in range(n_shards)]
    present = place.names()
    if not all(shard_present(present, variant.name, i) for i in range(n_shards)):
        return None
    records = [place.read_json(n.removesuffix(".tar") + ".json") for n in names]
    count = "images" if recipe else "samples"  # recipe sets: one view per image visit
    manifest = {
        "name": variant.name,
        "kind": variant.kind,
        "num_samples": sum(r[count] for r in records),
        "shards": {n: r[count] for n, r in zip(names, records, strict=True)},
        "classes": source.classes or (teacher.info.classes if teacher else None),
        "num_classes": len(source.classes or []) or (teacher.num_classes if teacher else 0),
        "image_size": variant.size,
        "teacher": None if teacher is None else teacher.info.spec,
        "labels": None
        if teacher is None
        else {
            "format": "topk" if top_k else "full",
            "top_k": top_k,
            "temperature": temperature,
        },
        "source": source.describe(),
        "config_hash": config_hash,
        **set_skips(place, variant, source, records),
        "storage": set_storage(records, variant.replicas, codec),
    }
    if recipe:
        manifest["recipe"] = recipe_spec(
            variant, codec, raw_size, teacher, teacher_cfg, temperature, top_k
        )
    if source.classes and teacher and teacher.num_classes != len(source.classes):
        raise ValueError(
            f"teacher {teacher.info.spec} has {teacher.num_classes} classes, source "
            f"{source.describe()} has {len(source.classes)}"
        )
    place.write_json("manifest.json", manifest)  # last: the set is complete
    return manifest["storage"]
