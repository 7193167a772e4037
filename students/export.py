"""Exporting a student: safetensors weights and an ONNX graph checked against PyTorch.

Both files describe themselves (``ExportMeta``: student, classes, input size, normalisation,
which weights) so that a consumer never has to guess how they were trained.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.atomic import atomic_path
from common.weights import save_safetensors_atomic
from students.weights import EXPORT_KEY, ExportMeta

log = logging.getLogger(__name__)

Metadata = ExportMeta | Mapping[str, str] | None


@dataclass(frozen=True)
class OnnxExport:
    """An ONNX file checked in onnxruntime.

    ``max_abs_diff`` is at the export resolution; ``checked`` maps each input size tried
    ("HxW") to its max absolute logit difference from PyTorch.
    """

    path: Path
    max_abs_diff: float
    dynamic_hw: bool
    checked: dict[str, float]


def _strings(metadata: Metadata) -> dict[str, str]:
    if metadata is None:
        return {}
    return metadata.to_strings() if isinstance(metadata, ExportMeta) else dict(metadata)


def save_safetensors(model: nn.Module, path: str | Path, metadata: Metadata = None) -> Path:
    """Write the state_dict as ``.safetensors`` (written to a temp name, then renamed)."""
    return save_safetensors_atomic(model.state_dict(), path, _strings(metadata))


def cpu_eval_copy(model: nn.Module) -> nn.Module:
    """A CPU, eval-mode deep copy: exporting must not move or switch the caller's model.

    A module compiled in place (``model.compile()``) keeps its compiled wrapper in
    ``_compiled_call_impl``; the copy leaves it out (export traces ``forward`` anyway).
    """
    compiled = model.__dict__.get("_compiled_call_impl")
    model.__dict__["_compiled_call_impl"] = None
    try:
        clone = copy.deepcopy(model)
    finally:
        model.__dict__["_compiled_call_impl"] = compiled
    return clone.cpu().eval().requires_grad_(False)


def _torch_export(
    model: nn.Module, path: Path, resolution: int, batch: int, dynamic_hw: bool
) -> None:
    # a traced size-1 dimension is specialised to 1 by torch.export, so a 32-px trace (1x1 final
    # feature map) could not vary H/W: trace at 64 px or more, check at ``resolution``
    size = max(resolution, 64) if dynamic_hw else resolution
    x = torch.randn(batch, getattr(model, "in_chans", 3), size, size)
    dims: dict[int, torch.export.Dim] = {0: torch.export.Dim("batch")}
    if dynamic_hw:
        dims[2] = torch.export.Dim("height", min=32, max=4096)
        dims[3] = torch.export.Dim("width", min=32, max=4096)
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=(dims,),
        external_data=False,
        verbose=False,
    )


def write_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Set ``metadata_props`` (ONNX's string key/values), replacing keys already there."""
    import onnx

    proto = onnx.load(str(path))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _max_diff(session, model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Max |onnxruntime - PyTorch| and max |PyTorch| logit on ``x``."""
    got = session.run(None, {"images": x.numpy()})[0]
    ref = model(x).float().numpy()
    return float(np.abs(got - ref).max()), float(np.abs(ref).max())


def _check(
    path: Path, model: nn.Module, resolution: int, batch: int, atol: float, dynamic_hw: bool
) -> dict[str, float]:
    """Compare onnxruntime with PyTorch at the export size and, if dynamic, at another H != W.

    The limit is ``atol`` per unit of logit magnitude (``atol * max(1, max|logit|)``): float32
    rounding grows with the logits, which are large for untrained models and at sizes other
    than the one BatchNorm statistics were fitted at.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    chans = getattr(model, "in_chans", 3)
    sizes = [(resolution, resolution)]
    if dynamic_hw:
        sizes.append((resolution + 32, resolution + 64))
    checked = {}
    for i, (h, w) in enumerate(sizes):
        diff, scale = _max_diff(session, model, torch.randn(batch + 1 - i, chans, h, w))
        limit = atol * max(1.0, scale)
        if not diff <= limit:
            raise RuntimeError(
                f"ONNX export of {path.name} differs from PyTorch by {diff:.2e} at {h}x{w} "
                f"(limit {limit:.1e})"
            )
        checked[f"{h}x{w}"] = diff
    return checked


def _export_checked(
    model: nn.Module,
    tmp: Path,
    resolution: int,
    batch: int,
    atol: float,
    meta: dict[str, str],
    dynamic_hw: bool,
) -> dict[str, float]:
    _torch_export(model, tmp, resolution, batch, dynamic_hw)
    if meta:
        write_onnx_metadata(tmp, {**meta, "dynamic_hw": "true" if dynamic_hw else "false"})
    return _check(tmp, model, resolution, batch, atol, dynamic_hw)


@torch.no_grad()
def export_onnx(
    model: nn.Module,
    path: str | Path,
    resolution: int,
    atol: float = 1e-4,
    batch: int = 2,
    metadata: Metadata = None,
    dynamic_hw: bool = True,
) -> OnnxExport:
    """Export a CPU eval copy of ``model`` to ONNX and check it in onnxruntime.

    Batch is always dynamic; height and width are too when ``dynamic_hw`` and the exporter
    manages it (checked at a second, non-square size); otherwise the graph takes a fixed
    ``resolution`` square, logged and recorded as ``dynamic_hw=false`` in the metadata.
    ``metadata`` (an ``ExportMeta`` or string pairs) goes into the model's ``metadata_props``.
    Raises ``RuntimeError`` (and leaves no file) when onnxruntime and PyTorch differ by more
    than ``atol`` (scaled by the logit magnitude when it exceeds 1) at ``resolution``. ``model`` itself is not moved or switched to eval.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = _strings(metadata)
    clone = cpu_eval_copy(model)
    with atomic_path(path) as tmp:
        checked = None
        if dynamic_hw:
            try:
                checked = _export_checked(clone, tmp, resolution, batch, atol, meta, True)
            except Exception as e:  # the exporter or the graph cannot vary H/W: fall back
                log.warning(
                    "%s: dynamic height/width export failed (%s: %s); exporting a fixed "
                    "%dx%d input instead",
                    path.name,
                    type(e).__name__,
                    str(e).splitlines()[0] if str(e) else "",
                    resolution,
                    resolution,
                )
        dynamic = checked is not None
        if checked is None:
            checked = _export_checked(clone, tmp, resolution, batch, atol, meta, False)
    main = checked[f"{resolution}x{resolution}"]
    return OnnxExport(path, main, dynamic, checked)


def read_onnx_meta(path: str | Path) -> ExportMeta | None:
    """The project metadata of an ``.onnx`` file (``metadata_props``), or ``None`` if it has none."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    return ExportMeta.from_strings(props, str(path)) if EXPORT_KEY in props else None
