"""SampleGrids with a real W&B logger in offline mode: the grids reach the run as images."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pytest

from distill.callbacks import SampleGrids
from tests.helpers import write_set


@pytest.fixture
def wandb_logger(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(project="tests", save_dir=str(tmp_path), offline=True)
    yield logger
    import wandb

    wandb.finish()


def _fit_start(callback: SampleGrids, logger) -> None:
    trainer = L.Trainer(
        accelerator="cpu", logger=[logger], enable_progress_bar=False, enable_model_summary=False
    )
    callback.on_fit_start(trainer, L.LightningModule())


@pytest.mark.slow  # starts an offline W&B run
def test_sample_grids_log_one_image_per_set_to_an_offline_wandb_run(tmp_path, wandb_logger):
    root = tmp_path / "shards"
    write_set(root, "randaug", [4])
    write_set(root, "mixup", [3], offset=20)
    _fit_start(SampleGrids(root, ["randaug", "mixup"], n=4), wandb_logger)
    run_dir = wandb_logger.experiment.dir
    import wandb

    wandb.finish()
    pngs = sorted(Path(run_dir).rglob("*.png"))
    assert len(pngs) == 2, pngs
    assert all("samples" in p.name for p in pngs)


def test_a_missing_set_is_a_warning_and_never_stops_training(tmp_path, wandb_logger, caplog):
    with caplog.at_level(logging.WARNING, logger="distill"):
        _fit_start(SampleGrids(tmp_path, ["missing"]), wandb_logger)
    assert "could not log sample grids" in caplog.text
