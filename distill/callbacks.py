"""Callbacks of a distillation run: sample grids to W&B, a validation at the last step
(checkpoints: distill/checkpoints.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from data import urls

log = logging.getLogger(__name__)


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


class ValidateAtEnd(L.Callback):
    """The last training step always validates, so its metrics and checkpoints are saved.

    Lightning validates at the end of a (nominal) epoch, every ``check_val_every_n_epoch``: a
    ``max_steps`` that ends mid-epoch, or before the first validation, stopped with no top-1,
    no best checkpoint, and results that described older weights than the exported ones. At the
    last step this asks the loop to stop (which validates, as early stopping does), in any epoch.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True
            if trainer.check_val_every_n_epoch is not None:  # None: validation by steps
                trainer.check_val_every_n_epoch = 1
