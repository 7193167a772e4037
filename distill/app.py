"""``run(cfg)``: the distillation job, top to bottom.

1. ``start_run``: check the command line (``student=``, no ``-m`` with DDP) and the values;
2. ``prepare_data``: build the configured shard sets if they are missing (training the teacher
   first if it is missing too: the embedded default does both on a fresh machine);
3. ``distil`` the student; 4. ``train_baseline``: the from-labels baseline on the same budget;
5. ``finish_run``: export the student (safetensors + ONNX), write ``results.json``, print the
   summary.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

import students
from common.files import wait_for_files
from common.weights import CheckpointError as WeightsError
from data import remote, urls
from data.build import BuildConfigError
from data.config import RemoteConfig, TeacherConfig, build_sections, typed
from data.datamodule import live_sets
from data.remote import RemoteError
from data.sources import SourceError
from data.stream import NoUsableSample
from data.teacher_setup import MissingTeacherError, teacher_needs_training
from data.urls import UrlError
from distill.checkpoints import AtomicCheckpointIO, resolve_resume
from distill.config import LIVE_TEACHER_MODES, MODES, check_schema
from distill.losses import KINDS, kd_params
from distill.preemption import install_sigterm_escape
from distill.run_files import store_relative
from distill.summary import (
    build_skips,
    data_teachers,
    describe_teacher,
    format_summary,
    stored_teacher,
    teacher_label,
    teacher_mismatch,
    teacher_top1,
)
from teachers.zoo import TeacherWeightsUnavailable

log = logging.getLogger(__name__)


class UsageError(SystemExit):
    """A command-line mistake: exits non-zero with a message that says what to type."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


def student_options(cfg_dir: Path | None = None) -> list[str]:
    """The ``student=`` choices: conf/student/*.yaml (plus --config-dir additions via Hydra)."""
    try:
        from hydra.core.global_hydra import GlobalHydra

        gh = GlobalHydra.instance()
        if gh.is_initialized():
            return sorted(gh.config_loader().get_group_options("student"))
    except Exception:
        pass
    root = cfg_dir or Path(__file__).resolve().parents[1] / "conf"
    return sorted(p.stem for p in (root / "student").glob("*.yaml"))


def check_command_line(cfg: DictConfig) -> None:
    """Fail fast, before any work, on the mistakes users actually make."""
    if OmegaConf.is_missing(cfg, "student"):
        raise UsageError(
            "choose a student with student=<name>, e.g. "
            f"python -m distill student=mnv4_conv_s. Choices: {', '.join(student_options())}"
        )
    unset = sorted(k for k in cfg if k != "student" and OmegaConf.is_missing(cfg, k))
    if unset:  # e.g. dataset=folder without data_root
        raise UsageError(
            " ".join(f"{k}=..." for k in unset) + " must be set on the command line "
            "(e.g. dataset=folder data_root=/path/to/images)"
        )
    try:
        check_schema(cfg)
    except ValueError as e:
        raise UsageError(
            f"{e} (a misspelt or extra key? python -m distill --cfg job shows all)"
        ) from None
    name = cfg.student.name
    if cfg.student.get("spec_file"):
        register_student_spec(cfg.student)
    elif name not in students.list_models():
        raise UsageError(
            f"student.name={name!r} unknown; available: {students.list_models()}, or a student "
            "found by python -m nas, which needs student.spec_file=<run dir>/searched.yaml"
        )
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        t = cfg.trainer
        devices = t.devices if isinstance(t.devices, int) else 2
        if (devices > 1 or t.num_nodes > 1) and "spawn" not in str(t.strategy):
            raise UsageError(
                "-m (sweeps) cannot be combined with multi-process DDP: Lightning's DDP launcher "
                "re-runs the command line and would rerun the sweep in every process (Lightning "
                "#11300). Run one command per sweep point instead (a shell loop, or "
                "hydra/launcher=submitit_slurm with one process per job)."
            )


def register_student_spec(student: DictConfig) -> None:
    """``student=searched student.spec_file=<file>``: register the spec file's student (every
    process that builds it runs this, DDP children included); its name must be the config's."""
    try:
        spec = students.register_spec_file(student.spec_file)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if spec.name != student.name:
        raise UsageError(
            f"student.spec_file={student.spec_file} describes {spec.name!r}, not "
            f"student.name={student.name!r}"
        )


