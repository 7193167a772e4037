"""Export one student to mobile runtimes and measure each file: size, batch-1 latency, top-1.

For every runtime x precision (fp32, and int8 by post-training static quantization when asked)
the file is written, loaded in that runtime and scored on the run's validation set through
the runtime itself, next to PyTorch fp32 on the same views. Latency is batch 1 on this CPU,
p50/p90 over ``runs`` calls after warm-up, one row per thread count. All files go to a staging
folder first and move into ``out_dir`` only when every export succeeded, with
``runtimes.json`` last: a rejected export leaves nothing behind, and the next export removes the
staging folder a killed one left.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.atomic import write_json
from students.runtimes import get_runtime
from students.runtimes.base import Predict, export_copy
from students.weights import ExportMeta

TABLE = "runtimes.json"
STAGE_PREFIX = ".runtimes-"
WARMUP = 10


def pytorch_logits(model: nn.Module, x: torch.Tensor, batch: int = 64) -> np.ndarray:
    """PyTorch fp32 logits of an NCHW eval copy: the reference every runtime is compared to."""
    ref = export_copy(model)
    with torch.no_grad():
        return torch.cat([ref(chunk).float() for chunk in x.split(batch)]).numpy()


def runtime_logits(predict: Predict, x: torch.Tensor) -> np.ndarray:
    """Logits through a runtime, one view at a time (mobile files take batch 1)."""
    return np.concatenate([predict(view.numpy()) for view in x.split(1)])


def latency_ms(predict: Predict, view: np.ndarray, runs: int, warmup: int = WARMUP) -> list[float]:
    """Per-call milliseconds of ``runs`` batch-1 calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        predict(view)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predict(view)
        times.append(1000 * (time.perf_counter() - start))
    return times


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Percent of labelled views (label >= 0) whose argmax is the label."""
    keep = labels >= 0
    return round(100 * float((logits[keep].argmax(-1) == labels[keep]).mean()), 2)


def measure(
    predicts: dict[int, Predict],
    x: torch.Tensor,
    labels: np.ndarray,
    reference: np.ndarray,
    runs: int,
) -> list[dict]:
    """Rows (one per thread count) of latency, plus top-1 and logit difference (computed once,
    with the most threads: the numbers do not depend on the thread count)."""
    most = max(predicts)
    logits = runtime_logits(predicts[most], x)
    common = {
        "top1": top1(logits, labels),
        "pytorch_top1": top1(reference, labels),
        "max_abs_logit_diff": float(np.abs(logits - reference).max()),
        "agree_pytorch": round(100 * float((logits.argmax(-1) == reference.argmax(-1)).mean()), 2),
        "val_samples": len(labels),
    }
    rows = []
    for threads, predict in predicts.items():
        ms = latency_ms(predict, x[:1].numpy(), runs)
        rows.append(
            {
                "threads": threads,
                "p50_ms": round(float(np.percentile(ms, 50)), 3),
                "p90_ms": round(float(np.percentile(ms, 90)), 3),
                "runs": runs,
                **common,
            }
        )
    return rows


def remove_dead_stages(out_dir: Path) -> None:
    """Remove the staging folders of exports that were killed: this host's, whose process is
    gone (``.runtimes-<host>-<pid>.tmp``; older versions wrote ``.runtimes-<pid>.tmp``). An
    export still running into the same folder, here or on another host, keeps its own."""
    for stage in out_dir.glob(f"{STAGE_PREFIX}*.tmp"):
        host, _, pid = stage.name[len(STAGE_PREFIX) : -len(".tmp")].rpartition("-")
        if pid.isdigit() and host in ("", socket.gethostname()) and not _running(int(pid)):
            shutil.rmtree(stage, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def export_runtimes(
    model: nn.Module,
    meta: ExportMeta,
    out_dir: Path,
    runtimes: Sequence[str],
    int8: bool,
    val: tuple[torch.Tensor, np.ndarray],
    calibration: torch.Tensor | None = None,
    threads: Sequence[int] = (1, 2),
    runs: int = 50,
    echo: Callable[[str], None] | None = print,
) -> list[dict]:
    """Write ``model`` for each runtime (fp32, and int8 when ``int8``), measure every file and
    write ``out_dir/runtimes.json`` (a list of rows; also returned and printed as a table).

    ``val`` is (normalised views [N, C, R, R], labels [N]); ``calibration`` (normalised
    training views) is needed for int8. Raises ``MissingRuntime`` before any work when a
    runtime is not installed, and ``ExportRejected`` (leaving ``out_dir`` as it was) when a
    runtime refuses the model.
    """
    adapters = [get_runtime(name) for name in runtimes]
    for adapter in adapters:
        adapter.check()
    if int8 and calibration is None:
        raise ValueError("int8 export needs calibration views")
    x, labels = val
    reference = pytorch_logits(model, x)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_dead_stages(out_dir)
    stage = out_dir / f"{STAGE_PREFIX}{socket.gethostname()}-{os.getpid()}.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    rows: list[dict] = []
    try:
        for adapter in adapters:
            for precision in ["fp32", "int8"] if int8 else ["fp32"]:
                name = meta.student + ("_int8" if precision == "int8" else "") + adapter.suffix
                strings = {**meta.to_strings(), "precision": precision}
                cal = calibration if precision == "int8" else None
                file = adapter.export(model, stage / name, meta.resolution, strings, cal)
                predicts = {t: adapter.load(file, t) for t in threads}
                for row in measure(predicts, x, labels, reference, runs):
                    rows.append(
                        {
                            "runtime": adapter.name,
                            "precision": precision,
                            "file": name,
                            "bytes": file.stat().st_size,
                            "resolution": meta.resolution,
                            **row,
                        }
                    )
                if echo is not None:
                    echo(f"  {adapter.name} {precision}: {name} measured")
        for item in sorted(stage.iterdir()):
            os.replace(item, out_dir / item.name)
        write_json(out_dir / TABLE, rows)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if echo is not None:
        echo(format_table(rows))
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """The rows as an aligned text table (sizes in MB, latency in ms, top-1 in percent)."""
    head = [
        "runtime",
        "precision",
        "threads",
        "MB",
        "p50 ms",
        "p90 ms",
        "top-1",
        "PyTorch",
        "max|dlogit|",
    ]
    body = [
        [
            r["runtime"],
            r["precision"],
            str(r["threads"]),
            f"{r['bytes'] / 1e6:.2f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p90_ms']:.2f}",
            f"{r['top1']:.2f}",
            f"{r['pytorch_top1']:.2f}",
            f"{r['max_abs_logit_diff']:.2e}",
        ]
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(head, *body, strict=True)]
    lines = [
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *body]
    ]
    return "\n".join(lines)
