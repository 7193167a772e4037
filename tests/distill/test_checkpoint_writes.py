"""Checkpoint writes on a real trainer: a full disk is one line, the temporary file is removed
and the previous ``last.ckpt`` kept; checkpoints get the mode of every other output."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

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