REPLACED_ON_COMMAND_LINE = ("data.train_sets", "baseline.train_sets", "data.labels_from")


def replace_dict_overrides(cfg: DictConfig) -> None:
    """``data.train_sets={randaug: 1}`` on the command line is the whole mix, not a patch.

    Hydra merges a dict given on the command line into the configured one, so the other sets
    (mixup, extra) stayed in at their default weights. For these keys the command line's dict
    replaces the configured one; presets (YAML files) still merge.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    for o in parsed:
        if o.key_or_group in REPLACED_ON_COMMAND_LINE and not o.is_delete():
            value = o.value()
            if isinstance(value, dict):
                OmegaConf.update(cfg, o.key_or_group, value, merge=False)


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
        teacher_needs_training(typed(TeacherConfig, t, "teacher"))
    except MissingTeacherError as e:
        raise UsageError(f"mode={mode} runs the teacher in the training step: {e}") from None


def _is_launcher_rank_zero() -> bool:
    """True in the process that launched the job (children of DDP have LOCAL_RANK>0 set)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def ensure_data(c: dict) -> None:
    """Build whichever configured shard sets are missing (rank 0 only; others wait for them)."""
    from data.build import build_from_config
    from data.builder import summary

    root = urls.check(c["data"]["root"])
    wanted = {n for n, w in c["data"]["train_sets"].items() if w > 0} | {c["data"]["val_set"]}
    # hybrid builds the offline sets: stored labels for some, source images for live recipes
    if c["mode"] == "online":
        wanted = {c["data"]["online"]["set"], c["data"]["val_set"]}
    if c.get("baseline", {}).get("enabled"):
        wanted |= {n for n, w in c["baseline"]["train_sets"].items() if w > 0}
    remote.check_reachable(root)
    missing = sorted(n for n in wanted if not remote.exists(urls.join(root, n, "manifest.json")))
    _check_storage(c, root, sorted(wanted - set(missing)))
    if not missing:
        return
    if not c["data"].get("build_if_missing", True):
        raise FileNotFoundError(
            f"shard sets {missing} not found under {urls.redact(root)}; build them with python -m data.build "
            "or set data.build_if_missing=true"
        )
    if not _is_launcher_rank_zero():
        manifests = [urls.join(root, n, "manifest.json") for n in missing]
        wait_for_files(
            manifests, 24 * 3600, f"waited a day for rank 0 to build {missing}", 5, remote.exists
        )
        return
    log.info("building shard sets %s under %s", missing, root)
    reports = build_from_config(build_sections(c), missing, root)
    print(summary(reports, root))


def _check_storage(c: dict, root: str, built: list[str]) -> None:
    """Built sets must be stored the way ``build.store`` says (a changed default must not leave
    a run silently training on the old pixel views), and recipe sets in this loader's format."""
    from data.recipes import RECIPE_VERSION
    from data.set_storage import storage_mode

    wrong, stale = [], []
    for name in built:
        variant = (c.get("variants") or {}).get(name) or {}
        want = storage_mode(variant.get("kind", "plain"), c["build"]["store"])
        manifest = remote.read_json(urls.join(root, name, "manifest.json"))
        have = (manifest.get("storage") or {}).get("mode", "pixels")
        if have != want:
            wrong.append(f"{name} ({have})")
        elif have == "recipe" and (manifest.get("recipe") or {}).get("version") != RECIPE_VERSION:
            stale.append(name)
    if stale:
        raise UsageError(
            f"recipe sets {', '.join(stale)} under {root} were built with an older recipe format "
            f"(this version renders format {RECIPE_VERSION}): rebuild them with python -m "
            f"data.build build.store=recipe overwrite=true only=[{','.join(stale)}] and this "
            "run's dataset options"
        )
    if wrong:
        raise UsageError(
            f"shard sets {', '.join(wrong)} under {urls.redact(root)} are not stored as build.store="
            f"{c['build']['store']}: rebuild them (python -m data.build build.store="
            f"{c['build']['store']} overwrite=true only=[{','.join(w.split()[0] for w in wrong)}] "
            "with this run's dataset options) or pass build.store to match them"
        )


