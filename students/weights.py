"""Loading MNv4 weights safely: ours or timm's layout, from ``.safetensors`` or ``.pth``.

Our module names equal timm's (mnv4.md §6.2), so ``convert_timm_state_dict`` only removes the
wrappers that training code adds around a state_dict and checks it against the timm layout; the
strict key and shape check happens when the weights are loaded into a model
(mnv4.md §6.4 acceptance checks 1-3).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

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
        if path.suffix == ".safetensors":
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


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Strictly load ours- or timm-layout weights into an MNv4 ``model`` (see above)."""
    name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
    load_state_dict_strict(model, convert_timm_state_dict(read_state_dict(path)), str(path), name)
