"""The end of a run (rank 0): export the student, write ``results.json`` and the report, print
the summary."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from distill.config import TrainConfig
from distill.results import write_json
from distill.run_files import store_relative
from distill.summary import format_summary

log = logging.getLogger(__name__)


def finish_run(
    c: TrainConfig, summary: dict, result: dict, dm, out: Path, wall_start: float
) -> None:
    """Export the student, write ``results.json``, the report, and print the summary (rank 0)."""
    if c.export.enabled:
        summary["exports"] = export_run(c, result, dm, out)
    summary["total_wall_s"] = round(time.perf_counter() - wall_start, 1)
    write_json(out / "results.json", store_relative(summary, out))
    report = None
    if c.report.enabled:  # after results.json: a failed report is a warning, not a lost run
        from distill.report import report_run
        from distill.training import run_name_of

        report = report_run(out, c.report, c.logger.wandb, run_name_of(c))
    print(format_summary(summary))
    if report is not None:
        print(f"  report                             {report}")


def export_run(c: TrainConfig, result: dict, dm, out: Path) -> dict:
    """Export the student; a failed export is reported, never a lost run."""
    from distill.export import export_student

    try:
        exports = export_student(
            result["module"],
            out / "export",
            c.student.name,
            c.export,
            result["metrics"],
            dm.classes,
            dm.image_size,
        )
        if c.export.runtimes:
            from distill.export import runtimes_at_end
            from distill.runtime_inputs import RunData

            exports.update(runtimes_at_end(c.export, RunData.from_train_config(c), exports, out))
        return exports
    except Exception as e:
        log.error("export failed (%s: %s); the checkpoints are in %s", type(e).__name__, e, out)
        return {"error": f"{type(e).__name__}: {e}"}
