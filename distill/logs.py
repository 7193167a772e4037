"""The run's loggers: CSV always (kept across resumes), W&B when configured.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts ("Previous log files
in this directory will be deleted"), so a resumed run lost every row written before it. Here a
resumed run keeps the rows up to the step it resumes from (later rows were never checkpointed and
are about to be written again) and appends.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from common.atomic import atomic_path
from distill.config import LoggerConfig


def keep_rows_until(path: Path, step: int) -> list[str]:
    """Drop the rows of ``metrics.csv`` after ``step`` (atomically); returns its columns."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [r for r in reader if not r.get("step") or int(float(r["step"])) <= step]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return columns


class _ResumedWriter(ExperimentWriter):
    """Lightning's CSV writer that continues an existing ``metrics.csv`` instead of deleting it."""

    def __init__(self, log_dir: str, resume_step: int) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            self.metrics_keys = sorted(keep_rows_until(path, self.resume_step))


class RunCSVLogger(CSVLogger):
    """``<out>/csv/metrics.csv``; with ``resume_step`` set, earlier rows are kept."""

    def __init__(self, save_dir: str | Path, resume_step: int | None = None) -> None:
        super().__init__(save_dir=str(save_dir), name="csv", version="")
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.resume_step is not None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumedWriter(self.log_dir, self.resume_step)
        return super().experiment


def make_loggers(
    logger: LoggerConfig,
    out: Path,
    run_name: str,
    hparams: Mapping[str, Any],
    resume_step: int | None = None,
) -> list:
    """CSV (resume-safe) plus W&B when ``logger.wandb`` is configured and can start;
    ``hparams`` (the run's config as plain data) is what W&B records."""
    loggers: list = [RunCSVLogger(out, resume_step)]
    if logger.wandb is not None and logger.wandb.enabled:
        from distill.wandb import make_wandb_logger

        wandb_logger = make_wandb_logger(logger.wandb, out, run_name, hparams)
        if wandb_logger is not None:
            loggers.append(wandb_logger)
    return loggers


def close_loggers(logger: LoggerConfig, loggers: list) -> None:
    """Finalize the fit's loggers; close the W&B run so the next fit starts its own."""
    for each in loggers:
        each.finalize("success")
    if logger.wandb is not None:
        from distill.wandb import finish

        finish()
