"""The extra set's selection: the teacher scores the unlabelled pool, then a class balance.

Rank 0 scores the pool once and stores ``selection.json`` in the set; the other ranks wait for
that file, so every rank builds its shards from the same selection.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from common.images import BadImage, center_view
from data.augment import to_chw
from data.extra import Selection, balance
from data.set_store import SetStore
from data.sources import Source
from data.variants import Variant
from teachers import FrozenTeacher


@torch.no_grad()
def score_pool(
    teacher: FrozenTeacher,
    source: Source,
    variant: Variant,
    batch_size: int,
    progress: bool,
    skipped: list[tuple[str, str]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's top probability and class per pool image (-1: unreadable, appended to
    ``skipped``), on the eval crop at the variant's size."""
    size, crop_pct = variant.size, variant.cfg.score_crop_pct
    probs_top, cls_top = (
        torch.zeros(len(source.items)),
        torch.full((len(source.items),), -1, dtype=torch.long),
    )
    batch, idx = [], []
    bar = tqdm(
        total=len(source.items),
        desc=f"{variant.name}: scoring pool",
        disable=not progress,
        unit="img",
    )

    def flush():
        p = teacher.probs(torch.stack(batch))
        top = p.max(1)
        probs_top[idx], cls_top[idx] = top.values.cpu(), top.indices.cpu()
        bar.update(len(batch))
        batch.clear()
        idx.clear()

    for i, item in enumerate(source.items):
        try:
            img = source.load(item, 4 * size)
        except BadImage as e:
            skipped.append((item.ref, str(e)))
            bar.update(1)
            continue
        batch.append(center_view(to_chw(img), size, crop_pct))
        idx.append(i)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    bar.close()
    return probs_top, cls_top


def pool_selection(
    place: SetStore,
    variant: Variant,
    source: Source,
    teacher: FrozenTeacher | None,
    batch_size: int,
    progress: bool,
    rank: int,
    wait_s: float,
    skipped: list[tuple[str, str]],
) -> Selection:
    """The set's stored selection, else (rank 0) scored and balanced now, else (other ranks)
    waited for. Pool images that fail to load are appended to ``skipped``."""
    data = place.read_json("selection.json")
    if data is not None:
        entries = [tuple(e) for e in data["entries"]]
        return Selection(
            entries,
            *({int(k): v for k, v in data[n].items()} for n in ("before", "kept", "after")),
            data["target"],
            data["empty_classes"],
        )
    if rank != 0:  # rank 0 scores the pool once; the others wait for its selection
        where = place.file("selection.json")
        place.wait_for("selection.json", wait_s, f"waited too long for {where} from rank 0")
        return pool_selection(
            place, variant, source, teacher, batch_size, progress, rank, wait_s, skipped
        )
    if teacher is None:
        raise ValueError(f"variant {variant.name!r} (extra) needs a teacher to score")
    before = len(skipped)
    top_prob, top_cls = score_pool(teacher, source, variant, batch_size, progress, skipped)
    scoring_skips = skipped[before:]
    sel = balance(
        top_prob,
        top_cls,
        teacher.num_classes,
        variant.cfg.threshold,
        variant.cfg.per_class,
    )
    place.write_json(
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
