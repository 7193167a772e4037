"""Student registry: exact names -> spec tables, and the ``create_model`` entry point."""

from __future__ import annotations

from pathlib import Path

from students.mnv4 import AttentionKind, MobileNetV4
from students.specs import SPECS
from students.weights import (
    CheckpointError,
    ExportMeta,
    classes_in,
    load_state_dict_strict,
    read_export_meta,
    read_mnv4_state_dict,
)


def list_models() -> list[str]:
    """Names accepted by ``create_model``: ``mnv4_conv_s|m|l`` and ``mnv4_hybrid_m|l``."""
    return list(SPECS)


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
) -> MobileNetV4:
    """Build an MNv4 student by name, optionally loading weights.

    Args:
        name: one of ``list_models()``; may be left out when ``checkpoint`` is a project export,
            whose metadata names its student.
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

    Example:
        >>> model = create_model("mnv4_conv_s", num_classes=10)
        >>> again = create_model(checkpoint="export/mnv4_conv_s.safetensors")  # doctest: +SKIP
    """
    meta = state = None
    if checkpoint is not None:
        meta = read_export_meta(checkpoint)
        state = read_mnv4_state_dict(checkpoint)
        name = _name_from(name, meta, checkpoint)
        num_classes = _classes_from(num_classes, meta, state, checkpoint)
    if name not in SPECS:
        raise ValueError(f"unknown student {name!r}; available: {', '.join(list_models())}")
    spec = SPECS[name]
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
                f"one of {', '.join(list_models())}"
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
