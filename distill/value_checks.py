"""Value checks of a resolved train config: reject values that would fail late (after the model
is built) or mislead, naming the key."""

from __future__ import annotations

from data.datamodule import live_sets
from data.teacher_setup import MissingTeacherError, teacher_needs_training
from distill.cli_checks import UsageError
from distill.config import LIVE_TEACHER_MODES, MODES
from distill.losses import KINDS, kd_params


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_values(c: dict) -> None:
    """Reject values that would fail late (after the model is built) or mislead; name the key."""
    d, t = c["data"], c["trainer"]
    checks = [
        ("data.batch_size", d["batch_size"], _positive_int(d["batch_size"]), "a positive integer"),
        (
            "data.num_workers",
            d["num_workers"],
            isinstance(d["num_workers"], int) and d["num_workers"] >= 0,
            "an integer >= 0",
        ),
        (
            "data.samples_per_epoch",
            d.get("samples_per_epoch"),
            d.get("samples_per_epoch") is None or _positive_int(d["samples_per_epoch"]),
            "null or a positive integer",
        ),
        (
            "trainer.max_steps",
            t.get("max_steps"),
            _positive_int(t.get("max_steps")) or t.get("max_steps") == -1,
            "a positive integer (or -1 with trainer.max_epochs)",
        ),
        (
            "build.batch_size",
            c["build"]["batch_size"],
            _positive_int(c["build"]["batch_size"]),
            "a positive integer",
        ),
        (
            "mode",
            c["mode"],
            c["mode"] in MODES,
            ", ".join(MODES[:-1]) + " or " + MODES[-1],
        ),
        (
            "data.decode",
            d["decode"],
            d["decode"] in ("auto", "cpu", "gpu"),
            "auto, cpu or gpu",
        ),
        (
            "build.store",
            c["build"]["store"],
            c["build"]["store"] in ("pixels", "recipe"),
            "pixels or recipe",
        ),
        (
            "optimizer.lr",
            c["optimizer"]["lr"],
            isinstance(c["optimizer"]["lr"], int | float) and c["optimizer"]["lr"] > 0,
            "a positive number",
        ),
        (
            "loss.kind",
            c["loss"]["kind"],
            c["loss"]["kind"] in KINDS,
            f"one of {', '.join(KINDS)} (conf/loss/)",
        ),
        (
            "ema.decay",
            c["ema"]["decay"],
            isinstance(c["ema"]["decay"], int | float) and 0 <= c["ema"]["decay"] < 1,
            "in [0, 1) (0 turns the EMA off)",
        ),
    ]
    for key, value, ok, expected in checks:
        if not ok:
            raise UsageError(f"{key} must be {expected}, got {value!r}")
    try:
        kd_params(c["loss"])  # the kind and its weights, checked as the module will
    except ValueError as e:
        raise UsageError(str(e)) from None
    if t.get("max_steps") == -1 and not _positive_int(t.get("max_epochs")):
        raise UsageError("trainer.max_steps=-1 needs trainer.max_epochs set to a positive integer")
    for key in ("data.train_sets", "baseline.train_sets"):
        section, name = key.split(".")
        sets = c.get(section, {}).get(name) or {}
        bad = {k: w for k, w in sets.items() if not (isinstance(w, int | float) and w >= 0)}
        if bad:
            raise UsageError(f"{key} weights must be numbers >= 0 (0 drops a set), got {bad}")
    if c["mode"] == "hybrid":
        try:
            live_sets(d["train_sets"], d["labels_from"])
        except ValueError as e:
            raise UsageError(str(e)) from None
    check_live_teacher(c)


def check_live_teacher(c: dict) -> None:
    """Online and hybrid runs need a teacher with weights: say so before any work."""
    mode, t = c["mode"], c["teacher"]
    if mode not in LIVE_TEACHER_MODES:
        return
    if t.get("checkpoint") is None and not t.get("pretrained", True):
        raise UsageError(
            f"mode={mode} runs the teacher in the training step, but teacher.checkpoint is null "
            f"and teacher.pretrained=false (random weights): set teacher.checkpoint to the "
            f"weights of {t['spec']}"
        )
    try:
        teacher_needs_training(t)
    except MissingTeacherError as e:
        raise UsageError(f"mode={mode} runs the teacher in the training step: {e}") from None
