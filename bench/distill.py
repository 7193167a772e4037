"""Distillation benchmarks: online-teacher cost, the embedded default's wall time, accuracy.

1. Training images/s with stored labels vs with the online teacher (``mnv4:mnv4_hybrid_l`` at
   384 px and a large timm model) for student ``mnv4_conv_s`` at 224 px. The ideal online step
   is (student step + teacher forward); efficiency = ideal / measured (goal >= 0.9).
2. Wall time of ``python -m distill +student=mnv4_conv_s`` with cold caches (shards and teacher
   built) and warm caches (one run each: these are minutes-long jobs).
3. Digits accuracy over 3 seeds: from labels vs offline distillation vs online function matching.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from bench.common import interleaved_medians, quick, table, write_result
from distill.config import module_kwargs
from distill.module import DistillModule
from teachers import create_teacher

REPO = Path(__file__).resolve().parents[1]


def _step(module: DistillModule, batch: dict):
    """One real training step (forward, loss, backward, AdamW) of ``module`` on ``batch``."""
    opt = torch.optim.AdamW(module.student.parameters(), lr=1e-4)
    module.train()

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        module.training_step(dict(batch), 0).backward()
        opt.step()

    return run


def _online_cost_one(spec: str, repeats: int, batch: int, res: int) -> dict:
    torch.manual_seed(0)
    teacher = create_teacher(spec, pretrained=False, num_classes=1000, channels_last=True)
    offline = DistillModule("mnv4_conv_s", 1000, mode="offline", **module_kwargs(ema={"decay": 0}))
    online = DistillModule(
        "mnv4_conv_s", 1000, teacher, mode="online", **module_kwargs(loss={"kind": "kl"})
    )
    online.student.load_state_dict(offline.student.state_dict())
    view = torch.rand(batch, 3, res, res)
    x = ((view - offline.mean) / offline.std).contiguous(memory_format=torch.channels_last)
    common = {"image": x, "view": view, "label": torch.full((batch,), -1)}
    soft = torch.softmax(torch.randn(batch, 1000), 1)
    t = interleaved_medians(
        {
            "offline": _step(offline, {**common, "soft": soft}),
            "online": _step(online, common),
            "teacher": lambda: teacher.probs(view),
        },
        repeats,
    )
    ideal = t["offline"] + t["teacher"]
    return {
        "teacher": spec,
        "teacher_res": teacher.preprocessing.input_size,
        "student_res": res,
        "batch": batch,
        "images_per_s": {k: round(batch / v, 2) for k, v in t.items()},
        "ideal_online_images_per_s": round(batch / ideal, 2),
        "efficiency": round(ideal / t["online"], 3),
    }


def online_cost(repeats: int, batch: int = 8, res: int = 224) -> list[dict]:
    rows = []
    for spec in ("mnv4:mnv4_hybrid_l", "timm:convnext_large.fb_in22k_ft_in1k"):
        rows.append(_online_cost_one(spec, repeats, batch, res))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def run_default(cache: Path, out: Path, extra: list[str]) -> dict:
    """``python -m distill`` with the digits defaults plus ``extra`` overrides, as a subprocess
    writing to ``out``: its results.json with the run's wall time added."""
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill",
            "+student=mnv4_conv_s",
            f"paths.cache={cache}",
            f"hydra.run.dir={out}",
            "trainer.enable_progress_bar=false",
            *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    result = json.loads((out / "results.json").read_text())
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def wall_times(tmp: Path) -> dict:
    cache = tmp / "cache"
    cold = run_default(cache, tmp / "cold", [])
    warm = run_default(cache, tmp / "warm", [])
    return {"cold_s": cold["wall_s"], "warm_s": warm["wall_s"], "cold": cold, "warm": warm}


def accuracy(tmp: Path, seeds: list[int], warm_cache: Path) -> list[dict]:
    rows = []
    for seed in seeds:
        off = run_default(
            warm_cache, tmp / f"offline_{seed}", [f"seed={seed}", "export.onnx=false"]
        )
        fm = run_default(
            warm_cache,
            tmp / f"fm_{seed}",
            [
                f"seed={seed}",
                "export.onnx=false",
                "+experiment=function_matching",
                "trainer.max_steps=160",
            ],
        )
        rows.append(
            {
                "seed": seed,
                "from_labels": off["baseline_metrics"]["val/top1"],
                "offline": off["student_metrics"]["val/top1"],
                "online_fm": fm["student_metrics"]["val/top1"],
                "teacher": off["teacher_top1"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    warnings.filterwarnings("ignore", message=".*self.log.*")  # steps timed without a Trainer
    q = quick()
    tmp = Path(tempfile.mkdtemp(prefix="bench_distill_"))
    try:
        cost = online_cost(2 if q else 4)
        walls = wall_times(tmp)
        print(f"wall: cold {walls['cold_s']} s, warm {walls['warm_s']} s", flush=True)
        acc = accuracy(tmp, [0] if q else [0, 1, 2], tmp / "cache")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    md = "### Online teacher cost (student mnv4_conv_s @224, images/s)\n\n"
    md += table(
        ["teacher", "offline step", "teacher forward", "online step", "ideal online", "efficiency"],
        [
            [
                f"{r['teacher']} @{r['teacher_res']}",
                r["images_per_s"]["offline"],
                r["images_per_s"]["teacher"],
                r["images_per_s"]["online"],
                r["ideal_online_images_per_s"],
                f"{r['efficiency']:.2f}",
            ]
            for r in cost
        ],
    )
    md += (
        f"\n### Embedded default wall time (2 CPU cores)\n\n"
        f"`python -m distill +student=mnv4_conv_s`: cold {walls['cold_s']:.0f} s (shards and "
        f"teacher built), warm {walls['warm_s']:.0f} s (both cached).\n"
    )
    md += "\n### Digits accuracy (val top-1, 160 steps of 128)\n\n"
    md += table(
        ["seed", "teacher", "from labels", "offline distillation", "online FM"],
        [
            [
                r["seed"],
                f"{100 * r['teacher']:.1f}",
                f"{100 * r['from_labels']:.1f}",
                f"{100 * r['offline']:.1f}",
                f"{100 * r['online_fm']:.1f}",
            ]
            for r in acc
        ],
    )
    if len(acc) > 1:
        md += (
            "| median | | "
            + " | ".join(
                f"{100 * statistics.median(r[k] for r in acc):.1f}"
                for k in ("from_labels", "offline", "online_fm")
            )
            + " |\n"
        )
    write_result(
        "distill",
        {"online_cost": cost, "wall": {k: walls[k] for k in ("cold_s", "warm_s")}, "accuracy": acc},
        md,
    )


if __name__ == "__main__":
    main()
