"""Teacher checkpoints written by this project: safetensors weights plus what the teacher is.

The metadata records the spec, the class count and names, the preprocessing and the measured
accuracy, so ``create_teacher(path)`` rebuilds the same teacher with nothing else to remember.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from students.weights import CheckpointError
from teachers.preprocess import Preprocessing
from teachers.zoo import BuiltModel

FORMAT = "mnv4-distill-teacher/1"


def save_teacher(
    built: BuiltModel, spec: str, path: str | Path, metrics: dict[str, float] | None = None
) -> Path:
    """Write ``built`` as a teacher checkpoint (temp file, then rename: never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "spec": spec,
        "num_classes": str(built.num_classes),
        "classes": json.dumps(built.classes),
        "preprocessing": json.dumps(built.preprocessing.to_dict()),
        "metrics": json.dumps(metrics or {}),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in built.model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def read_teacher_metadata(path: str | Path) -> dict:
    """The metadata of a teacher checkpoint; ``CheckpointError`` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {path}")
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"{path} is not a teacher checkpoint written by this project (.safetensors with "
            "teacher metadata); for other weights pass a spec and the file, e.g. "
            f"create_teacher('timm:<model>', checkpoint='{path}')"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"cannot read teacher checkpoint {path}: {e}") from e
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
