"""Student registry: exact names -> spec tables, and the ``create_model`` entry point.

The five built-in students are ``SPECS``; a spec file (``students.spec_file``, e.g. the
``searched.yaml`` that ``python -m nas`` writes) registers one more name for this process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from students.mnv4 import AttentionKind, MobileNetV4
from students.spec_file import load_spec_file, spec_from_dict
from students.specs import SPECS, ModelSpec
from students.weights import (
    CheckpointError,
    ExportMeta,
    classes_in,
    load_state_dict_strict,
    read_export_meta,
    read_mnv4_state_dict,
)

_REGISTERED: dict[str, ModelSpec] = {}


def list_models() -> list[str]:
    """The built-in students: ``mnv4_conv_s|m|l`` and ``mnv4_hybrid_m|l`` (``create_model``
    also takes the names of registered spec files)."""
    return list(SPECS)


def register_spec(spec: ModelSpec) -> ModelSpec:
    """Let ``create_model(spec.name)`` build ``spec`` in this process (a spec-file student)."""
    if spec.name in SPECS:
        raise ValueError(
            f"spec {spec.source}: name {spec.name!r} is a built-in student; give it another name"
        )
    _REGISTERED[spec.name] = spec
    return spec


def register_spec_file(path: str | os.PathLike) -> ModelSpec:
    """Read, check (``SpecFileError`` naming the block) and register a spec file."""
    return register_spec(load_spec_file(path))


def registered_spec(name: str) -> ModelSpec | None:
    """The spec registered under ``name`` from a spec file, or ``None``."""
    return _REGISTERED.get(name)


def get_spec(name: str | None) -> ModelSpec:
    """The spec of a built-in or registered student; ``ValueError`` listing the names."""
    spec = SPECS.get(name) or _REGISTERED.get(name)
    if spec is None:
        names = list_models() + sorted(_REGISTERED)
        raise ValueError(
            f"unknown student {name!r}; available: {', '.join(names)} "
            "(or a spec file: create_model(spec_file=...))"
        )
    return spec


def create_model(
    name: str | None = None,
    num_classes: int | None = None,
    drop_rate: float | None = None,
    drop_path_rate: float = 0.0,
    checkpoint: str | Path | None = None,
    *,
    attention: AttentionKind = "mqa",
    in_chans: int = 3,
    channels_last: bool = True,
    spec_file: str | Path | None = None,
) -> MobileNetV4:
    """Build an MNv4 student by name, optionally loading weights.

    Args:
        name: one of ``list_models()`` or a registered spec file's name; may be left out when
            ``checkpoint`` is a project export (its metadata names its student and, for a
            spec-file student, holds its spec) or when ``spec_file`` is given.
        num_classes: classifier outputs (0 for a features-only model). ``None``: the
            checkpoint's (its export metadata, else its classifier's rows), or 1000 without one.
            An explicit value that contradicts the checkpoint is a ``CheckpointError``.
        drop_rate: dropout before the classifier; ``None`` uses the paper's value for the model
            (Tab. 10: 0.3 for Conv-S, 0.2 for the others).
        drop_path_rate: peak stochastic depth (default 0, as in the distillation recipe).
        checkpoint: ours- or timm-layout weights (``.safetensors`` or ``.pth``, loaded with
            ``weights_only=True``; never unpickled); key or shape mismatches raise a
            ``CheckpointError`` naming them.
        attention: ``"mqa"``, ``"mhsa"`` or ``"none"`` (hybrids; for the attention ablation).
        in_chans: input channels.
        channels_last: channels_last weights and activations (faster on CPU and GPU).
        spec_file: a spec file (``students.spec_file``), registered under its own ``name``.

    Example:
        >>> model = create_model("mnv4_conv_s", num_classes=10)
        >>> again = create_model(checkpoint="export/mnv4_conv_s.safetensors")  # doctest: +SKIP
        >>> found = create_model(spec_file="outputs/nas/<date>/searched.yaml")  # doctest: +SKIP
    """
    meta = state = None
    if spec_file is not None:
        spec = register_spec_file(spec_file)
        if name is not None and name != spec.name:
            raise ValueError(f"spec file {spec_file} describes {spec.name!r}, not {name!r}")
        name = spec.name
    if checkpoint is not None:
        meta = read_export_meta(checkpoint)
        state = read_mnv4_state_dict(checkpoint)
        name = _name_from(name, meta, checkpoint)
        num_classes = _classes_from(num_classes, meta, state, checkpoint)
        if meta is not None and meta.spec is not None and name not in SPECS:
            register_spec(spec_from_dict(json.loads(meta.spec), f"{checkpoint} (metadata)"))
    spec = get_spec(name)
    model = MobileNetV4(
        spec,
        num_classes=1000 if num_classes is None else num_classes,
        drop_rate=spec.drop_rate if drop_rate is None else drop_rate,
        drop_path_rate=drop_path_rate,
        attention=attention,
        in_chans=in_chans,
        channels_last=channels_last,
    )
    if state is not None:
        load_state_dict_strict(model, state, str(checkpoint), name)
    return model


def _name_from(name: str | None, meta: ExportMeta | None, path: str | Path) -> str:
    """The student to build: the caller's, checked against the file's metadata when it has one."""
    if meta is None:
        if name is None:
            raise CheckpointError(
                f"{path} has no project export metadata naming its student; pass the name, "
                f"one of {', '.join(list_models())} (or spec_file=)"
            )
        return name
    if name is not None and name != meta.student:
        raise CheckpointError(f"{path} holds {meta.student} weights (export metadata), not {name}")
    return meta.student


def _classes_from(
    num_classes: int | None, meta: ExportMeta | None, state: dict, path: str | Path
) -> int:
    """Classifier size: the caller's, else the file's (metadata first, then the classifier rows).

    An explicit value that contradicts the metadata fails here; one that contradicts a file
    without metadata fails in the strict load, which names the mis-shaped classifier keys.
    """
    if meta is not None and num_classes is not None and num_classes != meta.num_classes:
        raise CheckpointError(
            f"{path} was exported with {meta.num_classes} classes (export metadata) but "
            f"num_classes={num_classes} was passed; leave num_classes out to use the file's"
        )
    if num_classes is not None:
        return num_classes
    return meta.num_classes if meta is not None else classes_in(state)
