"""``create_teacher``: a spec (or a project checkpoint, or a list of them) -> ``FrozenTeacher``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from common.weights import checkpoint_format, load_state_dict_strict, read_state_dict
from teachers.checkpoint import read_teacher_metadata
from teachers.frozen import FrozenTeacher, TeacherInfo
from teachers.zoo import SCHEMES, BuiltModel, build_model, parse_spec


def _is_spec(spec: str) -> bool:
    return spec.partition(":")[0] in SCHEMES and ":" in spec


def load_member(
    spec: str | Path,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    pretrained: bool = True,
) -> tuple[str, BuiltModel, dict]:
    """Build one teacher network: a zoo spec with optional weights, or a project checkpoint."""
    spec_str = str(spec)
    if _is_spec(spec_str):
        return spec_str, build_model(spec_str, num_classes, checkpoint, pretrained), {}
    if not Path(spec_str).exists() and checkpoint_format(spec_str) != "safetensors":
        parse_spec(spec_str)  # neither a spec nor a checkpoint: raises the spec-format error
    if checkpoint is not None:
        raise ValueError(
            f"teacher {spec_str!r} is a checkpoint path; pass either a spec plus checkpoint= or "
            "a checkpoint written by this project alone"
        )
    meta = read_teacher_metadata(spec_str)
    if num_classes is not None and num_classes != meta["num_classes"]:
        raise ValueError(
            f"teacher checkpoint {spec_str} has {meta['num_classes']} classes but "
            f"{num_classes} were asked for (the student's/dataset's class count)"
        )
    built = build_model(meta["spec"], meta["num_classes"], checkpoint=None, pretrained=False)
    load_state_dict_strict(built.model, read_state_dict(spec_str), spec_str, meta["spec"])
    built.preprocessing = meta["preprocessing"]
    built.classes = meta["classes"]
    return meta["spec"], built, meta["metrics"]


def create_teacher(
    spec: str | Path | Sequence[str | Path],
    checkpoint: str | Path | Sequence[str | Path | None] | None = None,
    num_classes: int | None = None,
    *,
    pretrained: bool = True,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> FrozenTeacher:
    """A frozen teacher from the zoo, a project checkpoint, or an ensemble of them.

    Args:
        spec: ``timm:<name>``, ``torchvision:<name>``, ``mnv4:<student>``, the path of a teacher
            checkpoint written by this project, or a list of these (an ensemble that averages
            probabilities).
        checkpoint: local weights for a zoo spec (one per member for an ensemble); safetensors
            preferred, pickles loaded with ``weights_only=True``. Keys, shapes and the class count
            are checked before any work starts.
        num_classes: the class count the teacher must have (e.g. the dataset's).
        pretrained: fetch published weights when no checkpoint is given.
        channels_last: run the teacher in channels_last memory (faster on GPU and most CPUs).
        autocast_dtype: e.g. ``torch.bfloat16`` to run its forward under autocast.

    Example:
        >>> teacher = create_teacher("timm:convnext_large.fb_in22k_ft_in1k")  # doctest: +SKIP
        >>> probs = teacher.probs(images_in_0_1)  # doctest: +SKIP
    """
    specs = [spec] if isinstance(spec, str | Path) else list(spec)
    if not specs:
        raise ValueError("an ensemble needs at least one teacher spec")
    ckpts = (
        list(checkpoint)
        if isinstance(checkpoint, Sequence) and not isinstance(checkpoint, str)
        else [checkpoint] * len(specs)
    )
    if len(ckpts) != len(specs):
        raise ValueError(f"{len(specs)} teacher specs but {len(ckpts)} checkpoints")
    loaded = [load_member(s, c, num_classes, pretrained) for s, c in zip(specs, ckpts, strict=True)]
    counts = {b.num_classes for _, b, _ in loaded}
    if len(counts) != 1:
        detail = ", ".join(f"{s}: {b.num_classes}" for s, b, _ in loaded)
        raise ValueError(f"ensemble members disagree on the class count ({detail})")
    names = [s for s, _, _ in loaded]
    info = TeacherInfo(
        spec=names[0] if len(names) == 1 else names,
        num_classes=counts.pop(),
        classes=loaded[0][1].classes,
        metrics=loaded[0][2] if len(loaded) == 1 else None,
    )
    return FrozenTeacher(
        [b.model for _, b, _ in loaded],
        [b.preprocessing for _, b, _ in loaded],
        info,
        channels_last=channels_last,
        autocast_dtype=autocast_dtype,
    )
