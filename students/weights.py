"""Loading MNv4 weights safely: ours or timm's layout, from ``.safetensors`` or ``.pth``.

Our module names equal timm's, so ``convert_timm_state_dict`` only removes the wrappers that
training code adds around a state_dict and checks it against the timm layout; the strict key and
shape check (nothing missing or unexpected, every shape exact) happens when the weights are
loaded into a model. Format-neutral reading, strict loading and atomic writes are
common/weights.py's; this module adds what is MNv4- and export-specific.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from common.weights import (
    CheckpointError,
    checkpoint_format,
    load_state_dict_strict,
    read_state_dict,
    safetensors_metadata,
    strip_wrapper_prefixes,
)

EXPORT_KEY = "export_format"  # not "format": safetensors' own writers already use that key
EXPORT_FORMAT = "mnv4-distill/1"
WEIGHT_KINDS = ("ema", "raw", "random-init", "external")


@dataclass(frozen=True)
class ExportMeta:
    """What an exported file holds, stored as string pairs in safetensors and ONNX metadata.

    A consumer needs the class names, input size and normalisation to use the weights; kept in
    the file they cannot drift away from it. ``weights`` says which weights these are: the
    student's EMA, the raw student, an untrained random init, or an external checkpoint
    (``source`` names it). ``mean``/``std`` apply to RGB in [0, 1]: ``(x / 255 - mean) / std``.
    ``dynamic_hw`` is ONNX-only: whether height and width are dynamic inputs. ``spec`` is the
    architecture as spec-file JSON (``students.spec_file``) for a student that is not built in
    (one found by ``python -m nas``), filled in from this process's registry when left out, so
    ``create_model(checkpoint=...)`` rebuilds such a student from the file alone.
    """

    student: str
    num_classes: int
    resolution: int
    weights: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] | None = None
    source: str | None = None
    val_top1: float | None = None
    dynamic_hw: bool | None = None
    spec: str | None = None

    def __post_init__(self) -> None:
        if self.weights not in WEIGHT_KINDS:
            raise ValueError(f"weights must be one of {WEIGHT_KINDS}, got {self.weights!r}")
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(
                f"{len(self.classes)} class names for a {self.num_classes}-class {self.student}"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values, got {self.mean} and {self.std}")

    def to_strings(self) -> dict[str, str]:
        """The string key/value pairs both file formats store (lists as JSON)."""
        out = {
            EXPORT_KEY: EXPORT_FORMAT,
            "student": self.student,
            "num_classes": str(self.num_classes),
            "resolution": str(self.resolution),
            "weights": self.weights,
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
        }
        if self.classes is not None:
            out["classes"] = json.dumps(list(self.classes))
        if self.source is not None:
            out["source"] = self.source
        if self.val_top1 is not None:
            out["val_top1"] = repr(float(self.val_top1))
        if self.dynamic_hw is not None:
            out["dynamic_hw"] = "true" if self.dynamic_hw else "false"
        spec = self.spec if self.spec is not None else _registered_spec_json(self.student)
        if spec is not None:
            out["spec"] = spec
        return out

    @classmethod
    def from_strings(cls, data: Mapping[str, str], origin: str) -> ExportMeta:
        """Parse ``to_strings`` output; ``CheckpointError`` names ``origin`` and the bad key."""
        if data.get(EXPORT_KEY) != EXPORT_FORMAT:
            raise CheckpointError(
                f"{origin}: export metadata {EXPORT_KEY}={data.get(EXPORT_KEY)!r}, "
                f"expected {EXPORT_FORMAT!r}"
            )
        try:
            return cls(
                student=_need(data, "student"),
                num_classes=int(_need(data, "num_classes")),
                resolution=int(_need(data, "resolution")),
                weights=_need(data, "weights"),
                mean=_floats(_need(data, "mean")),
                std=_floats(_need(data, "std")),
                classes=_strings(data["classes"]) if "classes" in data else None,
                source=data.get("source"),
                val_top1=float(data["val_top1"]) if "val_top1" in data else None,
                dynamic_hw=_bool(data["dynamic_hw"]) if "dynamic_hw" in data else None,
                spec=data.get("spec"),
            )
        except (ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"{origin}: invalid export metadata: {e}") from e


def _registered_spec_json(student: str) -> str | None:
    """The spec-file JSON of a registered (not built-in) student, else ``None``."""
    from students.registry import registered_spec
    from students.spec_file import spec_to_dict

    spec = registered_spec(student)
    return None if spec is None else json.dumps(spec_to_dict(spec), separators=(",", ":"))


def _need(data: Mapping[str, str], key: str) -> str:
    if key not in data:
        raise KeyError(f"missing key {key!r}")
    return data[key]


def _floats(text: str) -> tuple[float, ...]:
    values = json.loads(text)
    if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
        raise ValueError(f"expected a JSON list of numbers, got {text!r}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"non-finite value in {text!r}")
    return tuple(float(v) for v in values)


def _strings(text: str) -> tuple[str, ...]:
    values = json.loads(text)
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"expected a JSON list of strings, got {text[:80]!r}")
    return tuple(values)


def _bool(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError(f"expected 'true' or 'false', got {text!r}")
    return text == "true"


def read_export_meta(path: str | Path) -> ExportMeta | None:
    """The project metadata of a ``.safetensors`` file, or ``None`` when it has none.

    Only the JSON header is read (nothing is unpickled). Files from timm or other tools have no
    ``export_format`` key and give ``None``; so do ``.pth`` files, which carry no metadata.
    """
    path = Path(path)
    if checkpoint_format(path) != "safetensors":
        return None
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    header = safetensors_metadata(path)
    return ExportMeta.from_strings(header, str(path)) if EXPORT_KEY in header else None


def classes_in(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Classifier outputs of an MNv4 state_dict (0 when it has no classifier: features only)."""
    weight = state_dict.get("classifier.weight")
    return int(weight.shape[0]) if weight is not None else 0


def mean_std_tuple(values: torch.Tensor | Sequence[float]) -> tuple[float, ...]:
    """A [1, 3, 1, 1] buffer or a sequence as a short float tuple (float32 noise rounded off)."""
    flat = values.flatten().tolist() if isinstance(values, torch.Tensor) else list(values)
    return tuple(round(float(v), 6) for v in flat)


def convert_timm_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a timm ``mobilenetv4_*`` state_dict (or ours) onto our layout.

    The layouts are the same by construction; this strips DDP/compile/Lightning wrapper prefixes
    (``module.``, ``_orig_mod.``, ``model.``, ``student.``) and drops ``num_batches_tracked``
    counters, which carry no weights. Raises ``CheckpointError`` when the dict is not an MNv4
    classifier state_dict at all (no ``conv_stem.weight`` / ``blocks.*`` keys).
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"expected a state_dict mapping, got {type(state_dict).__name__}")
    out = strip_wrapper_prefixes(state_dict)
    if "conv_stem.weight" not in out or not any(k.startswith("blocks.") for k in out):
        sample = ", ".join(sorted(out)[:5]) or "no tensors"
        raise CheckpointError(
            "not a MobileNetV4 state_dict: expected 'conv_stem.weight' and 'blocks.*' keys "
            f"(timm mobilenetv4_* layout), found {sample}"
        )
    return out


def read_mnv4_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``read_state_dict`` + ``convert_timm_state_dict``, with errors naming the file."""
    state = read_state_dict(path)
    try:
        return convert_timm_state_dict(state)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Strictly load ours- or timm-layout weights into an MNv4 ``model`` (see above)."""
    name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
    load_state_dict_strict(model, read_mnv4_state_dict(path), str(path), name)