def make_trainer(c: dict, out: Path, loggers: list, callbacks: list, **overrides) -> L.Trainer:
    from hydra.utils import instantiate

    tcfg = {k: v for k, v in c["trainer"].items()}
    strategy = tcfg.pop("strategy", "auto")
    if isinstance(strategy, dict):
        strategy = instantiate(strategy)
    tcfg.update(overrides)
    return L.Trainer(
        **tcfg,
        strategy=strategy,
        default_root_dir=str(out),
        logger=loggers,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
    )


def train_student(
    c: dict, dm, teacher, out: Path, run_name: str, mode: str, resume: tuple[str | None, int]
) -> dict:
    """One fit + final validation of a student; returns its metrics and checkpoint paths.

    ``resume`` is a checked (checkpoint path, its step) pair, or (None, 0) for a fresh run.
    """
    from distill.logs import make_loggers
    from distill.preemption import fit_or_preempted

    dm.prepare()
    module = make_module(c, dm.num_classes, teacher, mode)
    best, last, callbacks = make_callbacks(c, dm, out, mode)
    ckpt_path, resume_step = resume
    out.mkdir(parents=True, exist_ok=True)  # W&B looks for it when it starts
    loggers = make_loggers(c, out, run_name, resume_step if ckpt_path else None)
    trainer = make_trainer(c, out, loggers, callbacks)
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
    close_loggers(c, loggers)
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


def make_module(c: dict, num_classes: int, teacher, mode: str):
    """The ``DistillModule`` of the config's sections; labels mode uses the baseline's smoothing."""
    from dataclasses import replace

    from distill.config import module_sections
    from distill.module import DistillModule

    sections = module_sections(c)
    if mode == "labels":
        smoothing = c["baseline"]["label_smoothing"]
        sections["loss"] = replace(sections["loss"], label_smoothing=smoothing)
    return DistillModule(c["student"]["name"], num_classes, teacher, mode=mode, **sections)


def make_callbacks(c: dict, dm, out: Path, mode: str) -> tuple:
    """(best checkpoint, last checkpoint, every callback of the fit)."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from distill.callbacks import SampleGrids, ValidateAtEnd
    from distill.checkpoints import LastCheckpoint

    ckpt_dir = out / "checkpoints"
    best = ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename="best-{step}",
        monitor=c["checkpoint"]["monitor"],
        mode="max",
        save_last=False,
    )
    last = LastCheckpoint(ckpt_dir)
    callbacks = [ValidateAtEnd(), best, last, LearningRateMonitor("step")]
    if mode != "online":
        callbacks.append(SampleGrids(dm.root, list(dm.train_sets)))
    return best, last, callbacks


def write_rank_record(out: Path, trainer, metrics: dict, module) -> None:
    """Every rank records what it did: equal steps and identical (synced) metrics across ranks."""
    rank_dir = out / "ranks"
    rank_dir.mkdir(parents=True, exist_ok=True)
    (rank_dir / f"rank{trainer.global_rank}.json").write_text(
        json.dumps(
            {
                "global_step": trainer.global_step,
                "metrics": metrics,
                "world_size": trainer.world_size,
                "skipped": module.skipped_summary(),
                "teacher_cost": module.cost.state(),  # this rank's
            }
        )
    )


def close_loggers(c: dict, loggers: list) -> None:
    for logger in loggers:
        logger.finalize("success")
    if "wandb" in c.get("logger", {}):
        from distill.wandb import finish

        finish()


def datamodule(c: dict, train_sets: dict, mode: str, samples_per_epoch: int | None):
    """The run's ``DistillDataModule`` over ``train_sets`` (the distillation or baseline mix).

    Labels mode reads the same shards as offline mode (their ``cls`` entries).
    """
    from data.datamodule import DistillDataModule

    d = c["data"]
    online = mode == "online"
    return DistillDataModule(
        d["root"],
        train_sets,
        d["val_set"],
        batch_size=d["batch_size"],
        num_workers=d["num_workers"],
        samples_per_epoch=samples_per_epoch,
        mode=mode if mode in ("online", "hybrid") else "offline",
        labels_from=d["labels_from"],
        online=d["online"] if online else None,
        flip=d["flip"],
        seed=c["seed"],
        shuffle_buffer=d["shuffle_buffer"],
        val_batch_size=d["val_batch_size"],
        decode=d["decode"],
        recipe_check=d["recipe_check"],
    )


def _quiet_libraries() -> None:
    """Hydra logs at INFO; the ONNX exporter's per-pass INFO lines would bury the summary."""
    for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch._dynamo", "torch.export"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

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


