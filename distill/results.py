"""What a run records: each rank's record, the summary ``results.json`` holds, written whole."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from data import urls
from distill.config import TrainConfig
from distill.summary import build_skips, data_teachers, teacher_label, teacher_top1

log = logging.getLogger(__name__)


def write_rank_record(out: Path, trainer, metrics: dict, module) -> None:
    """Every rank records what it did: equal steps and identical (synced) metrics across ranks."""
    rank_dir = out / "ranks"
    rank_dir.mkdir(parents=True, exist_ok=True)
    (rank_dir / f"rank{trainer.global_rank}.json").write_text(
        json.dumps(
            {
                "global_step": trainer.global_step,
                "metrics": metrics,
                "world_size": trainer.world_size,
                "skipped": module.skipped_summary(),
                "teacher_cost": module.cost.state(),  # this rank's
            }
        )
    )


def run_summary(c: TrainConfig, dm, result: dict, out: Path) -> dict:
    """The results of the distillation run as ``results.json`` records them."""
    d, root = c.data, urls.check(c.data.root)
    sets = [*dm.train_sets, d.val_set]
    labelled_by = data_teachers(root, sets)
    top1 = {"top1": None, "samples": 0, "skipped": []}
    try:
        top1 = teacher_top1(root, d.val_set)
    except Exception as e:  # the run's own results matter more than the teacher's figure
        log.warning("teacher top-1 not computed: %s", e)
    return {
        "student": c.student.name,
        "mode": c.mode,
        **({"live_teacher": result["live_teacher"]} if "live_teacher" in result else {}),
        "teacher_cost": result["module"].teacher_cost(),
        "student_metrics": result["metrics"],
        "distill_wall_s": result["wall_s"],
        "global_step": result["global_step"],
        "teacher": teacher_label(c.mode, c.teacher.spec, labelled_by),
        "data_teachers": labelled_by,
        "teacher_top1": top1["top1"],
        "val_set_dir": val_location(root, d.val_set),  # where the report reads it
        "skipped": {
            "training": result["module"].skipped_summary(),
            "build": build_skips(root, sets),
            "teacher_top1": top1["skipped"],
        },
        "best_checkpoint": result["best_checkpoint"],
        "last_checkpoint": result["last_checkpoint"],
        "output_dir": str(out),
    }


def val_location(root: str, val_set: str) -> str:
    """The validation set's absolute location (a URL as it is)."""
    where = urls.join(root, val_set)
    return where if urls.is_remote(where) else str(Path(where).resolve())


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary name (never a half-written results file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
