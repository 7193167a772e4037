"""``python -m students``: build each MNv4 student, count it, time it, export one.

A quick look at the students on this machine; full benchmarks live in ``bench/``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from students.export import export_onnx, save_safetensors
from students.profiling import count_macs, count_params
from students.registry import create_model, list_models


@torch.no_grad()
def _latency_ms(model: torch.nn.Module, resolution: int, repeats: int) -> float:
    x = torch.randn(1, 3, resolution, resolution)
    model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m students", description=__doc__)
    parser.add_argument("--models", nargs="*", default=list_models(), choices=list_models())
    parser.add_argument("--repeats", type=int, default=5, help="timed batch-1 forwards per model")
    parser.add_argument("--export", choices=list_models(), help="export this student")
    parser.add_argument("--out", type=Path, default=Path("exports"), help="export directory")
    args = parser.parse_args(argv)

    print(f"{'student':<15}{'res':>5}{'params':>13}{'GMACs':>8}{'batch-1 ms':>12}")
    for name in args.models:
        model = create_model(name).eval()
        res = model.default_resolution
        params, macs = count_params(model), count_macs(model, res)
        ms = _latency_ms(model, res, args.repeats)
        print(f"{name:<15}{res:>5}{params:>13,}{macs / 1e9:>8.3f}{ms:>12.1f}")

    if args.export:
        model = create_model(args.export).eval()
        weights = save_safetensors(model, args.out / f"{args.export}.safetensors")
        onnx_path = args.out / f"{args.export}.onnx"
        diff = export_onnx(model, onnx_path, model.default_resolution)
        print(f"exported {weights} and {onnx_path} (onnxruntime vs PyTorch max |diff| {diff:.1e})")


if __name__ == "__main__":
    main()