def run(cfg: DictConfig) -> float:
    """The whole job, the steps of the module docstring; returns the monitored validation metric
    (for sweeps and Optuna)."""
    wall_start = time.perf_counter()
    c = start_run(cfg)  # 1.
    out = Path(c["paths"]["output_dir"])
    resume = resolve_resume(c.get("ckpt_path"), out / "checkpoints", c["student"]["name"])
    prepare_data(c)  # 2.
    dm, result = distil(c, out, resume)  # 3.
    baseline = train_baseline(c, dm, result["trainer"], out)  # 4.
    if result["trainer"].is_global_zero:  # 5.
        summary = {**run_summary(c, dm, result, out), **baseline}
        finish_run(c, summary, result, dm, out, wall_start)
    return float(result["metrics"].get(c["checkpoint"]["monitor"], 0.0))


def start_run(cfg: DictConfig) -> dict:
    """Check the command line and values, quiet the libraries, seed; the resolved config."""
    check_command_line(cfg)
    _quiet_libraries()
    install_sigterm_escape()
    replace_dict_overrides(cfg)
    c = OmegaConf.to_container(cfg, resolve=True)
    check_values(c)
    Path(c["paths"]["output_dir"]).mkdir(parents=True, exist_ok=True)
    L.seed_everything(c["seed"], workers=True, verbose=False)
    torch.set_float32_matmul_precision(c["matmul_precision"])
    return c


# config mistakes and refused teacher weights: a one-line usage error, not a traceback
SETUP_ERRORS = (
    BuildConfigError,
    SourceError,
    MissingTeacherError,
    WeightsError,
    UrlError,
    RemoteError,
)


def prepare_data(c: dict) -> None:
    """``ensure_data``, with config mistakes and unreachable or refused sets as one-line errors."""
    remote_cfg = typed(RemoteConfig, c["remote"], "remote")
    remote.configure(
        remote.transport_from_config(remote_cfg, c["data"]["cache_dir"], c["data"]["cache_bytes"])
    )
    try:
        ensure_data(c)
    except SETUP_ERRORS as e:
        raise UsageError(_one_line(e)) from None


def _one_line(e: BaseException) -> str:
    return "; ".join(line.strip() for line in str(e).splitlines() if line.strip())


def distil(c: dict, out: Path, resume: tuple[str | None, int]) -> tuple:
    """Distil the student (the teacher loaded only when the loss needs it): (datamodule, result)."""
    from data.teacher_setup import teacher_from_config

    d = c["data"]
    dm = datamodule(c, d["train_sets"], c["mode"], d["samples_per_epoch"])
    dm.prepare()
    teacher = None
    if c["mode"] in LIVE_TEACHER_MODES or c["loss"]["feature_weight"] > 0:
        try:
            tcfg = typed(TeacherConfig, c["teacher"], "teacher")
            teacher = teacher_from_config(tcfg, num_classes=dm.num_classes)
        except TeacherWeightsUnavailable as e:  # no checkpoint and no hub: one line, no traceback
            raise UsageError(
                f"mode={c['mode']} runs the teacher in the training step: {e}"
            ) from None
        except SETUP_ERRORS as e:
            raise UsageError(_one_line(e)) from None
    # seeded again: building the data in this run (a cold cache) draws from the global RNGs,
    # and the student's initialisation must not depend on whether the cache was warm
    L.seed_everything(c["seed"], workers=True, verbose=False)
    result = train_student(c, dm, teacher, out, _run_name(c), c["mode"], resume)
    if teacher is not None:
        result["live_teacher"] = live_teacher_record(c, dm, teacher)
    return dm, result


def live_teacher_record(c: dict, dm, teacher) -> dict:
    """The teacher in the loop; in hybrid mode also the stored sets another teacher labelled
    (a warning names both: the student learns from two teachers)."""
    live = {"spec": teacher.info.spec, "checkpoint": c["teacher"].get("checkpoint")}
    if c["mode"] != "hybrid":
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


def _run_name(c: dict) -> str:
    return c.get("run_name") or f"{c['student']['name']}-{c['mode']}"


