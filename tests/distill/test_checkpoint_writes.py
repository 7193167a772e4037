"""How a run's end is saved, on a real trainer: the last step always validates; a full disk is
one line, the temporary file is removed and the previous ``last.ckpt`` kept; checkpoints get the
mode of every other output."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from distill.callbacks import ValidateAtEnd
from distill.checkpoints import AtomicCheckpointIO, CheckpointWriteError, LastCheckpoint


def _fit(ckpt_dir: Path, root: Path) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[LastCheckpoint(ckpt_dir)],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(root),
    )
    trainer.fit(BoringModel())


def test_a_full_disk_is_one_line_removes_the_temporary_and_keeps_last_ckpt(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    _fit(ckpt_dir, tmp_path)
    last = ckpt_dir / "last.ckpt"
    before = last.read_bytes()
    (tmp_path / "notes.txt").write_text("any other output")
    assert stat.S_IMODE(last.stat().st_mode) == stat.S_IMODE(
        (tmp_path / "notes.txt").stat().st_mode
    )
    tmp = ckpt_dir / "last.ckpt.tmp"
    tmp.symlink_to("/dev/full")  # every write there fails with ENOSPC, as on a full disk
    with pytest.raises(CheckpointWriteError) as err:
        _fit(ckpt_dir, tmp_path)
    text = str(err.value.code)
    assert text == (
        f"error: could not write checkpoint {last}: No space left on device; "
        "the previous last.ckpt is kept"
    )
    assert not os.path.lexists(tmp) and last.read_bytes() == before


class _Validations(L.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        self.steps.append(trainer.global_step)


@pytest.mark.parametrize(
    "max_steps, every, expected",
    [(3, 1, [3]), (40, 2, [40]), (64, 1, [64]), (70, 1, [64, 70])],  # 64 batches an epoch
)
def test_the_last_step_validates_once_in_any_epoch(max_steps, every, expected, tmp_path):
    seen = _Validations()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        check_val_every_n_epoch=every,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ValidateAtEnd(), seen],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(BoringModel())
    assert trainer.global_step == max_steps and seen.steps == expected


def test_last_ckpt_after_a_validation_at_the_last_step_resumes_its_logging_step(tmp_path):
    """A resume continues logging at the step after the last one (not one step early)."""
    ckpt_dir = tmp_path / "checkpoints"
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ValidateAtEnd(), LastCheckpoint(ckpt_dir)],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(BoringModel())
    ckpt = torch.load(ckpt_dir / "last.ckpt", weights_only=True, map_location="cpu")
    loop = ckpt["loops"]["fit_loop"]["epoch_loop.state_dict"]
    assert ckpt["global_step"] == 3 and loop["_batches_that_stepped"] == 3
