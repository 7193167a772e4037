"""Student registry: exact names -> spec tables, and the ``create_model`` entry point."""

from __future__ import annotations

from pathlib import Path

from students.mnv4 import AttentionKind, MobileNetV4
from students.specs import SPECS
from students.weights import load_checkpoint


def list_models() -> list[str]:
    """Names accepted by ``create_model``: ``mnv4_conv_s|m|l`` and ``mnv4_hybrid_m|l``."""
    return list(SPECS)


def create_model(
    name: str,
    num_classes: int = 1000,
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
        name: one of ``list_models()``.
        num_classes: classifier outputs (0 for a features-only model).
        drop_rate: dropout before the classifier; ``None`` uses the paper's value for the model
            (Tab. 10: 0.3 for Conv-S, 0.2 for the others).
        drop_path_rate: peak stochastic depth (default 0, as in the distillation recipe).
        checkpoint: ours- or timm-layout weights (``.safetensors`` or ``.pth``, loaded with
            ``weights_only=True``); key or shape mismatches raise a ``CheckpointError`` naming them.
        attention: ``"mqa"``, ``"mhsa"`` or ``"none"`` (hybrids; for the attention ablation).
        in_chans: input channels.
        channels_last: channels_last weights and activations (faster on CPU and GPU).

    Example:
        >>> model = create_model("mnv4_conv_s", num_classes=10)
    """
    if name not in SPECS:
        raise ValueError(f"unknown student {name!r}; available: {', '.join(list_models())}")
    spec = SPECS[name]
    model = MobileNetV4(
        spec,
        num_classes=num_classes,
        drop_rate=spec.drop_rate if drop_rate is None else drop_rate,
        drop_path_rate=drop_path_rate,
        attention=attention,
        in_chans=in_chans,
        channels_last=channels_last,
    )
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model
