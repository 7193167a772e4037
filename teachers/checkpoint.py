"""Teacher checkpoints written by this project: safetensors weights plus what the teacher is.

The metadata records the spec, the class count and names, the preprocessing and the measured
accuracy, so ``create_teacher(path)`` rebuilds the same teacher with nothing else to remember.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from common.weights import (
    CheckpointError,
    checkpoint_format,
    safetensors_metadata,
    save_safetensors_atomic,
)
from teachers.preprocess import Preprocessing
from teachers.zoo import BuiltModel

FORMAT = "mnv4-distill-teacher/1"


def save_teacher(
    built: BuiltModel, spec: str, path: str | Path, metrics: dict[str, float] | None = None
) -> Path:
    """Write ``built`` as a teacher checkpoint (temp file, then rename: never half-written)."""
    meta = {
        "format": FORMAT,
        "spec": spec,
        "num_classes": str(built.num_classes),
        "classes": json.dumps(built.classes),
        "preprocessing": json.dumps(built.preprocessing.to_dict()),
        "metrics": json.dumps(metrics or {}),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return save_safetensors_atomic(built.model.state_dict(), path, meta)


def is_teacher_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a ``.safetensors`` teacher checkpoint written by ``save_teacher``."""
    path = Path(path)
    if checkpoint_format(path) != "safetensors" or not path.is_file():
        return False
    try:
        return safetensors_metadata(path).get("format") == FORMAT
    except CheckpointError:
        return False


def read_teacher_metadata(path: str | Path) -> dict:
    """The metadata of a teacher checkpoint; ``CheckpointError`` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {path}")
    if checkpoint_format(path) != "safetensors":
        raise CheckpointError(
            f"{path} is not a teacher checkpoint written by this project (.safetensors with "
            "teacher metadata); for other weights pass a spec and the file, e.g. "
            f"create_teacher('timm:<model>', checkpoint='{path}')"
        )
    meta = safetensors_metadata(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} has no teacher metadata (format {meta.get('format')!r}, expected {FORMAT!r}); "
            f"pass its architecture: create_teacher('timm:<model>', checkpoint='{path}')"
        )
    return {
        "spec": meta["spec"],
        "num_classes": int(meta["num_classes"]),
        "classes": json.loads(meta["classes"]),
        "preprocessing": Preprocessing.from_dict(json.loads(meta["preprocessing"])),
        "metrics": json.loads(meta.get("metrics", "{}")),
        "created": meta.get("created"),
    }
