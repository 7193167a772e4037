"""Loading a run's student, the one way the report and the runtime export both do it.

A run leaves its student in two forms: the exported ``.safetensors`` (weights plus the metadata
that names the model, its classes and its normalisation) and Lightning's ``.ckpt`` (the whole
module's state: the student's weights under ``student.`` and the normalisation buffers).
"""

from __future__ import annotations

from pathlib import Path

import torch

from students.weights import ExportMeta


def student_from_export(path: str | Path) -> tuple[torch.nn.Module, ExportMeta | None]:
    """The exported student (CPU, eval) and its export metadata (None for a foreign file)."""
    import students
    from students.weights import read_export_meta

    meta = read_export_meta(path)
    return students.create_model(checkpoint=path).eval(), meta


def student_from_checkpoint(
    ckpt: str | Path, student: str, num_classes: int
) -> tuple[torch.nn.Module, tuple[float, ...] | None, tuple[float, ...] | None]:
    """The raw student (CPU, eval) of a training checkpoint and its mean/std (None when the
    checkpoint has no normalisation buffers)."""
    import students

    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    model = students.create_model(student, num_classes=num_classes)
    weights = {k[len("student.") :]: v for k, v in state.items() if k.startswith("student.")}
    model.load_state_dict(weights)
    if "mean" in state and "std" in state:
        mean = tuple(state["mean"].flatten().tolist())
        return model.eval(), mean, tuple(state["std"].flatten().tolist())
    return model.eval(), None, None
