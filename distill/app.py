"""``run(cfg)``: the distillation job, top to bottom.

1. check the command line (``+student=``, no ``-m`` with DDP);
2. data: build the configured shard sets if they are missing (training the teacher first if it
   is missing too: the embedded default does both on a fresh machine);
3. distil the student; 4. train the from-labels baseline on the same budget (embedded default);
5. print the summary, write ``results.json``, export the student (safetensors + ONNX).
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

log = logging.getLogger("distill")


class UsageError(SystemExit):
    """A command-line mistake: exits non-zero with a message that says what to type."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


def student_options(cfg_dir: Path | None = None) -> list[str]:
    """The ``+student=`` choices: conf/student/*.yaml (plus --config-dir additions via Hydra)."""
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
            "choose a student with +student=<name> (note the +), e.g. "
            f"python -m distill +student=mnv4_conv_s. Choices: {', '.join(student_options())}"
        )
    name = cfg.student.name
    if name not in students.list_models():
        raise UsageError(f"student.name={name!r} unknown; available: {students.list_models()}")
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


def _is_launcher_rank_zero() -> bool:
    """True in the process that launched the job (children of DDP have LOCAL_RANK>0 set)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def ensure_data(c: dict) -> None:
    """Build whichever configured shard sets are missing (rank 0 only; others wait for them)."""
    from data.builder import build_sets, summary
    from data.sources import open_source
    from teachers.config import teacher_from_config

    root = Path(c["data"]["root"])
    wanted = {n for n, w in c["data"]["train_sets"].items() if w > 0} | {c["data"]["val_set"]}
    if c["mode"] == "online":
        wanted = {c["data"]["online"]["set"], c["data"]["val_set"]}
    if c.get("baseline", {}).get("enabled"):
        wanted |= {n for n, w in c["baseline"]["train_sets"].items() if w > 0}
    missing = sorted(n for n in wanted if not (root / n / "manifest.json").is_file())
    if not missing:
        return
    if not c["data"].get("build_if_missing", True):
        raise FileNotFoundError(
            f"shard sets {missing} not found under {root}; build them with python -m data.build "
            "or set data.build_if_missing=true"
        )
    if not _is_launcher_rank_zero():
        deadline = time.time() + 24 * 3600
        while any(not (root / n / "manifest.json").is_file() for n in missing):
            if time.time() > deadline:
                raise TimeoutError(f"waited a day for rank 0 to build {missing}")
            time.sleep(5)
        return
    unknown = [n for n in missing if n not in c["variants"]]
    if unknown:
        raise ValueError(
            f"data sets {unknown} are neither built under {root} nor configured as variants "
            f"({sorted(c['variants'])})"
        )
    variants = {n: c["variants"][n] for n in missing}
    needed = {v["source"] for v in variants.values()}
    tcfg = c["teacher"]
    needed |= {tcfg.get(k) for k in ("train_on", "validate_on") if tcfg.get(k)}
    sources = {n: open_source(c["sources"][n]) for n in sorted(needed)}
    teacher = None
    if any(v.get("label", True) for v in variants.values()):
        teacher = teacher_from_config(tcfg, sources)
        if torch.cuda.is_available():
            teacher.cuda()
    log.info("building shard sets %s under %s", missing, root)
    reports = build_sets(variants, sources, teacher, root, c["build"])
    print(summary(reports, root))


def make_loggers(c: dict, out: Path, run_name: str) -> list:
    from lightning.pytorch.loggers import CSVLogger

    loggers: list = [CSVLogger(save_dir=str(out), name="csv", version="")]
    wcfg = c.get("logger", {}).get("wandb")
    if wcfg and wcfg.get("enabled", True):
        from distill.wandb import make_wandb_logger

        wandb_logger = make_wandb_logger(wcfg, out, run_name, c)
        if wandb_logger is not None:
            loggers.append(wandb_logger)
    return loggers


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
    )


def train_student(
    c: dict, dm, teacher, out: Path, run_name: str, mode: str, ckpt_path=None
) -> dict:
    """One fit + final validation of a student; returns its metrics and checkpoint paths."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from distill.callbacks import SampleGrids, SaveOnSigterm
    from distill.module import DistillModule

    dm.prepare()
    loss = dict(c["loss"])
    if mode == "labels":
        loss = {**loss, "label_smoothing": c["baseline"]["label_smoothing"]}
    module = DistillModule(
        c["student"]["name"],
        dm.num_classes,
        teacher,
        mode=mode,
        loss=loss,
        optimizer=c["optimizer"],
        schedule=c["schedule"],
        model={k: v for k, v in c["student"].items() if k != "name"} | c["model"],
        ema=c["ema"],
    )
    ckpt_dir = out / "checkpoints"
    checkpoint = ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename="best-{step}",
        monitor=c["checkpoint"]["monitor"],
        mode="max",
        save_last=True,
    )
    callbacks = [checkpoint, SaveOnSigterm(ckpt_dir), LearningRateMonitor("step")]
    if mode != "online":
        callbacks.append(SampleGrids(dm.root, list(dm.train_sets)))
    loggers = make_loggers(c, out, run_name)
    trainer = make_trainer(c, out, loggers, callbacks)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    wall = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    # every rank records what it did: equal steps and identical (synced) metrics across ranks
    rank_dir = out / "ranks"
    rank_dir.mkdir(parents=True, exist_ok=True)
    (rank_dir / f"rank{trainer.global_rank}.json").write_text(
        json.dumps(
            {
                "global_step": trainer.global_step,
                "metrics": metrics,
                "world_size": trainer.world_size,
                "skipped": module.train_skipped,
            }
        )
    )
    for logger in loggers:
        logger.finalize("success")
    if "wandb" in c.get("logger", {}):
        from distill.wandb import finish

        finish()
    return {
        "metrics": metrics,
        "wall_s": round(wall, 1),
        "best_checkpoint": checkpoint.best_model_path,
        "last_checkpoint": checkpoint.last_model_path,
        "global_step": trainer.global_step,
        "module": module,
        "trainer": trainer,
    }


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
        d["batch_size"],
        d["num_workers"],
        samples_per_epoch,
        "online" if online else "offline",
        d.get("online") if online else None,
        d.get("flip", True),
        c["seed"],
    )


