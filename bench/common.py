"""Shared benchmark plumbing: interleaved repeats, medians, atomic result files.

This machine is noisy, so candidates are timed alternately in one process (A B A B ...), and
every figure is a median over repeats; ratios compare medians taken side by side.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from common.atomic import write_text

RESULTS = Path(__file__).parent / "results"


def quick() -> bool:
    """``BENCH_QUICK=1`` shrinks repeats for a smoke run; published numbers use the default."""
    return os.environ.get("BENCH_QUICK") == "1"


def interleaved_medians(
    candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per call of each candidate, timed alternately ``repeats`` times."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu
    return {
        "device": device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_result(name: str, payload: dict, markdown: str, folder: Path = RESULTS) -> Path:
    """Write ``<folder>/<name>.json`` and ``.md`` (temp file, then rename); ``folder`` defaults
    to ``results/``."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **payload}
    for suffix, text in ((".json", json.dumps(payload, indent=2) + "\n"), (".md", markdown)):
        write_text(folder / f"{name}{suffix}", text)
    return folder / f"{name}.json"


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
