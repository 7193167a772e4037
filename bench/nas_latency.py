"""The search's latency model against whole networks timed end to end (issue 20).

Setup: the digits preset's target, ONNX Runtime fp32 with 1 thread at 32 px, 10 classes, a fresh
table in a temporary cache. Networks: the five MNv4 students (the hybrids' attention blocks are
blocks of the table like any other) and ``RANDOM`` random points of the digits space
(conf/nas/space/conv_s.yaml); the constant is fitted on ``CALIBRATION`` other random points.
Every block of every network and every network end to end are timed in one round-robin, as a
search times them (``nas.latency.remeasure``); each figure is the 20th percentile of the rounds of the calling thread's CPU time
(nas/latency.py), the median-based figures beside it. Rows: predicted, measured, error;
``mape_pct`` is the mean absolute percentage error over all rows.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import yaml

import students
from bench.common import quick, table, write_result
from nas.app import space_from_config
from nas.config import nas_section
from nas.latency import LatencyTable, Setup, network_blocks, null_text
from nas.space import arch_to_spec, random_arch

CONF = Path(__file__).resolve().parents[1] / "conf"
RESOLUTION, CLASSES = 32, 10


def runs() -> tuple[int, int, int]:
    """(random points, calibration points, rounds)."""
    return (4, 2, 5) if quick() else (20, 5, 30)


def digits_space():
    base = yaml.safe_load((CONF / "search.yaml").read_text())["nas"]
    base["space"] = yaml.safe_load((CONF / "nas" / "space" / "conv_s.yaml").read_text())
    base["coarse"]["steps"] = base["fine"]["steps"] = 1
    base["latency"]["cache_dir"] = "unused"
    return space_from_config(nas_section(base).space, RESOLUTION)


def _block_sum_at(table: LatencyTable, spec, stat) -> float:
    total = 0.0
    for key in network_blocks(spec, RESOLUTION, CLASSES):
        text = key.text()
        total += stat(table.samples[text]) - stat(table.samples[null_text(key)])
    return total


def main() -> None:
    n_random, n_cal, rounds = runs()
    space = digits_space()
    rng = random.Random(20)
    named = [(n, "student", students.SPECS[n]) for n in students.SPECS]
    named += [
        (f"random{i}", "random", arch_to_spec(space, random_arch(space, rng)))
        for i in range(n_random)
    ]
    calibration = [arch_to_spec(space, random_arch(space, rng)) for _ in range(n_cal)]
    start, load = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory() as cache:
        table = LatencyTable(cache, Setup("onnx"), rounds=rounds)
        specs = calibration + [s for _, _, s in named]
        # blocks and networks in the same rounds, as a search measures them (the VM's speed
        # drifts between separate round-robins)
        keys = [k for s in specs for k in network_blocks(s, RESOLUTION, CLASSES)]
        _, timed = table.measure(keys, specs, RESOLUTION, CLASSES)
    cal, checked = timed[:n_cal], timed[n_cal:]
    constant = statistics.median(
        t.ms - table.block_sum(s, RESOLUTION, CLASSES)
        for t, s in zip(cal, calibration, strict=True)
    )
    median = statistics.median
    constant_median = median(
        t.median_ms - _block_sum_at(table, s, median) for t, s in zip(cal, calibration, strict=True)
    )
    rows = []
    for (name, kind, spec), t in zip(named, checked, strict=True):
        predicted = table.block_sum(spec, RESOLUTION, CLASSES) + constant
        predicted_median = _block_sum_at(table, spec, median) + constant_median
        rows.append(
            {
                "network": name,
                "kind": kind,
                "blocks": len(network_blocks(spec, RESOLUTION, CLASSES)),
                "predicted_ms": round(predicted, 4),
                "measured_ms": round(t.ms, 4),
                "error_pct": round(100 * (predicted / t.ms - 1), 2),
                "predicted_median_ms": round(predicted_median, 4),
                "measured_median_ms": round(t.median_ms, 4),
                "error_median_pct": round(100 * (predicted_median / t.median_ms - 1), 2),
                "arch": spec.source if kind == "random" else spec.name,
            }
        )
    mape = statistics.mean(abs(r["error_pct"]) for r in rows)
    payload = {
        "setup": {
            "runtime": "onnx",
            "runtime_version": table.version,
            "precision": "fp32",
            "threads": 1,
            "resolution": RESOLUTION,
            "classes": CLASSES,
            "statistic": "20th percentile of the calling thread's CPU time",
            "rounds": rounds,
            "space": space.name,
        },
        "mape_pct": round(mape, 2),
        "max_abs_error_pct": round(max(abs(r["error_pct"]) for r in rows), 2),
        "mape_median_pct": round(statistics.mean(abs(r["error_median_pct"]) for r in rows), 2),
        "constant_ms": round(constant, 4),
        "constant_median_ms": round(constant_median, 4),
        "calibration_networks": n_cal,
        "blocks_measured": len(table.blocks),
        "load_average_at_start": [round(x, 1) for x in load],
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        "wall_s": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    write_result("nas_latency", payload, render(payload))


def render(p: dict) -> str:
    s = p["setup"]
    head = (
        f"## Search latency model (`python -m bench nas_latency`)\n\n"
        f"{s['runtime']} {s['runtime_version']} {s['precision']}, {s['threads']} thread, "
        f"{s['resolution']} px, {s['classes']} classes: predicted = sum of per-block latencies + "
        f"a constant fitted on {p['calibration_networks']} other random points; {s['statistic']} "
        f"over {s['rounds']} interleaved rounds. MAPE {p['mape_pct']}% (max {p['max_abs_error_pct']}%; "
        f"with medians instead: {p['mape_median_pct']}%); constant {p['constant_ms']} ms. "
        f"Load average {p['load_average_at_start']} -> {p['load_average_at_end']} "
        f"(a shared machine), {p['wall_s']} s.\n\n"
    )
    rows = [
        [
            r["network"],
            r["blocks"],
            r["predicted_ms"],
            r["measured_ms"],
            f"{r['error_pct']:+.1f}%",
            f"{r['error_median_pct']:+.1f}%",
        ]
        for r in p["rows"]
    ]
    return head + table(
        ["network", "blocks", "predicted ms", "measured ms", "error", "error (medians)"], rows
    )


if __name__ == "__main__":
    main()
