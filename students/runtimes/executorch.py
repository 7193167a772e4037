"""ExecuTorch with the XNNPACK delegate: a ``.pte`` program for Android and iOS.

fp32 and int8 (PT2E post-training static quantization, ``students.quantize``) are lowered the
same way: ``torch.export`` -> ``to_edge_transform_and_lower`` with ``XnnpackPartitioner`` ->
``to_executorch``. A ``.pte`` has no free-form metadata field, so the ``ExportMeta`` strings go
to a sidecar ``<file>.json`` written beside it (``read_pte_meta``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.atomic import atomic_path
from students.runtimes.base import (
    ExportRejected,
    MissingRuntime,
    Predict,
    example_input,
    export_copy,
)

PACKAGE = "executorch"


def sidecar(path: Path) -> Path:
    """Where a ``.pte``'s metadata lives: ``model.pte`` -> ``model.pte.json``."""
    return path.with_name(path.name + ".json")


def read_pte_meta(path: Path) -> dict[str, str]:
    """The metadata strings ``save_pte`` wrote beside ``path``."""
    return json.loads(sidecar(Path(path)).read_text())


def _check() -> None:
    try:
        import executorch.exir  # noqa: F401
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (  # noqa: F401
            XnnpackPartitioner,
        )
    except ImportError as e:
        raise MissingRuntime("executorch", PACKAGE) from e


def _lower(module: nn.Module, example: torch.Tensor) -> bytes:
    """The ``.pte`` bytes of ``module`` traced at ``example`` (static shape), XNNPACK-delegated."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(module, (example,))
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    return edge.to_executorch().buffer


def save_pte(
    quantized_or_float_module: nn.Module,
    example: torch.Tensor,
    path: Path,
    metadata: dict[str, str],
) -> Path:
    """Lower an already prepared module (float, or a ``convert_pt2e`` output from PTQ or QAT)
    to ``path`` with the XNNPACK delegate, plus the sidecar ``<path>.json`` holding ``metadata``
    (ExecuTorch has no free-form metadata). The input shape is ``example``'s, fixed.

    Both files are written to temporary names and renamed only when lowering succeeded;
    a lowering failure is ``ExportRejected`` and leaves neither file.
    """
    _check()
    path = Path(path)
    try:
        with torch.no_grad():
            data = _lower(quantized_or_float_module, example)
    except Exception as e:
        raise ExportRejected(
            f"ExecuTorch could not lower {path.name}: {type(e).__name__}: {_first_line(e)}"
        ) from e
    meta = json.dumps({**metadata, "runtime": "executorch"}, indent=2)
    with atomic_path(sidecar(path)) as meta_tmp, atomic_path(path) as tmp:
        tmp.write_bytes(data)
        meta_tmp.write_text(meta + "\n")
    return path


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


class ExecuTorch:
    """The ExecuTorch adapter (``students.runtimes.base.Runtime``)."""

    name = "executorch"
    suffix = ".pte"

    def check(self) -> None:
        _check()

    def export(
        self,
        model: nn.Module,
        path: Path,
        resolution: int,
        metadata: dict[str, str],
        calibration: torch.Tensor | None = None,
    ) -> Path:
        self.check()
        model = export_copy(model)
        example = example_input(model, resolution)
        meta = {**metadata, "precision": "fp32" if calibration is None else "int8"}
        if calibration is not None:
            from students.quantize import quantize_ptq

            try:
                model = quantize_ptq(model, example, calibration)
            except Exception as e:
                raise ExportRejected(
                    f"PT2E quantization of {path.name} failed: {type(e).__name__}: {_first_line(e)}"
                ) from e
        return save_pte(model, example, path, meta)

    def load(self, path: Path, threads: int) -> Predict:
        self.check()
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime as EtRuntime

        def load_method():
            # The XNNPACK threadpool is process-wide and resetting it is the only thread knob
            # the Python API has. A loaded method keeps a pointer to the pool it was loaded
            # with, which a reset frees: running it afterwards crashed the process (abort or
            # segfault), so a method is loaded again after every reset.
            portable_lib._unsafe_reset_threadpool(int(threads))
            return EtRuntime.get().load_program(Path(path)).load_method("forward")

        method = load_method()

        def predict(x: np.ndarray) -> np.ndarray:
            nonlocal method
            if portable_lib._threadpool_get_thread_count() != threads:
                method = load_method()
            out = method.execute([torch.from_numpy(np.ascontiguousarray(x, np.float32))])
            return out[0].numpy()

        return predict
