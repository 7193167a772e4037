"""Exporting the trained student: both weight sets as safetensors, the better one as ONNX.

The run holds two sets of student weights, the raw student and its EMA (when enabled); the one
with the better validation top-1 (``choose_weights``: a tie goes to the EMA) becomes
``NAME.safetensors`` and, with ``export.onnx``, ``NAME.onnx`` (compared with PyTorch in
onnxruntime); the other is kept as ``NAME_raw.safetensors`` or ``NAME_ema.safetensors``. Every
file carries ``ExportMeta``. A failed ONNX export is a warning and an ``onnx_error`` entry, not a
failed run: the safetensors are the result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import nn

from students.export import export_onnx, save_safetensors
from students.weights import ExportMeta, mean_std_tuple

log = logging.getLogger("distill")

TOP1 = {"raw": "val/top1", "ema": "val/ema_top1"}


def choose_weights(metrics: Mapping[str, float], has_ema: bool) -> str:
    """``"ema"`` or ``"raw"``: the weights with the better validation top-1.

    A tie goes to the EMA: at equal accuracy the running average is the smoother set of the same
    run (and the one timm and the paper report). Without an EMA, or without its metric, ``"raw"``.
    """
    ema, raw = metrics.get(TOP1["ema"]), metrics.get(TOP1["raw"])
    if not has_ema or ema is None:
        return "raw"
    return "ema" if raw is None or float(ema) >= float(raw) else "raw"


def _weights(module) -> dict[str, nn.Module]:
    models = {"raw": module.student}
    if module.ema is not None:
        models["ema"] = module.ema.module
    return models


def export_student(
    module,
    out: Path,
    name: str,
    cfg: Mapping,
    metrics: Mapping[str, float] | None = None,
    classes: Sequence[str] | None = None,
    image_size: int | None = None,
) -> dict:
    """Write both weight sets as safetensors and the better one (``choose_weights``) as ONNX.

    ``module`` is a ``DistillModule``: its student and EMA are exported from CPU eval copies, so
    it stays on its device and in its training mode. ``cfg`` is the ``export`` config (``onnx``,
    ``resolution``; a set ``resolution`` overrides ``image_size``, and without either the
    trainer's datamodule gives it). Without ``metrics`` the raw student is exported as the main
    file (the older four-argument call still works). Returns the paths written,
    ``exported`` ("ema" or "raw") and the ONNX check (or ``onnx_error``: ONNX is a convenience,
    the safetensors are the result).
    """
    out.mkdir(parents=True, exist_ok=True)
    metrics = metrics or {}
    models = _weights(module)
    chosen = choose_weights(metrics, "ema" in models)
    resolution = _resolution(module, cfg, image_size)

    def meta(kind: str) -> ExportMeta:
        top1 = metrics.get(TOP1[kind])
        return ExportMeta(
            student=name,
            num_classes=int(module.student.num_classes),
            resolution=resolution,
            weights=kind,
            mean=mean_std_tuple(module.mean),
            std=mean_std_tuple(module.std),
            classes=tuple(classes) if classes is not None else None,
            val_top1=float(top1) if top1 is not None else None,
        )

    result: dict = {"exported": chosen}
    for kind, model in models.items():
        file = f"{name}.safetensors" if kind == chosen else f"{name}_{kind}.safetensors"
        result[f"{kind}_safetensors"] = str(save_safetensors(model, out / file, meta(kind)))
    result["safetensors"] = result[f"{chosen}_safetensors"]
    (out / f"{name}_{chosen}.safetensors").unlink(missing_ok=True)  # stale, from an older export
    if cfg.get("onnx", True):
        result.update(_onnx(models[chosen], out / f"{name}.onnx", meta(chosen)))
    return result


def _resolution(module, cfg: Mapping, image_size: int | None) -> int:
    size = cfg.get("resolution") or image_size
    if size is None:
        trainer = getattr(module, "_trainer", None)
        size = getattr(getattr(trainer, "datamodule", None), "image_size", None)
    if size is None:
        raise ValueError(
            "export_student needs image_size (or export.resolution) for the ONNX input"
        )
    return int(size)


def _onnx(model: nn.Module, path: Path, meta: ExportMeta) -> dict:
    try:
        onnx = export_onnx(model, path, meta.resolution, metadata=meta)
    except Exception as e:  # the weights above are the result; ONNX is a convenience
        log.warning("ONNX export failed: %s", e)
        return {"onnx_error": f"{type(e).__name__}: {e}"}
    if not onnx.dynamic_hw:
        log.warning("%s takes a fixed %dx%d input", path.name, meta.resolution, meta.resolution)
    return {
        "onnx": str(onnx.path),
        "onnx_max_abs_diff": onnx.max_abs_diff,
        "onnx_dynamic_hw": onnx.dynamic_hw,
    }
