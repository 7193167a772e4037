"""What every mobile runtime adapter provides: export a student to its file, then run that file.

One adapter per runtime (``onnx``, ``executorch``, ``litert``), registered in
``students.runtimes``. Adapters import their runtime lazily: a missing package is a
``MissingRuntime`` naming the extra to install, never a bare ImportError. Files are written to a
temporary name and renamed, so a failed export leaves nothing that looks complete.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

MOBILE_EXTRA = "pip install -e '.[mobile]'"
# litert-torch 0.10 (the one release for torch 2.14) pins xdsl 0.28 and through it
# typing-extensions<4.13, which wandb 0.31 (cwevals) refuses: no extra of this project can hold
# both, so LiteRT is installed on its own (pip then warns about cwevals, which still imports).
LITERT_INSTALL = "pip install litert-torch==0.10.0 ai-edge-litert==2.3.0 (after the project)"


class MissingRuntime(RuntimeError):
    """The runtime's package is not installed; the message says how to install it."""

    def __init__(self, runtime: str, package: str, install: str = MOBILE_EXTRA) -> None:
        super().__init__(f"runtime {runtime!r} needs the package {package!r}: {install}")
        self.runtime = runtime


class ExportRejected(RuntimeError):
    """The runtime could not take this model (an unsupported op, a failed lowering)."""


Predict = Callable[[np.ndarray], np.ndarray]
"""A loaded file: float32 NCHW input (normalised) -> float32 logits [N, classes]."""


class Runtime(Protocol):
    """A mobile runtime: ``export`` writes ``path`` (fp32, or int8 when ``calibration`` is
    given: normalised float32 NCHW views from the run's own data), ``load`` runs it."""

    name: str
    suffix: str

    def check(self) -> None:
        """Raise ``MissingRuntime`` when the runtime's package cannot be imported."""

    def export(
        self,
        model: nn.Module,
        path: Path,
        resolution: int,
        metadata: dict[str, str],
        calibration: torch.Tensor | None = None,
    ) -> Path:
        """Write ``model`` (a CPU eval copy, batch 1, ``resolution`` square) to ``path``."""

    def load(self, path: Path, threads: int) -> Predict:
        """A callable running ``path`` with ``threads`` CPU threads."""


def example_input(model: nn.Module, resolution: int) -> torch.Tensor:
    """The batch-1 input a mobile file is traced at (its shape is fixed in the file)."""
    return torch.randn(1, getattr(model, "in_chans", 3), resolution, resolution)


def export_copy(model: nn.Module) -> nn.Module:
    """A CPU eval copy in plain NCHW memory: the students default to channels_last weights and
    activations (faster in PyTorch), which mobile lowerings such as XNNPACK's layout pass
    refuse; they choose their own layout."""
    from students.export import cpu_eval_copy

    clone = cpu_eval_copy(model)
    if hasattr(clone, "channels_last"):
        clone.channels_last = False
    return clone.to(memory_format=torch.contiguous_format)
