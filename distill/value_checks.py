"""The composed config as ``TrainConfig``, its values checked before any work: the sections check
their own values (``__post_init__``, distill/config.py); here the one conversion, the build
values, and the live teacher a run needs. A bad value is a one-line usage error naming the key."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from data.teacher_setup import MissingTeacherError, teacher_needs_training
from distill.cli_checks import UsageError, one_line
from distill.config import LIVE_TEACHER_MODES, TrainConfig

STORES = ("pixels", "recipe")  # build.store (data/recipes.py)


def checked_config(cfg: DictConfig) -> TrainConfig:
    """``cfg`` resolved into ``TrainConfig`` (the one conversion of a run) and checked."""
    try:
        c = OmegaConf.to_object(cfg)
    except ValueError as e:
        raise UsageError(one_line(e)) from None
    check_build(c)
    check_live_teacher(c)
    return c


def check_build(c: TrainConfig) -> None:
    """The ``build`` values a run's provisioning uses."""
    b = c.build
    size = b.batch_size
    if not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
        raise UsageError(f"build.batch_size must be a positive integer, got {size!r}")
    if b.store not in STORES:
        raise UsageError(f"build.store must be pixels or recipe, got {b.store!r}")


def check_live_teacher(c: TrainConfig) -> None:
    """Online and hybrid runs need a teacher with weights: say so before any work."""
    mode, t = c.mode, c.teacher
    if mode not in LIVE_TEACHER_MODES:
        return
    if t.checkpoint is None and not t.pretrained:
        raise UsageError(
            f"mode={mode} runs the teacher in the training step, but teacher.checkpoint is null "
            f"and teacher.pretrained=false (random weights): set teacher.checkpoint to the "
            f"weights of {t.spec}"
        )
    try:
        teacher_needs_training(t)
    except MissingTeacherError as e:
        raise UsageError(f"mode={mode} runs the teacher in the training step: {e}") from None
