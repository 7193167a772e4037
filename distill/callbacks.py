"""Callbacks of a distillation run: sample grids to W&B (checkpoints: distill/checkpoints.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from data import urls

log = logging.getLogger("distill")


class SampleGrids(L.Callback):
    """Log a captioned grid of each training set's samples to W&B once, at fit start."""

    def __init__(self, root: str | Path, sets: list[str], n: int = 16) -> None:
        self.root, self.sets, self.n = str(root), list(sets), n

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from lightning.pytorch.loggers import WandbLogger

        from data.preview import grid

        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            try:
                images = [grid(urls.join(self.root, name), self.n) for name in self.sets]
                logger.log_image("data/samples", images, caption=self.sets)
            except Exception as e:  # a preview must never stop training
                log.warning("could not log sample grids to W&B: %s", e)
