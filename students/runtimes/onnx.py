"""ONNX, run by onnxruntime: fp32 is ``students.export.export_onnx`` (checked against PyTorch,
dynamic batch and H/W where the exporter manages it); int8 is onnxruntime's static QDQ
quantization of that graph (per-channel symmetric int8 weights, asymmetric uint8 activations
calibrated on the run's own views), which onnxruntime's CPU provider fuses into int8 kernels.

Opset: the one ``torch.onnx.export(dynamo=True)`` emits (recorded in the file and returned
by ``opset``). Metadata: ONNX ``metadata_props``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.atomic import atomic_path
from students.runtimes.base import ExportRejected, MissingRuntime, Predict

PACKAGE = "onnxruntime"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def opset(path: Path) -> int:
    """The default-domain opset ``path`` was written with."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


class _Views:
    """onnxruntime's ``CalibrationDataReader``: one normalised view per call (batch 1)."""

    def __init__(self, views: torch.Tensor, name: str) -> None:
        self._it = iter(views.split(1))
        self._name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        view = next(self._it, None)
        return None if view is None else {self._name: view.float().numpy()}


def quantize_onnx(fp32: Path, out: Path, calibration: torch.Tensor, name: str = "images") -> None:
    """Static QDQ int8 of ``fp32`` into ``out``, calibrated on ``calibration`` (input ``name``)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_name(out.name + ".pre.onnx")
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out),
            _Views(calibration, name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # uint8 activations x int8 weights (U8S8): on x86 (AVX2/VNNI) onnxruntime's fast
            # int8 path; S8S8 ran 2.6x slower on Conv-S 224 here (5.7 vs 2.2 ms, 1 thread)
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    finally:
        pre.unlink(missing_ok=True)


class Onnx:
    """The ONNX adapter (``students.runtimes.base.Runtime``)."""

    name = "onnx"
    suffix = ".onnx"

    def check(self) -> None:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise MissingRuntime(self.name, PACKAGE) from e

    def export(
        self,
        model: nn.Module,
        path: Path,
        resolution: int,
        metadata: dict[str, str],
        calibration: torch.Tensor | None = None,
    ) -> Path:
        from students.export import export_onnx, write_onnx_metadata

        self.check()
        path = Path(path)
        precision = "fp32" if calibration is None else "int8"
        with atomic_path(path) as tmp:
            fp32 = tmp.with_name(tmp.name + ".fp32.onnx") if calibration is not None else tmp
            try:
                done = export_onnx(model, fp32, resolution, metadata=metadata)
                meta = {**metadata, "dynamic_hw": str(done.dynamic_hw).lower()}
                if calibration is not None:
                    quantize_onnx(fp32, tmp, calibration)
                meta.update(precision=precision, opset=str(opset(tmp)))
                write_onnx_metadata(tmp, meta)
            except Exception as e:
                raise ExportRejected(
                    f"ONNX {precision} export of {path.name} failed: {type(e).__name__}: "
                    f"{_first_line(e)}"
                ) from e
            finally:
                if fp32 != tmp:
                    fp32.unlink(missing_ok=True)
        return path

    def load(self, path: Path, threads: int) -> Predict:
        self.check()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def predict(x: np.ndarray) -> np.ndarray:
            return session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]

        return predict
