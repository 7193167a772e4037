"""A teacher from its Hydra config node, training and caching one when it is missing.

Config keys (conf/teacher/*.yaml): ``spec``, ``checkpoint``, ``pretrained``, ``channels_last``,
``autocast`` and, for domains without a published teacher, ``train_if_missing`` with ``recipe``,
``train_on`` and ``validate_on`` (source names).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from teachers.checkpoint import FORMAT
from teachers.frozen import FrozenTeacher
from teachers.load import create_teacher

log = logging.getLogger("teachers")


def _is_project_checkpoint(path: Path) -> bool:
    if path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except Exception:
        return False


def teacher_from_config(
    cfg: Mapping, sources: Mapping | None = None, num_classes: int | None = None
) -> FrozenTeacher:
    """Build the configured frozen teacher; train it first if ``train_if_missing`` says so."""
    spec, ckpt = cfg["spec"], cfg.get("checkpoint")
    autocast = {None: None, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        cfg.get("autocast")
    ]
    kw = dict(channels_last=bool(cfg.get("channels_last", False)), autocast_dtype=autocast)
    if ckpt is not None:
        path = Path(ckpt)
        if not path.is_file():
            if not cfg.get("train_if_missing"):
                raise FileNotFoundError(
                    f"teacher checkpoint {path} not found; set teacher.checkpoint to a local "
                    f"weights file for {spec}, or teacher.train_if_missing=true to train one"
                )
            train_missing_teacher(cfg, sources or {}, path)
        if _is_project_checkpoint(path):
            return create_teacher(path, num_classes=num_classes, **kw)
        return create_teacher(spec, checkpoint=path, num_classes=num_classes, **kw)
    return create_teacher(
        spec, num_classes=num_classes, pretrained=cfg.get("pretrained", True), **kw
    )


def train_missing_teacher(cfg: Mapping, sources: Mapping, out: Path) -> dict:
    """Train the teacher of ``cfg`` on its ``train_on`` source and write it to ``out``."""
    from data.sources import SourceImages
    from teachers.train import TeacherRecipe, train_teacher

    for key in ("train_on", "validate_on"):
        if cfg.get(key) not in sources:
            raise ValueError(
                f"teacher.{key}={cfg.get(key)!r} must name one of the sources {sorted(sources)}"
            )
    train_src, val_src = sources[cfg["train_on"]], sources[cfg["validate_on"]]
    if not train_src.classes:
        raise ValueError(f"source {cfg['train_on']!r} has no labels to train a teacher on")
    recipe = TeacherRecipe(
        **{
            k: (tuple(v) if isinstance(v, list) else v)
            for k, v in dict(cfg.get("recipe", {})).items()
        }
    )
    log.info(
        "teacher %s: no checkpoint at %s, training one on %s",
        cfg["spec"],
        out,
        train_src.describe(),
    )
    result = train_teacher(
        cfg["spec"],
        SourceImages(train_src).usable(),
        None,
        SourceImages(val_src).usable(),
        None,
        len(train_src.classes),
        out,
        recipe,
        classes=list(train_src.classes),
        pretrained=bool(cfg.get("pretrained", False)),
    )
    log.info("teacher %s: val top-1 %.4f -> %s", cfg["spec"], result["top1"], out)
    return result
