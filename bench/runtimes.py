"""Mobile runtimes (issue 14): batch-1 latency of the five students in each runtime, fp32 and
int8, and digits top-1 computed through each runtime.

Latency: every student at its native resolution with random weights and 1000 classes (speed
does not depend on the weights), exported by ``students.runtimes`` (int8: PT2E / QDQ static
quantization calibrated on random views, which fits the scales but changes no kernel), then
timed at batch 1 with 1 and 2 threads on this CPU: the median of ``RUNS`` calls after warm-up,
PyTorch eager (channels_last) alongside. Accuracy: ``distill.export.runtimes_for_run`` on a
trained digits run (``BENCH_RUN_DIR``, else the newest ``outputs/runs/*`` with a Conv-S export),
so its top-1 is the runtime's own over the whole validation set, next to PyTorch fp32
(``BENCH_RUNTIMES_TABLE=<runtimes.json>`` records a table the CLI already wrote for that run).
Results are written after every student, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import torch

import students
from bench.common import RESULTS, interleaved_medians, quick, table, write_result
from students.runtimes import get_runtime

RUNTIMES = ["onnx", "executorch", "litert"]
THREADS = [1, 2]


def runs() -> int:
    return 5 if quick() else 30


def _time(rows: list[dict], calls: dict[int, object], model_threads: bool) -> None:
    """Median ms of ``calls`` (row index -> callable), interleaved, at each thread count."""
    before = torch.get_num_threads()
    try:
        for t in THREADS:
            if model_threads:
                torch.set_num_threads(t)
            fns = {i: (lambda f=f, t=t: f(t)) for i, f in calls.items()}
            with torch.no_grad():
                for i, sec in interleaved_medians(fns, runs(), warmup=5).items():
                    rows[i][f"ms_{t}t"] = round(1000 * sec, 2)
    finally:
        torch.set_num_threads(before)


def latency_rows(name: str, tmp: Path) -> list[dict]:
    """One row per runtime x precision (PyTorch eager first): file size, median ms per thread
    count. A runtime's fp32 and int8 files are timed interleaved (``bench.common``), so load
    from other processes hits both alike; runtimes are timed one after another, each one's
    sessions closed before the next (ExecuTorch's process-wide threadpool reset aborted once
    while LiteRT interpreters were alive in the same process)."""
    torch.manual_seed(0)
    model = students.create_model(name).eval()
    res = model.spec.resolution
    x = torch.randn(1, 3, res, res)
    view = x.numpy()
    rows = [{"student": name, "resolution": res, "runtime": "pytorch", "precision": "fp32"}]
    rows[0]["bytes"] = None
    _time(rows, {0: lambda t: model(x)}, model_threads=True)
    calibration = torch.randn(8 if quick() else 32, 3, res, res)
    for runtime in RUNTIMES:
        loaded = {}
        for precision in ("fp32", "int8"):
            row = {"student": name, "resolution": res, "runtime": runtime, "precision": precision}
            start = time.perf_counter()
            try:
                rt = get_runtime(runtime)
                path = tmp / f"{name}_{precision}{rt.suffix}"
                cal = calibration if precision == "int8" else None
                rt.export(model, path, res, {"student": name}, cal)
                row["bytes"] = path.stat().st_size
                loaded[len(rows)] = {t: rt.load(path, t) for t in THREADS}
            except Exception as e:  # one runtime refusing one model must not stop the table
                first = (str(e).strip().splitlines() or [""])[0][:160]
                row["error"] = f"{type(e).__name__}: {first}"
            row["export_s"] = round(time.perf_counter() - start, 1)
            rows.append(row)
        _time(rows, {i: (lambda t, p=p: p[t](view)) for i, p in loaded.items()}, False)
        del loaded
    for row in rows:
        row["timing"] = "interleaved"
        print(f"  {name}: {row}", flush=True)
    return rows


def _digits_run() -> Path | None:
    env = os.environ.get("BENCH_RUN_DIR")
    if env:
        return Path(env)
    runs_dir = Path("outputs/runs")
    found = sorted(runs_dir.glob("*/export/mnv4_conv_s.safetensors")) if runs_dir.is_dir() else []
    return found[-1].parent.parent if found else None


def accuracy_rows(tmp: Path) -> tuple[list[dict], str | None]:
    """The CLI's own table on a trained digits run (fp32 and int8, every runtime installed)."""
    from distill.export import runtimes_for_run
    from distill.runtime_inputs import RunData, find_model_file

    run_dir = _digits_run()
    if run_dir is None:
        return [], None
    table_file = os.environ.get("BENCH_RUNTIMES_TABLE")
    if table_file:  # the table python -m distill.export already wrote for that run
        return json.loads(Path(table_file).read_text()), str(run_dir)
    names = []
    for name in RUNTIMES:
        try:
            get_runtime(name).check()
            names.append(name)
        except Exception as e:
            print(f"  accuracy: {name} skipped ({e})")
    rows = runtimes_for_run(
        find_model_file(run_dir),
        RunData.from_run_dir(run_dir),
        tmp / "digits",
        names,
        True,
        THREADS,
        10 if quick() else 50,
    )
    return rows, str(run_dir)


