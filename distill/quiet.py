"""Quiet the libraries a run uses: their INFO lines and advice would bury the run's summary."""

from __future__ import annotations

import logging
import warnings


def quiet_libraries() -> None:
    """Hydra logs at INFO; the ONNX exporter's per-pass INFO lines would bury the summary."""
    for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch._dynamo", "torch.export"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
    warnings.filterwarnings(
        "ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*"
    )
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_drop_litlogger_tip)


def _drop_litlogger_tip(record: logging.LogRecord) -> bool:
    """Lightning 2.6 advertises its hosted logger on every Trainer; not this project's advice."""
    return "litlogger" not in record.getMessage()
