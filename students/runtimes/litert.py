"""LiteRT (TFLite) adapter: litert-torch converts, ``ai_edge_litert``'s interpreter runs.

fp32 is ``litert_torch.convert`` of the eval model. int8 is static PT2E quantisation with
litert-torch's own ``PT2EQuantizer`` (per-channel symmetric int8 weights, per-tensor int8
activations from histogram observers calibrated on the run's views), which litert-torch lowers
to TFLite's quantized kernels; the file then takes and returns int8, which ``load`` hides behind
the float32 NCHW interface. The input stays NCHW, as PyTorch has it (litert-torch's default).

The metadata (plus ``precision`` and ``runtime``, as the ExecuTorch adapter adds them) goes into
the flatbuffer itself: one ``Model.metadata`` entry named ``METADATA_NAME`` whose buffer holds
the dict as JSON (``read_metadata`` reads it back), so the file describes itself without a
sidecar.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from common.atomic import atomic_path
from students.runtimes.base import (
    LITERT_INSTALL,
    ExportRejected,
    MissingRuntime,
    Predict,
    example_input,
    export_copy,
)

METADATA_NAME = "mnv4_distill"
TFLITE_ID = b"TFL3"


def _import(module: str, package: str) -> ModuleType:
    """``module``, or ``MissingRuntime`` naming the pip package that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingRuntime("litert", package, LITERT_INSTALL) from e


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


class LiteRT:
    """The ``Runtime`` for LiteRT: ``.tflite`` files, fp32 or static int8."""

    name = "litert"
    suffix = ".tflite"

    def check(self) -> None:
        _import("litert_torch", "litert-torch")
        _import("ai_edge_litert.interpreter", "ai-edge-litert")

    def export(
        self,
        model: nn.Module,
        path: Path,
        resolution: int,
        metadata: dict[str, str],
        calibration: torch.Tensor | None = None,
    ) -> Path:
        self.check()
        path, model = Path(path), export_copy(model)
        example = example_input(model, resolution)
        try:
            data = _convert(model, example, calibration)
        except MissingRuntime:
            raise
        except Exception as e:  # the converter raises anything from torch.export to MLIR
            raise ExportRejected(f"litert-torch could not convert the model: {_one_line(e)}") from e
        precision = "fp32" if calibration is None else "int8"
        data = with_metadata(data, {**metadata, "precision": precision, "runtime": self.name})
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return path

    def load(self, path: Path, threads: int) -> Predict:
        interp = _import("ai_edge_litert.interpreter", "ai-edge-litert")
        runner = interp.Interpreter(model_path=str(path), num_threads=threads)
        runner.allocate_tensors()
        inp, out = runner.get_input_details()[0], runner.get_output_details()[0]

        def predict(x: np.ndarray) -> np.ndarray:
            rows = []
            for sample in np.asarray(x, dtype=np.float32):  # the file is batch 1
                runner.set_tensor(inp["index"], _to_input(sample[None], inp))
                runner.invoke()
                rows.append(_from_output(runner.get_tensor(out["index"]), out))
            return np.concatenate(rows).astype(np.float32, copy=False)

        return predict


def _convert(model: nn.Module, example: torch.Tensor, calibration: torch.Tensor | None) -> bytes:
    """The ``.tflite`` bytes: fp32, or static int8 calibrated on ``calibration``."""
    litert_torch = _import("litert_torch", "litert-torch")
    litert_torch.config.show_progress = False
    if calibration is None:
        return litert_torch.convert(model, (example,)).model_content()
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    )
    with torch.no_grad():
        graph = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)
        for view in calibration.float():  # exported at batch 1: one view per call
            graph(view[None].contiguous())
    graph = convert_pt2e(graph, fold_quantize=False)
    move_exported_model_to_eval(graph)  # a GraphModule comes back in training mode
    converted = litert_torch.convert(
        graph, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer)
    )
    return converted.model_content()


def _to_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float32 into the input's dtype (int8 files take quantised values)."""
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _from_output(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


def with_metadata(data: bytes, metadata: dict[str, str]) -> bytes:
    """``data`` re-packed with ``metadata`` as JSON in the ``METADATA_NAME`` entry."""
    import flatbuffers

    schema = _import("ai_edge_litert.schema_py_generated", "ai-edge-litert")
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    if any(b.offset > 1 for b in model.buffers or []):  # weights outside the flatbuffer
        raise ExportRejected("the .tflite keeps its weights outside the flatbuffer")
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(dict(metadata)).encode(), dtype=np.uint8)
    model.buffers = [*(model.buffers or []), buffer]
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    kept = [m for m in model.metadata or [] if _name(m.name) != METADATA_NAME]
    model.metadata = [*kept, entry]
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_ID)
    return bytes(builder.Output())


def read_metadata(path: str | os.PathLike) -> dict[str, str] | None:
    """The project metadata of a ``.tflite`` file, or ``None`` if it has none."""
    schema = _import("ai_edge_litert.schema_py_generated", "ai-edge-litert")
    data = Path(path).read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _name(entry.Name()) == METADATA_NAME:
            raw = model.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(raw).decode())
    return None


def _name(name: str | bytes | None) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)
