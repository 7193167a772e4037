"""Safe weights I/O for every package: reading, strict loading and atomic safetensors writes.

Pickles load with ``weights_only=True`` (a file that would run code is refused, never run);
safetensors files are written to a temp name and renamed, so a crash never leaves half a file.
What the weights *are* (MNv4 layout checks, export metadata, teacher metadata) is left to the
packages that own those formats: students/weights.py and teachers/checkpoint.py.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from common.atomic import atomic_path

_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "student.")
_NESTED_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
_UNUSED_SUFFIXES = ("num_batches_tracked",)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def _strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(state_dict)
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if out and all(k.startswith(prefix) for k in out):
                out = {k[len(prefix) :]: v for k, v in out.items()}
                changed = True
    return out


def checkpoint_format(path: str | Path) -> Literal["safetensors", "lightning", "pickle"]:
    """How a weights file is read, told by its suffix: ``safetensors`` (a JSON header, then raw
    tensors: nothing is unpickled, metadata readable alone), ``lightning`` (``.ckpt``: a Lightning
    checkpoint, hyperparameters included) or ``pickle`` (``.pth``/``.pt``/``.bin``: torch.save)."""
    suffix = Path(path).suffix
    if suffix == ".safetensors":
        return "safetensors"
    return "lightning" if suffix == ".ckpt" else "pickle"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from ``.safetensors`` or a ``.pth``/``.pt``/``.bin``/``.ckpt`` pickle.

    Pickles load with ``weights_only=True``: a file that would run code is refused, never
    executed. Lightning/timm wrappers (``state_dict``, ``model``, ``state_dict_ema`` keys) are
    unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if checkpoint_format(path) == "safetensors":
            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refused to load {path}: it is not a plain tensor checkpoint (weights_only=True "
            f"rejected it, so nothing in it was run). Re-save it with torch.save(state_dict) or "
            f"as .safetensors. Detail: {str(e).splitlines()[0]}"
        ) from e
    except Exception as e:  # truncated zip, bad safetensors header, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                return dict(obj[key])
        return dict(obj)
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict")


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP/compile/Lightning prefixes shared by every key and drop non-tensor entries."""
    return {
        k: v
        for k, v in _strip_prefix(state_dict).items()
        if isinstance(v, torch.Tensor) and not k.endswith(_UNUSED_SUFFIXES)
    }


def load_state_dict_strict(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str, target: str
) -> None:
    """Load ``state`` into ``model`` only if every key and shape matches.

    Otherwise raise ``CheckpointError`` naming ``source`` and ``target`` and listing the missing,
    unexpected and mis-shaped keys (first ten of each); the model is left untouched.
    """
    own = {k: v for k, v in model.state_dict().items() if not k.endswith(_UNUSED_SUFFIXES)}
    state = {k: v for k, v in state.items() if not k.endswith(_UNUSED_SUFFIXES)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        parts = [f"{source} does not fit {target}"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
                parts.append(f"{len(items)} {label} keys: {', '.join(items[:10])}{more}")
        if len(shapes) <= 2 and shapes and all(_is_classifier(k) for k in shapes):
            parts.append("the class count differs: pass the checkpoint's num_classes")
        raise CheckpointError("; ".join(parts))
    model.load_state_dict(state, strict=False)


def _is_classifier(shape_line: str) -> bool:
    return shape_line.split(".")[0] in ("classifier", "fc", "head", "heads")


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` header (only the JSON header is read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e


def save_safetensors_atomic(
    tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None
) -> Path:
    """Write ``tensors`` (moved to CPU, contiguous) to a temp name, then rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata) if metadata else None)
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors writes 0600, unlike any other output
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