def train_baseline(c: dict, dm, trainer, out: Path) -> dict:
    """The from-labels baseline on the distillation run's budget (single-device jobs only)."""
    if not c["baseline"]["enabled"]:
        return {}
    if trainer.world_size > 1:
        log.warning("baseline run skipped: it runs on single-device jobs only")
        return {}
    if not trainer.is_global_zero:
        return {}
    d, name = c["data"], c["student"]["name"]
    samples = d["samples_per_epoch"] or dm.steps_per_epoch(1) * d["batch_size"]
    base_dm = datamodule(c, c["baseline"]["train_sets"], "offline", samples)
    L.seed_everything(c["seed"], workers=True, verbose=False)
    base_out = out / "baseline"
    base_resume = (None, 0)
    if c.get("ckpt_path") == "last" and (base_out / "checkpoints" / "last.ckpt").is_file():
        base_resume = resolve_resume("last", base_out / "checkpoints", name)
    run_name = f"{_run_name(c)}-baseline"
    base = train_student(c, base_dm, None, base_out, run_name, "labels", base_resume)
    return {"baseline_metrics": base["metrics"], "baseline_wall_s": base["wall_s"]}


def finish_run(c: dict, summary: dict, result: dict, dm, out: Path, wall_start: float) -> None:
    """Export the student, write ``results.json``, the report, and print the summary (rank 0)."""
    if c["export"]["enabled"]:
        summary["exports"] = export_run(c, result, dm, out)
    summary["total_wall_s"] = round(time.perf_counter() - wall_start, 1)
    write_json(out / "results.json", store_relative(summary, out))
    report = None
    if c["report"]["enabled"]:  # after results.json: a failed report is a warning, not a lost run
        from distill.report import report_run

        report = report_run(c, out)
    print(format_summary(summary))
    if report is not None:
        print(f"  report                             {report}")


def run_summary(c: dict, dm, result: dict, out: Path) -> dict:
    """The results of the distillation run as ``results.json`` records them."""
    d, root = c["data"], urls.check(c["data"]["root"])
    sets = [*dm.train_sets, d["val_set"]]
    labelled_by = data_teachers(root, sets)
    top1 = {"top1": None, "samples": 0, "skipped": []}
    try:
        top1 = teacher_top1(root, d["val_set"])
    except Exception as e:  # the run's own results matter more than the teacher's figure
        log.warning("teacher top-1 not computed: %s", e)
    return {
        "student": c["student"]["name"],
        "mode": c["mode"],
        **({"live_teacher": result["live_teacher"]} if "live_teacher" in result else {}),
        "teacher_cost": result["module"].teacher_cost(),
        "student_metrics": result["metrics"],
        "distill_wall_s": result["wall_s"],
        "global_step": result["global_step"],
        "teacher": teacher_label(c["mode"], c["teacher"]["spec"], labelled_by),
        "data_teachers": labelled_by,
        "teacher_top1": top1["top1"],
        "val_set_dir": val_location(root, d["val_set"]),  # where the report reads it
        "skipped": {
            "training": result["module"].skipped_summary(),
            "build": build_skips(root, sets),
            "teacher_top1": top1["skipped"],
        },
        "best_checkpoint": result["best_checkpoint"],
        "last_checkpoint": result["last_checkpoint"],
        "output_dir": str(out),
    }


def val_location(root: str, val_set: str) -> str:
    """The validation set's absolute location (a URL as it is)."""
    where = urls.join(root, val_set)
    return where if urls.is_remote(where) else str(Path(where).resolve())


def export_run(c: dict, result: dict, dm, out: Path) -> dict:
    """Export the student; a failed export is reported, never a lost run."""
    from distill.export import export_student

    try:
        exports = export_student(
            result["module"],
            out / "export",
            c["student"]["name"],
            c["export"],
            result["metrics"],
            dm.classes,
            dm.image_size,
        )
        if c["export"].get("runtimes"):
            from distill.export import runtimes_at_end

            exports.update(runtimes_at_end(c, exports, out))
        return exports
    except Exception as e:
        log.error("export failed (%s: %s); the checkpoints are in %s", type(e).__name__, e, out)
        return {"error": f"{type(e).__name__}: {e}"}


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary name (never a half-written results file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