def teacher_top1(root: Path, val_set: str) -> float | None:
    """Teacher top-1 on the validation set, from its stored labels (no extra teacher pass)."""
    from data.labels import decode_soft_label
    from data.shards import read_manifest
    from data.tario import samples

    m = read_manifest(root / val_set)
    if not m.data.get("labels"):
        return None
    right = total = 0
    for url in m.urls():
        with open(url, "rb") as stream:
            for p in samples(stream, url):
                if "cls" in p and "soft.npy" in p:
                    pred = int(decode_soft_label(p["soft.npy"], m.num_classes).argmax())
                    right += pred == int(p["cls"])
                    total += 1
    return right / total if total else None


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


def run(cfg: DictConfig) -> float:
    """The whole job; returns the monitored validation metric (for sweeps and Optuna)."""
    check_command_line(cfg)
    _quiet_libraries()
    from teachers.config import teacher_from_config

    wall_start = time.perf_counter()
    c = OmegaConf.to_container(cfg, resolve=True)
    out = Path(c["paths"]["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(c["seed"], workers=True, verbose=False)
    torch.set_float32_matmul_precision(c["matmul_precision"])

    ensure_data(c)
    d = c["data"]
    dm = datamodule(c, d["train_sets"], c["mode"], d.get("samples_per_epoch"))
    dm.prepare()
    teacher = None
    if c["mode"] == "online" or c["loss"].get("feature_weight", 0) > 0:
        teacher = teacher_from_config(c["teacher"], num_classes=dm.num_classes)
    name = c["student"]["name"]
    run_name = c.get("run_name") or f"{name}-{c['mode']}"
    result = train_student(c, dm, teacher, out, run_name, c["mode"], c.get("ckpt_path"))
    summary = {
        "student": name,
        "mode": c["mode"],
        "student_metrics": result["metrics"],
        "distill_wall_s": result["wall_s"],
        "global_step": result["global_step"],
        "teacher": c["teacher"]["spec"],
        "teacher_top1": teacher_top1(Path(d["root"]), d["val_set"]),
        "best_checkpoint": result["best_checkpoint"],
        "last_checkpoint": result["last_checkpoint"],
        "output_dir": str(out),
    }

    world = result["trainer"].world_size
    if c.get("baseline", {}).get("enabled") and world == 1 and result["trainer"].is_global_zero:
        samples = d.get("samples_per_epoch") or dm.steps_per_epoch(1) * d["batch_size"]
        base_dm = datamodule(c, c["baseline"]["train_sets"], "offline", samples)
        L.seed_everything(c["seed"], workers=True, verbose=False)
        base = train_student(c, base_dm, None, out / "baseline", f"{run_name}-baseline", "labels")
        summary["baseline_metrics"] = base["metrics"]
        summary["baseline_wall_s"] = base["wall_s"]
    elif c.get("baseline", {}).get("enabled") and world > 1:
        log.warning("baseline run skipped: it runs on single-device jobs only")

    if result["trainer"].is_global_zero:
        if c["export"]["enabled"]:
            from distill.export import export_student

            summary["exports"] = export_student(result["module"], out / "export", name, c["export"])
        summary["total_wall_s"] = round(time.perf_counter() - wall_start, 1)
        (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(format_summary(summary))
    return float(result["metrics"].get(c["checkpoint"]["monitor"], 0.0))


def format_summary(s: dict) -> str:
    m, b = s["student_metrics"], s.get("baseline_metrics")

    def pct(v) -> str:
        return "    -" if v is None else f"{100 * v:5.1f}"

    lines = [
        "",
        f"== distillation summary: {s['student']} ({s['mode']}), teacher {s['teacher']}",
        f"  teacher top-1                      {pct(s.get('teacher_top1'))}%",
        f"  student top-1 (distilled)          {pct(m.get('val/top1'))}%",
        f"  student EMA top-1                  {pct(m.get('val/ema_top1'))}%",
    ]
    if b:
        gain = m.get("val/top1", 0) - b.get("val/top1", 0)
        lines += [
            f"  student top-1 from labels (baseline, same steps) {pct(b.get('val/top1'))}%",
            f"  distillation gain                  {100 * gain:+5.1f} points",
        ]
    lines += [
        f"  student-teacher agreement          {pct(m.get('val/agree_top1'))}%",
        f"  wall time                          {s.get('total_wall_s', s['distill_wall_s']):.0f} s",
        f"  checkpoint                         {s['best_checkpoint']}",
        f"  logs and results                   {s['output_dir']}",
    ]
    return "\n".join(lines)
