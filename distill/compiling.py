"""Compiling the student (and an online teacher) for GPU training, without recompiles.

``trainer=gpu``/``ddp`` compile by default (``model.compile: null`` means on CUDA). Compiled with
``dynamic=False``: training batches all have one shape (full batches only), so each distinct
shape (training, evaluation mode, a validation set's last partial batch) is compiled once as a
static graph. The default (automatic dynamic shapes) turned the second shape seen into
symbolic-shape graphs whose guards Hybrid-M kept re-evaluating and recompiling.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_models(
    models: Iterable[nn.Module], mode: str | None = None, backend: str = "inductor"
) -> None:
    """Compile each module in place (``state_dict`` keys unchanged, no ``_orig_mod.``)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"model.compile_mode must be one of {COMPILE_MODES}, got {mode!r}")
    for model in models:
        model.compile(dynamic=False, mode=mode, backend=backend)


def compiled_graphs() -> int:
    """Graphs TorchDynamo has compiled in this process so far (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
