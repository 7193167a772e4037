"""The objects of a fit, built from the config: the datamodule, the module, the callbacks and the
``lightning.Trainer`` (the loggers: ``distill.logs``)."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import lightning as L

from distill.checkpoints import AtomicCheckpointIO
from distill.config import DataConfig, TrainConfig, TrainerConfig, module_sections


def make_datamodule(
    d: DataConfig, seed: int, train_sets: dict, mode: str, samples_per_epoch: int | None
):
    """The run's ``DistillDataModule`` over ``train_sets`` (the distillation or baseline mix).

    Labels mode reads the same shards as offline mode (their ``cls`` entries).
    """
    from data.datamodule import DistillDataModule

    online = mode == "online"
    return DistillDataModule(
        d.root,
        train_sets,
        d.val_set,
        batch_size=d.batch_size,
        num_workers=d.num_workers,
        samples_per_epoch=samples_per_epoch,
        mode=mode if mode in ("online", "hybrid") else "offline",
        labels_from=d.labels_from,
        online=d.online if online else None,
        flip=d.flip,
        seed=seed,
        shuffle_buffer=d.shuffle_buffer,
        val_batch_size=d.val_batch_size,
        decode=d.decode,
        recipe_check=d.recipe_check,
    )


def make_module(c: TrainConfig, num_classes: int, teacher, mode: str):
    """The ``DistillModule`` of the config's sections; labels mode uses the baseline's smoothing."""
    from distill.module import DistillModule

    sections = module_sections(c)
    if mode == "labels":
        smoothing = c.baseline.label_smoothing
        sections["loss"] = replace(sections["loss"], label_smoothing=smoothing)
    return DistillModule(c.student.name, num_classes, teacher, mode=mode, **sections)


def make_callbacks(monitor: str, dm, out: Path, mode: str) -> tuple:
    """(best checkpoint, last checkpoint, every callback of the fit)."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from distill.callbacks import SampleGrids, ValidateAtEnd
    from distill.checkpoints import LastCheckpoint

    ckpt_dir = out / "checkpoints"
    best = ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename="best-{step}",
        monitor=monitor,
        mode="max",
        save_last=False,
    )
    last = LastCheckpoint(ckpt_dir)
    callbacks = [ValidateAtEnd(), best, last, LearningRateMonitor("step")]
    if mode != "online":
        callbacks.append(SampleGrids(dm.root, list(dm.train_sets)))
    return best, last, callbacks


def make_trainer(trainer: TrainerConfig, out: Path, loggers: list, callbacks: list) -> L.Trainer:
    """``lightning.Trainer`` of the ``trainer`` section (a ``strategy`` dict is instantiated)."""
    from hydra.utils import instantiate

    tcfg = asdict(trainer)
    strategy = tcfg.pop("strategy")
    if isinstance(strategy, dict):
        strategy = instantiate(strategy)
    return L.Trainer(
        **tcfg,
        strategy=strategy,
        default_root_dir=str(out),
        logger=loggers,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
    )
