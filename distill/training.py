"""The fits of a run: the distillation (``distil``) and the from-labels baseline on the same
budget (``train_baseline``), each one ``train_student``."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import lightning as L

from data.stream import NoUsableSample
from distill.checkpoints import resolve_resume
from distill.cli_checks import SETUP_ERRORS, UsageError, one_line
from distill.config import LIVE_TEACHER_MODES, TrainConfig
from distill.factories import make_callbacks, make_datamodule, make_module, make_trainer
from distill.results import write_rank_record
from distill.summary import describe_teacher, stored_teacher, teacher_mismatch
from teachers.zoo import TeacherWeightsUnavailable

log = logging.getLogger(__name__)


def distil(c: TrainConfig, out: Path, resume: tuple[str | None, int]) -> tuple:
    """Distil the student (the teacher loaded only when the loss needs it): (datamodule, result)."""
    from data.teacher_setup import teacher_from_config

    d = c.data
    dm = make_datamodule(d, c.seed, d.train_sets, c.mode, d.samples_per_epoch)
    dm.prepare()
    teacher = None
    if c.mode in LIVE_TEACHER_MODES or c.loss.feature_weight > 0:
        try:  # data/teacher_setup.py reads the teacher section as a mapping
            teacher = teacher_from_config(c.teacher, num_classes=dm.num_classes)
        except TeacherWeightsUnavailable as e:  # no checkpoint and no hub: one line, no traceback
            raise UsageError(f"mode={c.mode} runs the teacher in the training step: {e}") from None
        except SETUP_ERRORS as e:
            raise UsageError(one_line(e)) from None
    # seeded again: building the data in this run (a cold cache) draws from the global RNGs,
    # and the student's initialisation must not depend on whether the cache was warm
    L.seed_everything(c.seed, workers=True, verbose=False)
    result = train_student(c, dm, teacher, out, run_name_of(c), c.mode, resume)
    if teacher is not None:
        result["live_teacher"] = live_teacher_record(c.mode, c.teacher.checkpoint, dm, teacher)
    return dm, result


def live_teacher_record(mode: str, checkpoint: str | None, dm, teacher) -> dict:
    """The teacher in the loop; in hybrid mode also the stored sets another teacher labelled
    (a warning names both: the student learns from two teachers)."""
    live = {"spec": teacher.info.spec, "checkpoint": checkpoint}
    if mode != "hybrid":
        return live
    stored = [n for n in dm.train_sets if n not in dm.live]
    others = teacher_mismatch(live, dm.root, stored)
    if others:
        log.warning(
            "mode=hybrid: the live teacher %s is not the teacher that labelled the stored sets "
            "(%s): the student learns from both (results.json: live_teacher, stored_teachers)",
            describe_teacher(live),
            "; ".join(f"{n}: {describe_teacher(t)}" for n, t in others.items()),
        )
    return {
        **live,
        "labels_from": {n: "live" if n in dm.live else "stored" for n in dm.train_sets},
        "stored_teachers": {n: stored_teacher(dm.root, n) for n in stored},
        "differs": sorted(others),
    }


def run_name_of(c: TrainConfig) -> str:
    """``run_name``, or ``<student>-<mode>``."""
    return c.run_name or f"{c.student.name}-{c.mode}"


def train_baseline(c: TrainConfig, dm, trainer, out: Path) -> dict:
    """The from-labels baseline on the distillation run's budget (single-device jobs only)."""
    if not c.baseline.enabled:
        return {}
    if trainer.world_size > 1:
        log.warning("baseline run skipped: it runs on single-device jobs only")
        return {}
    if not trainer.is_global_zero:
        return {}
    d, name = c.data, c.student.name
    samples = d.samples_per_epoch or dm.steps_per_epoch(1) * d.batch_size
    base_dm = make_datamodule(d, c.seed, c.baseline.train_sets, "offline", samples)
    L.seed_everything(c.seed, workers=True, verbose=False)
    base_out = out / "baseline"
    base_resume = (None, 0)
    if c.ckpt_path == "last" and (base_out / "checkpoints" / "last.ckpt").is_file():
        base_resume = resolve_resume("last", base_out / "checkpoints", name)
    run_name = f"{run_name_of(c)}-baseline"
    base = train_student(c, base_dm, None, base_out, run_name, "labels", base_resume)
    return {"baseline_metrics": base["metrics"], "baseline_wall_s": base["wall_s"]}


def train_student(
    c: TrainConfig,
    dm,
    teacher,
    out: Path,
    run_name: str,
    mode: str,
    resume: tuple[str | None, int],
) -> dict:
    """One fit + final validation of a student; returns its metrics and checkpoint paths.

    ``resume`` is a checked (checkpoint path, its step) pair, or (None, 0) for a fresh run.
    """
    from distill.logs import close_loggers, make_loggers
    from distill.preemption import fit_or_preempted

    dm.prepare()
    module = make_module(c, dm.num_classes, teacher, mode)
    best, last, callbacks = make_callbacks(c.checkpoint.monitor, dm, out, mode)
    ckpt_path, resume_step = resume
    out.mkdir(parents=True, exist_ok=True)  # W&B looks for it when it starts
    resume_at = resume_step if ckpt_path else None
    loggers = make_loggers(c.logger, out, run_name, asdict(c), resume_at)
    trainer = make_trainer(c.trainer, out, loggers, callbacks)
    start = time.perf_counter()
    try:
        fit_or_preempted(
            trainer,
            module,
            datamodule=dm,
            ckpt_path=ckpt_path,
            weights_only=True,
            checkpoint=last.path,
        )
    except NoUsableSample as e:  # raised in a loader worker: its message, not two tracebacks
        raise UsageError(
            f"{_last_line(e)}; replace those shards or rebuild the set (python -m data.build)"
        ) from None
    wall = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    write_rank_record(out, trainer, metrics, module)
    close_loggers(c.logger, loggers)
    return {
        "metrics": metrics,
        "wall_s": round(wall, 1),
        "best_checkpoint": best.best_model_path,
        "last_checkpoint": str(last.path),
        "global_step": trainer.global_step,
        "module": module,
        "trainer": trainer,
    }


def _last_line(e: BaseException) -> str:
    """The original message of an error a DataLoader worker raised (the wrapper adds a
    traceback before it)."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(e).__name__
    return last.split(": ", 1)[1] if last.startswith(f"{type(e).__module__}.") else last
