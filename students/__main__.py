"""``python -m students``: build students, count and time them, export one.

``--export NAME`` times only that student (unless ``--models`` is given) and writes its
safetensors and ONNX files; ``--checkpoint PATH`` exports those weights (a project export or a
timm-layout file), otherwise the export is an untrained random init and says so. Full benchmarks
live in ``bench/``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from students.export import export_onnx, save_safetensors
from students.mnv4 import MobileNetV4
from students.profiling import count_macs, count_params
from students.registry import create_model, list_models
from students.weights import CheckpointError, ExportMeta, read_export_meta


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


def _table(names: list[str], repeats: int) -> None:
    print(f"{'student':<15}{'res':>5}{'params':>13}{'GMACs':>8}{'batch-1 ms':>12}")
    for name in names:
        model = create_model(name).eval()
        res = model.default_resolution
        params, macs = count_params(model), count_macs(model, res)
        ms = _latency_ms(model, res, repeats)
        print(f"{name:<15}{res:>5}{params:>13,}{macs / 1e9:>8.3f}{ms:>12.1f}")


def _model_and_meta(name: str, checkpoint: Path | None) -> tuple[MobileNetV4, ExportMeta]:
    """The weights to export and their description; a project export keeps its own metadata."""
    if checkpoint is None:
        model = create_model(name).eval()
        kind, source = "random-init", None
    else:
        model = create_model(name, checkpoint=checkpoint).eval()
        stored = read_export_meta(checkpoint)
        if stored is not None:
            return model, replace(stored, source=stored.source or checkpoint.name, dynamic_hw=None)
        kind, source = "external", checkpoint.name
    meta = ExportMeta(
        student=name,
        num_classes=model.num_classes,
        resolution=model.default_resolution,
        weights=kind,
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        source=source,
    )
    return model, meta


def export(
    name: str, model: MobileNetV4, meta: ExportMeta, checkpoint: Path | None, out: Path
) -> str:
    """Write ``out/NAME.safetensors`` and ``out/NAME.onnx``; returns the line to print."""
    weights = save_safetensors(model, out / f"{name}.safetensors", meta)
    onnx = export_onnx(model, out / f"{name}.onnx", meta.resolution, metadata=meta)
    what = (
        "random init, untrained"
        if checkpoint is None
        else f"{meta.weights} weights from {checkpoint}"
    )
    hw = "dynamic" if onnx.dynamic_hw else f"fixed {meta.resolution}x{meta.resolution}"
    return (
        f"exported {name} ({what}, {meta.num_classes} classes) to {weights} and {onnx.path}; "
        f"ONNX batch dynamic, H/W {hw}; onnxruntime vs PyTorch max |diff| {onnx.max_abs_diff:.1e}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m students", description=__doc__)
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list_models(),
        help="students to count and time (default: all, or only the --export one)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed batch-1 forwards per model")
    parser.add_argument("--export", choices=list_models(), help="export this student")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="weights to export: a project .safetensors export or timm-layout weights "
        "(default: random init)",
    )
    parser.add_argument("--out", type=Path, default=Path("exports"), help="export directory")
    args = parser.parse_args(argv)
    if args.checkpoint is not None and not args.export:
        parser.error("--checkpoint needs --export NAME")

    loaded = None
    if args.export:  # read the checkpoint first: a bad path fails before any timing
        try:
            loaded = _model_and_meta(args.export, args.checkpoint)
        except CheckpointError as e:
            parser.exit(2, f"python -m students: error: {e}\n")
    _table(args.models or ([args.export] if args.export else list_models()), args.repeats)
    if loaded is not None:
        print(export(args.export, *loaded, args.checkpoint, args.out))


if __name__ == "__main__":
    main()