def _ratio(rows: list[dict], name: str, runtime: str, t: int) -> str:
    by = {r["precision"]: r for r in rows if r["student"] == name and r["runtime"] == runtime}
    fp, q = by.get("fp32", {}).get(f"ms_{t}t"), by.get("int8", {}).get(f"ms_{t}t")
    return f"x{fp / q:.2f}" if fp and q else "–"


def markdown(lat: list[dict], acc: list[dict], run_dir: str | None) -> str:
    def mb(b):
        return f"{b / 1e6:.1f}" if b else "–"

    out = [
        "## Mobile runtimes (`python -m bench runtimes`)\n",
        f"Batch-1 latency, median of {runs()} calls (ms), native resolution, random weights, "
        "1000 classes; int8/fp32 speed-up per runtime at 1 and 2 threads. Timing: "
        "`interleaved` rows were timed alternately with the other files of the same student; "
        "`sequential` rows one file after another (an older run of this bench), so load from "
        "other processes on this shared 2-core machine can favour either side.\n",
        table(
            [
                "student",
                "px",
                "runtime",
                "precision",
                "MB",
                "1 thread",
                "2 threads",
                "int8 x (1t / 2t)",
                "timing",
            ],
            [
                [
                    r["student"],
                    r["resolution"],
                    r["runtime"],
                    r["precision"],
                    mb(r.get("bytes")),
                    r.get("ms_1t", "–"),
                    r.get("ms_2t", "–"),
                    f"{_ratio(lat, r['student'], r['runtime'], 1)} / {_ratio(lat, r['student'], r['runtime'], 2)}"
                    if r["precision"] == "int8"
                    else (r.get("error", "")[:80] if "error" in r else ""),
                    r.get("timing", "sequential"),
                ]
                for r in lat
            ],
        ),
    ]
    errors = [r for r in lat if "error" in r]
    if errors:
        out.append(
            "Not measured or refused: "
            + "; ".join(
                f"{r['student']} {r['runtime']} {r['precision']}: {r['error']}" for r in errors
            )
            + "\n"
        )
    if acc:
        out += [
            f"\nDigits validation top-1 through each runtime (run `{run_dir}`, "
            f"{acc[0]['val_samples']} images, 32 px; latency batch 1, p50/p90 of 50 calls):\n",
            table(
                [
                    "runtime",
                    "precision",
                    "threads",
                    "KB",
                    "p50 ms",
                    "p90 ms",
                    "top-1",
                    "PyTorch fp32",
                    "max abs logit diff",
                ],
                [
                    [
                        r["runtime"],
                        r["precision"],
                        r["threads"],
                        f"{r['bytes'] / 1e3:.0f}",
                        r["p50_ms"],
                        r["p90_ms"],
                        r["top1"],
                        r["pytorch_top1"],
                        f"{r['max_abs_logit_diff']:.2e}",
                    ]
                    for r in acc
                ],
            ),
        ]
    return "\n".join(out)


def _previous() -> dict:
    path = RESULTS / "runtimes.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def main() -> None:
    """``BENCH_RUNTIMES_PART=latency`` or ``accuracy`` reruns one half and keeps the other's
    rows from the last results file; ``BENCH_STUDENTS=a,b`` limits the latency table."""
    part = os.environ.get("BENCH_RUNTIMES_PART", "all")
    names = [s for s in os.environ.get("BENCH_STUDENTS", "").split(",") if s]
    names = names or students.list_models()
    old = _previous()
    kept = [r for r in old.get("latency", []) if part == "accuracy" or r["student"] not in names]
    lat: list[dict] = kept
    acc: list[dict] = old.get("digits_accuracy", []) if part == "latency" else []
    run_dir = old.get("digits_run") if part == "latency" else None

    def save() -> None:
        lat.sort(key=lambda r: students.list_models().index(r["student"]))  # stable: runtimes stay
        payload = {"latency": lat, "digits_accuracy": acc, "digits_run": run_dir}
        write_result("runtimes", payload, markdown(lat, acc, run_dir))

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if part != "latency":
            acc, run_dir = accuracy_rows(tmp)
            save()
        if part == "accuracy":
            return
        for name in names:
            lat += latency_rows(name, tmp)
            for f in tmp.glob(f"{name}_*"):
                f.unlink()
            save()


if __name__ == "__main__":
    main()
