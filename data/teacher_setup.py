"""A teacher from its Hydra config node, training and caching one on data sources when missing.

This composes teachers with data sources, so it lives in data/ (which may import teachers), where
both entry points that need it (``data.build`` and ``data.provision``) may import it.

The ``teacher`` section (conf/teacher/*.yaml, typed by data/config.py ``TeacherConfig``):
``spec``, ``checkpoint``, ``pretrained``, ``channels_last``, ``autocast`` and, for domains
without a published teacher, ``train_if_missing`` with ``recipe``, ``train_on`` and
``validate_on`` (source names) and ``cache_path``, where a trained teacher is cached. Training happens only when ``checkpoint`` is that cache path and the file is missing: a
``teacher.checkpoint`` the user set to a path that does not exist is a mistake to report (a
mistyped path must not start hours of training a new teacher).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from common.folders import SourceImages
from data.config import TeacherConfig
from teachers.checkpoint import is_teacher_checkpoint
from teachers.frozen import FrozenTeacher
from teachers.load import create_teacher

log = logging.getLogger(__name__)


class MissingTeacherError(FileNotFoundError):
    """``teacher.checkpoint`` names no file and no teacher may be trained there."""


def _same_path(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def teacher_needs_training(cfg: TeacherConfig) -> bool:
    """Whether the configured teacher must be trained first (its sources are then needed).

    Raises ``MissingTeacherError`` for a checkpoint that does not exist and is not the cache
    path a teacher may be trained to, before any source is opened.
    """
    ckpt, cache = cfg.checkpoint, cfg.cache_path
    if ckpt is None or Path(ckpt).is_file():
        return False
    if cfg.train_if_missing and cache is not None and _same_path(ckpt, cache):
        return True
    if cfg.train_if_missing:
        todo = (
            f"fix the path, or drop the teacher.checkpoint override to train and cache a "
            f"{cfg.spec} teacher at {cache}"
        )
    else:
        todo = (
            f"set it to local weights for {cfg.spec} or to a teacher written by "
            "python -m teachers.train"
        )
    raise MissingTeacherError(f"teacher.checkpoint={ckpt} does not exist; {todo}")


def teacher_from_config(
    cfg: TeacherConfig, sources: Mapping | None = None, num_classes: int | None = None
) -> FrozenTeacher:
    """Build the configured frozen teacher; train it first if ``train_if_missing`` says so."""
    spec, ckpt = cfg.spec, cfg.checkpoint
    autocast = None if cfg.autocast is None else getattr(torch, cfg.autocast.value)
    kw = dict(channels_last=cfg.channels_last, autocast_dtype=autocast)
    if ckpt is not None:
        path = Path(ckpt)
        if teacher_needs_training(cfg):
            train_missing_teacher(cfg, sources or {}, path)
        if is_teacher_checkpoint(path):
            return create_teacher(path, num_classes=num_classes, **kw)
        return create_teacher(spec, checkpoint=path, num_classes=num_classes, **kw)
    return create_teacher(spec, num_classes=num_classes, pretrained=cfg.pretrained, **kw)


def train_missing_teacher(cfg: TeacherConfig, sources: Mapping, out: Path) -> dict:
    """Train the teacher of ``cfg`` on its ``train_on`` source and write it to ``out``."""
    from teachers.train import train_teacher  # Lightning: only when training

    for key, name in (("train_on", cfg.train_on), ("validate_on", cfg.validate_on)):
        if name not in sources:
            raise ValueError(
                f"teacher.{key}={name!r} must name one of the sources {sorted(sources)}"
            )
    if cfg.recipe is None:
        raise ValueError(f"teacher.recipe is not set: it says how to train a {cfg.spec} teacher")
    train_src, val_src = sources[cfg.train_on], sources[cfg.validate_on]
    if not train_src.classes:
        raise ValueError(f"source {cfg.train_on!r} has no labels to train a teacher on")
    log.info(
        "teacher %s: no checkpoint at %s, training one on %s",
        cfg.spec,
        out,
        train_src.describe(),
    )
    result = train_teacher(
        cfg.spec,
        SourceImages(train_src).usable(),
        None,
        SourceImages(val_src).usable(),
        None,
        len(train_src.classes),
        out,
        cfg.recipe,
        classes=list(train_src.classes),
        pretrained=cfg.pretrained,
    )
    log.info("teacher %s: val top-1 %.4f -> %s", cfg.spec, result["top1"], out)
    return result
