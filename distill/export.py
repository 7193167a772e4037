"""Exporting the trained student: safetensors weights and an ONNX graph checked in onnxruntime."""

from __future__ import annotations

import logging
from pathlib import Path

from students.export import export_onnx, save_safetensors

log = logging.getLogger("distill")


def export_student(module, out: Path, name: str, cfg: dict) -> dict:
    """Write the student (and its EMA) as safetensors, the better of them as ONNX."""
    out.mkdir(parents=True, exist_ok=True)
    student = module.student
    meta = {"student": name, "num_classes": str(student.num_classes)}
    paths = {"safetensors": str(save_safetensors(student, out / f"{name}.safetensors", meta))}
    if module.ema is not None:
        ema_path = save_safetensors(module.ema.module, out / f"{name}_ema.safetensors", meta)
        paths["ema_safetensors"] = str(ema_path)
    if cfg.get("onnx", True):
        res = int(cfg.get("resolution") or module.trainer.datamodule.image_size)
        try:
            diff = export_onnx(student.cpu().eval(), out / f"{name}.onnx", res)
            paths["onnx"] = str(out / f"{name}.onnx")
            paths["onnx_max_abs_diff"] = diff
        except Exception as e:  # the weights above are the result; ONNX is a convenience
            log.warning("ONNX export failed: %s", e)
    return paths
