"""Exporting the trained student: both weight sets as safetensors, the better one as ONNX.

The run holds two sets of student weights, the raw student and its EMA (when enabled); the one
with the better validation top-1 (``choose_weights``: a tie goes to the EMA) becomes
``NAME.safetensors`` and, with ``export.onnx``, ``NAME.onnx`` (compared with PyTorch in
onnxruntime); the other is kept as ``NAME_raw.safetensors`` or ``NAME_ema.safetensors``. Every
file carries ``ExportMeta``. A failed ONNX export is a warning and an ``onnx_error`` entry, not a
failed run: the safetensors are the result.

``python -m distill.export <run dir or checkpoint> --runtimes onnx,executorch,litert [--int8]``
(and ``export.runtimes`` at the end of a run) writes the student for mobile runtimes and
measures each file (``distill.runtime_table.export_runtimes``: ``export/runtimes.json``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import nn

from distill.config import ExportConfig
from distill.runtime_table import export_runtimes
from students.export import export_onnx, save_safetensors
from students.weights import ExportMeta, mean_std_tuple

log = logging.getLogger(__name__)

TOP1 = {"raw": "val/top1", "ema": "val/ema_top1"}


def choose_weights(metrics: Mapping[str, float], has_ema: bool) -> str:
    """``"ema"`` or ``"raw"``: the weights with the better validation top-1.

    A tie goes to the EMA: at equal accuracy the running average is the smoother set of the same
    run (and the one timm and the paper report). Without an EMA, or without its metric, ``"raw"``.
    """
    ema, raw = metrics.get(TOP1["ema"]), metrics.get(TOP1["raw"])
    if not has_ema or ema is None:
        return "raw"
    return "ema" if raw is None or float(ema) >= float(raw) else "raw"


def _weights(module) -> dict[str, nn.Module]:
    models = {"raw": module.student}
    if module.ema is not None:
        models["ema"] = module.ema.module
    return models


def export_student(
    module,
    out: Path,
    name: str,
    cfg: ExportConfig,
    metrics: Mapping[str, float] | None = None,
    classes: Sequence[str] | None = None,
    image_size: int | None = None,
) -> dict:
    """Write both weight sets as safetensors and the better one (``choose_weights``) as ONNX.

    ``module`` is a ``DistillModule``: its student and EMA are exported from CPU eval copies, so
    it stays on its device and in its training mode. ``cfg`` is the ``export`` config (``onnx``,
    ``resolution``; a set ``resolution`` overrides ``image_size``, and without either the
    trainer's datamodule gives it). Without ``metrics`` the raw student is exported as the main
    file (the older four-argument call still works). Returns the paths written,
    ``exported`` ("ema" or "raw") and the ONNX check (or ``onnx_error``: ONNX is a convenience,
    the safetensors are the result).
    """
    out.mkdir(parents=True, exist_ok=True)
    metrics = metrics or {}
    models = _weights(module)
    chosen = choose_weights(metrics, "ema" in models)
    resolution = _resolution(module, cfg, image_size)

    def meta(kind: str) -> ExportMeta:
        top1 = metrics.get(TOP1[kind])
        return ExportMeta(
            student=name,
            num_classes=int(module.student.num_classes),
            resolution=resolution,
            weights=kind,
            mean=mean_std_tuple(module.mean),
            std=mean_std_tuple(module.std),
            classes=tuple(classes) if classes is not None else None,
            val_top1=float(top1) if top1 is not None else None,
        )

    result: dict = {"exported": chosen}
    for kind, model in models.items():
        file = f"{name}.safetensors" if kind == chosen else f"{name}_{kind}.safetensors"
        result[f"{kind}_safetensors"] = str(save_safetensors(model, out / file, meta(kind)))
    result["safetensors"] = result[f"{chosen}_safetensors"]
    (out / f"{name}_{chosen}.safetensors").unlink(missing_ok=True)  # stale, from an older export
    if cfg.onnx:
        result.update(_onnx(models[chosen], out / f"{name}.onnx", meta(chosen)))
    return result


def _resolution(module, cfg: ExportConfig, image_size: int | None) -> int:
    size = cfg.resolution or image_size
    if size is None:
        trainer = getattr(module, "_trainer", None)
        size = getattr(getattr(trainer, "datamodule", None), "image_size", None)
    if size is None:
        raise ValueError(
            "export_student needs image_size (or export.resolution) for the ONNX input"
        )
    return int(size)


def _onnx(model: nn.Module, path: Path, meta: ExportMeta) -> dict:
    try:
        onnx = export_onnx(model, path, meta.resolution, metadata=meta)
    except Exception as e:  # the weights above are the result; ONNX is a convenience
        log.warning("ONNX export failed: %s", e)
        return {"onnx_error": f"{type(e).__name__}: {e}"}
    if not onnx.dynamic_hw:
        log.warning("%s takes a fixed %dx%d input", path.name, meta.resolution, meta.resolution)
    return {
        "onnx": str(onnx.path),
        "onnx_max_abs_diff": onnx.max_abs_diff,
        "onnx_dynamic_hw": onnx.dynamic_hw,
    }


# -- mobile runtimes --------------------------------------------------------------------------
def runtimes_for_run(
    file: Path,
    data,
    out_dir: Path,
    runtimes: Sequence[str],
    int8: bool,
    threads: Sequence[int] = (1, 2),
    runs: int = 50,
    calibration: int = 256,
    max_val: int | None = None,
    student: str | None = None,
    qat_steps: int = 0,
    qat_lr: float = 2e-5,
) -> list[dict]:
    """Export the student in ``file`` (of the run whose data ``data`` locates, a
    ``distill.runtime_inputs.RunData``) to ``runtimes`` and write ``out_dir/runtimes.json``;
    with ``qat_steps``, also the QAT-distilled int8 ExecuTorch file (``distill.qat``)."""
    from distill.runtime_inputs import ExportUsageError, calibration_views, load_source, val_views

    if qat_steps and "executorch" not in runtimes:
        raise ExportUsageError("--qat-steps lowers to ExecuTorch: add executorch to --runtimes")
    src = load_source(file, data, student)
    val = val_views(data, src.meta, max_val)
    cal = calibration_views(data, src.meta, calibration) if int8 else None
    rows = export_runtimes(
        src.model, src.meta, out_dir, runtimes, int8, val, cal, threads=threads, runs=runs
    )
    if qat_steps:
        from common.atomic import write_json
        from distill.qat import qat_rows
        from distill.runtime_table import TABLE, format_table

        rows += qat_rows(src, data, Path(out_dir), val, qat_steps, qat_lr, threads, runs)
        write_json(Path(out_dir) / TABLE, rows)
        print(format_table(rows))
    return rows


def runtimes_at_end(cfg: ExportConfig, data, exports: Mapping, out: Path) -> dict:
    """The ``export.runtimes`` hook of a run (``data``: its ``distill.runtime_inputs.RunData``):
    a rejected or missing runtime is a warning and a ``runtimes_error`` entry, never a lost run."""
    try:
        rows = runtimes_for_run(
            Path(exports["safetensors"]), data, out / "export", list(cfg.runtimes), cfg.int8
        )
    except Exception as e:
        log.warning("mobile runtime export failed: %s: %s", type(e).__name__, e)
        return {"runtimes_error": f"{type(e).__name__}: {e}"}
    return {"runtimes": str(out / "export" / "runtimes.json"), "runtime_rows": len(rows)}


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m distill.export",
        description="Export a trained student to mobile runtimes and measure size, batch-1 "
        "latency and validation top-1 through each runtime (writes <out>/runtimes.json).",
    )
    p.add_argument(
        "source",
        type=Path,
        help="a run directory, or its export/*.safetensors or checkpoints/*.ckpt",
    )
    p.add_argument(
        "--runtimes", default="onnx,executorch", help="comma-separated: onnx, executorch, litert"
    )
    p.add_argument(
        "--int8", action="store_true", help="also int8 by post-training static quantization"
    )
    p.add_argument(
        "--threads", type=_ints, default=[1, 2], help="CPU thread counts to time (default 1,2)"
    )
    p.add_argument("--runs", type=int, default=50, help="timed batch-1 calls per row (default 50)")
    p.add_argument("--calibration", type=int, default=256, help="training views calibrating int8")
    p.add_argument(
        "--max-val", type=int, default=None, help="validation views to score (default all)"
    )
    p.add_argument(
        "--run-dir", type=Path, default=None, help="the run a checkpoint outside it belongs to"
    )
    p.add_argument("--student", default=None, help="refuse a file holding another student")
    p.add_argument(
        "--qat-steps",
        type=int,
        default=0,
        help="also int8 by quantization-aware distillation on the run's shards (ExecuTorch)",
    )
    p.add_argument("--qat-lr", type=float, default=2e-5, help="QAT learning rate (AdamW)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default <run>/export)")
    return p


def main(argv: list[str] | None = None) -> int:
    """The CLI: exit 0 on success, 2 on a usage error, 1 when a runtime rejects the export."""
    from distill.runtime_inputs import ExportUsageError, RunData, find_model_file, run_dir_of
    from students.runtimes import parse_runtimes
    from students.runtimes.base import ExportRejected, MissingRuntime

    args = _parser().parse_args(argv)
    try:
        runtimes = parse_runtimes(args.runtimes)
        if not runtimes:
            raise ExportUsageError(
                "--runtimes is empty: name at least one of onnx, executorch, litert"
            )
        if args.runs < 1 or args.calibration < 1 or args.qat_steps < 0:
            raise ExportUsageError(
                "--runs and --calibration must be at least 1, --qat-steps at least 0"
            )
        source = args.source
        if source.is_dir():
            run_dir, file = source, find_model_file(source)
        elif source.is_file():
            run_dir, file = args.run_dir or run_dir_of(source), source
            if run_dir is None:
                raise ExportUsageError(
                    f"{source} is not inside a run directory: pass --run-dir <the run that "
                    "trained it> so its validation set is known"
                )
        else:
            raise ExportUsageError(f"{source}: no such run directory or file")
        data = RunData.from_run_dir(run_dir)
        out = args.out or run_dir / "export"
        runtimes_for_run(
            file,
            data,
            out,
            runtimes,
            args.int8,
            args.threads,
            args.runs,
            args.calibration,
            args.max_val,
            args.student,
            args.qat_steps,
            args.qat_lr,
        )
    except (ExportUsageError, MissingRuntime, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ExportRejected as e:
        print(
            f"error: {e} (nothing was written; try another runtime or fp32 only)", file=sys.stderr
        )
        return 1
    print(f"wrote {out / 'runtimes.json'}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    sys.exit(main())
