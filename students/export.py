"""Exporting a student: safetensors weights and an ONNX graph checked against PyTorch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn


def save_safetensors(
    model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write the state_dict as ``.safetensors`` (written to a temp name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


@torch.no_grad()
def export_onnx(
    model: nn.Module, path: str | Path, resolution: int, atol: float = 1e-4, batch: int = 2
) -> float:
    """Export ``model`` (eval mode, dynamic batch) to ONNX and check it in onnxruntime.

    Returns the max absolute logit difference between onnxruntime and PyTorch on a random batch;
    raises ``RuntimeError`` (and leaves no file) when it exceeds ``atol``.
    """
    import onnxruntime as ort

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    x = torch.randn(batch, getattr(model, "in_chans", 3), resolution, resolution)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
        )
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        check = torch.randn(batch + 1, x.shape[1], resolution, resolution)
        got = session.run(None, {"images": check.numpy()})[0]
        diff = float(np.abs(got - model(check).float().numpy()).max())
        if not diff <= atol:
            raise RuntimeError(f"ONNX export of {path.name} differs from PyTorch by {diff:.2e}")
        os.replace(tmp, path)
        return diff
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
