"""``run(cfg)``: the distillation job, top to bottom (the composition root: each step is a call
into the module that does that job).

1. ``start_run``: check the command line (``student=``, no ``-m`` with DDP; ``distill.cli_checks``),
   then the one conversion of the config into ``TrainConfig`` whose sections check their values
   (``distill.value_checks``); every later step gets typed sections;
2. ``prepare_data``: build the configured shard sets if they are missing (training the teacher
   first if it is missing too: the embedded default does both on a fresh machine;
   ``distill.run_sets``, ``data.provision``);
3. ``distil`` the student; 4. ``train_baseline``: the from-labels baseline on the same budget
   (``distill.training``);
5. ``finish_run``: export the student (safetensors + ONNX), write ``results.json``, the report,
   print the summary (``distill.finish``).
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from data import remote
from distill.checkpoints import resolve_resume
from distill.cli_checks import (
    SETUP_ERRORS,
    UsageError,
    check_command_line,
    one_line,
    replace_dict_overrides,
)
from distill.config import TrainConfig
from distill.finish import finish_run
from distill.preemption import install_sigterm_escape
from distill.quiet import quiet_libraries
from distill.results import run_summary
from distill.run_sets import ensure_data, transport
from distill.training import distil, train_baseline
from distill.value_checks import checked_config


def run(cfg: DictConfig) -> float:
    """The whole job, the steps of the module docstring; returns the monitored validation metric
    (for sweeps and Optuna)."""
    wall_start = time.perf_counter()
    c = start_run(cfg)  # 1.
    out = Path(c.paths.output_dir)
    resume = resolve_resume(c.ckpt_path, out / "checkpoints", c.student.name)
    prepare_data(c)  # 2.
    dm, result = distil(c, out, resume)  # 3.
    baseline = train_baseline(c, dm, result["trainer"], out)  # 4.
    if result["trainer"].is_global_zero:  # 5.
        summary = {**run_summary(c, dm, result, out), **baseline}
        finish_run(c, summary, result, dm, out, wall_start)
    return float(result["metrics"].get(c.checkpoint.monitor, 0.0))


def start_run(cfg: DictConfig) -> TrainConfig:
    """Check the command line and values, quiet the libraries, seed; the typed config."""
    check_command_line(cfg)
    quiet_libraries()
    install_sigterm_escape()
    replace_dict_overrides(cfg)
    c = checked_config(cfg)
    Path(c.paths.output_dir).mkdir(parents=True, exist_ok=True)
    L.seed_everything(c.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision(c.matmul_precision)
    return c


def prepare_data(c: TrainConfig) -> None:
    """``ensure_data``, with config mistakes and unreachable or refused sets as one-line errors."""
    remote.configure(transport(c))
    try:
        ensure_data(c)
    except SETUP_ERRORS as e:
        raise UsageError(one_line(e)) from None
