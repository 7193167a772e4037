"""Checkpoints a run can always resume from: ``last.ckpt`` is the last step, resumes are checked.

Lightning's ``ModelCheckpoint(monitor=..., save_last=True)`` rewrites ``last.ckpt`` only when a
new best is saved (Lightning 2.6), so ``ckpt_path=last`` could silently go back in training.
``LastCheckpoint`` writes it after every validation, at the end of training and on SIGTERM (also
when a SIGTERM to the process group killed the loader workers). ``AtomicCheckpointIO`` writes
every checkpoint (best, last, SLURM's ``hpc_ckpt``) to a temporary name beside it first, so a kill
mid-write never leaves a truncated file, and a failed write (a full disk) is one line that
removes the temporary file and keeps the previous checkpoint.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from common.atomic import atomic_path
from distill.preemption import stopped_by_sigterm

log = logging.getLogger(__name__)

LAST = "last.ckpt"


class CheckpointError(SystemExit):
    """A checkpoint that cannot be resumed from; the message names the file and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


class CheckpointWriteError(SystemExit):
    """A checkpoint could not be written (a full disk, a quota); the message says which."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to ``<name>.tmp`` in its folder, then renames it into place.

    Lightning's own writer stages the file in the system temp folder and moves it over: across
    file systems that is a copy, which a full disk left half-written under the temporary name.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):  # remote: Lightning's writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        try:  # a fixed temporary name: a killed save leaves one file, the next save replaces it
            with atomic_path(path, path.with_name(path.name + ".tmp")) as tmp, open(tmp, "wb") as f:
                torch.save(checkpoint, f)
        except OSError as e:
            kept = f"; the previous {path.name} is kept" if path.is_file() else ""
            raise CheckpointWriteError(
                f"could not write checkpoint {path}: {e.strerror or e}{kept}"
            ) from None


class LastCheckpoint(L.Callback):
    """Keeps ``<dirpath>/last.ckpt`` at the latest step: after validation, at the end, on SIGTERM.

    The trainer's checkpoint writer makes each write atomic (``AtomicCheckpointIO``, which the
    app's ``make_trainer`` installs).
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.saved_step: int | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    def _save(self, trainer: L.Trainer, again: bool = False) -> None:
        if not again and self.saved_step == trainer.global_step and self.path.is_file():
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(self.path, weights_only=False)  # collective: every rank calls it
        self.saved_step = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # also after a save at this step's validation: that one ran before the loop counted the
        # step as logged, and a run resumed from it logged every later step one step early
        self._save(trainer, again=True)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception) -> None:
        if stopped_by_sigterm(exception, trainer):  # loader workers may be dead: no data needed
            self._save(trainer)
            log.warning("SIGTERM: saved %s at step %d", self.path, trainer.global_step)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def check_resume_checkpoint(path: Path, student: str) -> dict:
    """Read ``path`` safely (``weights_only=True``) and check it can resume ``student``.

    Runs before Lightning does, so a bad file gets a message that names it and says what to do
    (never torch's advice to retry with ``weights_only=False``, which would unpickle it).
    Returns the checkpoint's ``global_step`` and student.
    """
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): its save was cut off; "
            "resume from another checkpoint in the same folder"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e) and zipfile.is_zipfile(path):
            raise CheckpointError(
                f"checkpoint {path} holds Python objects other than tensors and plain values; "
                "this project only loads checkpoints it can read without unpickling code "
                "(weights_only=True). Resume from a checkpoint this project wrote."
            ) from None
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) is not a PyTorch checkpoint, or is damaged "
            f"({type(e).__name__}: {_first_line(e)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) is not a PyTorch checkpoint, or is damaged "
            f"({type(e).__name__}: {_first_line(e)})"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "loops" not in ckpt:
        raise CheckpointError(
            f"checkpoint {path} is not a Lightning training checkpoint (no optimizer and loop "
            "state), so training cannot resume from it; ckpt_path= takes the .ckpt files in "
            "<run dir>/checkpoints/"
        )
    made_for = (ckpt.get("hyper_parameters") or {}).get("student")
    if made_for and made_for != student:
        raise CheckpointError(
            f"checkpoint {path} is of student {made_for!r} but this run's student is "
            f"{student!r}: pass +student={made_for}, or another checkpoint"
        )
    return {"global_step": int(ckpt.get("global_step", 0)), "student": made_for}


def latest_requeue_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``hpc_ckpt_<n>.ckpt`` Lightning saved in ``run_dir`` before a SLURM requeue."""
    found = []
    for p in run_dir.glob("hpc_ckpt_*.ckpt"):
        number = p.stem.removeprefix("hpc_ckpt_")
        if number.isdigit():
            found.append((int(number), p))
    return max(found)[1] if found else None


def resolve_resume(ckpt_path: str | None, ckpt_dir: Path, student: str) -> tuple[str | None, int]:
    """``ckpt_path`` (None, ``last`` or a file) -> a checked path and its step (0 when none).

    With no ``ckpt_path``, a job that SLURM requeued (``--signal=SIGUSR1@90``) resumes from the
    checkpoint Lightning saved in the run folder before the requeue, as Lightning itself would;
    naming it here keeps the run's metrics and checks the file first.
    """
    if ckpt_path in (None, ""):
        requeued = latest_requeue_checkpoint(ckpt_dir.parent)
        if requeued is None:
            return None, 0
        log.info("resuming the requeued job from %s", requeued)
        return str(requeued), check_resume_checkpoint(requeued, student)["global_step"]
    path = ckpt_dir / LAST if ckpt_path == "last" else Path(str(ckpt_path))
    if ckpt_path == "last" and not path.is_file():
        raise CheckpointError(
            f"ckpt_path=last: there is no {path}. Every run writes to a new folder, so point "
            "this one at the folder of the run to resume: ckpt_path=last "
            "hydra.run.dir=<that run's folder> (or ckpt_path=<a .ckpt file>)"
        )
    info = check_resume_checkpoint(path, student)
    return str(path), info["global_step"]
