"""Feeding the GPU: the real offline training loop against the compiled student-only step.

``python -m bench gpu_pipeline`` on a CUDA machine (one H200, 2026-12-04: the Conv-S row took
about 3 minutes, 97 s of it making the shards before their pool ran one torch thread per
process; all three rows need more than one 10-minute device call: ``BENCH_GPU_ROWS=0`` or
``=1,2`` picks rows). For each
(student, resolution, batch) in ``ROWS``:

- ``end_to_end_img_s``: steady-state images/s of ``DistillModule`` + ``DistillDataModule``
  (offline mode, bf16 autocast, compiled student, fused AdamW) on synthetic natural-like JPEG
  shards with 1000-class soft labels, once per decoder stage (``data.decode=cpu``: loader
  workers decode; ``gpu``: workers pass bytes, the device decodes each batch). Timed from a
  step after the warm-up (compiling, worker start) to the last, so start-up is not counted.
- ``student_only_img_s``: the same compiled student's training step on a batch already on the
  GPU, in the same process; ``ratio`` = end-to-end / student-only (goal: >= 0.85 at 224 px,
  >= 0.95 at 384 px).
- decode-only rates: the CPU workers alone, and the batched device decoder alone.
- ``graphs_after_warmup`` / ``graphs_at_end``: TorchDynamo graphs compiled, to show that no
  recompile happens in steady state; ``compile_s``: the first step's time, compiling included.

Results: ``bench/results/gpu_pipeline.json`` (``rows``: one object per student and decoder) and
``.md``, written after each row so a run cut short keeps what it measured. Without CUDA it
does nothing, or with ``BENCH_QUICK=1`` runs a small smoke configuration (the same code path,
decode on the CPU) to a temporary folder, leaving the published results alone.

On a machine without hydra-core, omegaconf, webdataset or simplejpeg (the lent H200), install
their wheels first (``pip download`` them here, carry them, ``pip install --no-deps``).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bench.common import RESULTS, quick, table, write_result

NUM_CLASSES = 1000
# (student, resolution, per-device batch): the three; batch 1024 fills an H200 for Conv-S
ROWS = [("mnv4_conv_s", 224, 1024), ("mnv4_conv_l", 384, 256), ("mnv4_hybrid_l", 384, 256)]
SMOKE = [("mnv4_conv_s", 64, 16)]


def _natural_jpeg(args: tuple[int, int]) -> bytes:
    """``bench.data.natural_image`` as JPEG: sizes close to photos' (not noise)."""
    import simplejpeg

    from bench.data import natural_image

    seed, size = args
    rgb = np.ascontiguousarray(natural_image(np.random.default_rng(seed), size))
    return simplejpeg.encode_jpeg(rgb, quality=90, colorspace="RGB")


def make_set(root: Path, name: str, n: int, size: int, per_shard: int = 1000) -> Path:
    """A shard set of ``n`` JPEGs at ``size`` px with random 1000-class soft labels (cached)."""
    from data.labels import encode_soft_label
    from data.shards import write_set_json, write_shard

    set_dir = root / f"{name}_{size}_{n}"
    if (set_dir / "manifest.json").is_file():
        return set_dir
    set_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(size)
    counts = {}
    # one torch thread per process: os.cpu_count() processes of os.cpu_count() threads each made
    # 2048 images take 97 s on the H200's 16 cores
    with ProcessPoolExecutor(
        os.cpu_count(), initializer=torch.set_num_threads, initargs=(1,)
    ) as pool:
        for s, start in enumerate(range(0, n, per_shard)):
            idx = range(start, min(n, start + per_shard))
            jpegs = list(pool.map(_natural_jpeg, [(i, size) for i in idx], chunksize=32))
            samples = []
            for i, jpg in zip(idx, jpegs, strict=True):
                probs = rng.dirichlet(np.full(NUM_CLASSES, 0.05)).astype(np.float32)
                samples.append(
                    {
                        "__key__": f"img{i:06d}",
                        "jpg": jpg,
                        "cls": str(i % NUM_CLASSES).encode(),
                        "soft.npy": encode_soft_label(probs),
                    }
                )
            rec = write_shard(set_dir, name, s, samples, {"skipped": []})
            counts[f"{name}-{s:06d}.tar"] = rec["samples"]
    write_set_json(
        set_dir / "manifest.json",
        {
            "name": name,
            "kind": "plain",
            "num_samples": n,
            "shards": counts,
            "classes": [str(i) for i in range(NUM_CLASSES)],
            "num_classes": NUM_CLASSES,
            "image_size": size,
            "labels": {"format": "full", "top_k": None, "temperature": 1.0},
            "storage": {"mode": "pixels"},
        },
    )
    return set_dir


class StepClock:
    """Lightning callback: wall time of every training step end (no extra synchronisation)."""

    def __init__(self) -> None:
        import lightning as L

        class _Clock(L.Callback):
            def __init__(self, outer: StepClock) -> None:
                self.outer = outer

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                self.outer.ends.append(time.perf_counter())
                self.outer.sizes.append(int(batch["image"].shape[0]))

        self.ends: list[float] = []
        self.sizes: list[int] = []
        self.callback = _Clock(self)

    def rate(self, warmup: int) -> float:
        """Images/s from the end of step ``warmup`` to the end of the last step."""
        if len(self.ends) <= warmup + 1:
            raise RuntimeError(f"only {len(self.ends)} steps ran; need more than {warmup + 1}")
        return sum(self.sizes[warmup + 1 :]) / (self.ends[-1] - self.ends[warmup])


def _datamodule(root: Path, train: Path, val: Path, batch: int, workers: int, decode: str):
    from data.datamodule import DistillDataModule

    return DistillDataModule(
        root,
        {train.name: 1.0},
        val.name,
        batch_size=batch,
        num_workers=workers,
        samples_per_epoch=batch * 10_000,  # one long epoch: workers start once
        shuffle_buffer=2 * batch,
        decode=decode,
    )


def end_to_end(student: str, sets, batch: int, workers: int, decode: str, steps: int, warmup: int):
    """Steady-state images/s of the real offline training loop, and its compile figures."""
    import lightning as L

    from distill.compiling import compiled_graphs
    from distill.config import module_kwargs
    from distill.module import DistillModule

    cuda = torch.cuda.is_available()
    module = DistillModule(
        student, NUM_CLASSES, mode="offline", **module_kwargs(model={"compile": cuda})
    )
    clock, graphs = StepClock(), {}

    class Graphs(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, b, batch_idx) -> None:
            if trainer.global_step == warmup + 1:
                graphs["after_warmup"] = compiled_graphs()

    trainer = L.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        precision="bf16-mixed" if cuda else "32-true",
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock.callback, Graphs()],
        default_root_dir=tempfile.mkdtemp(prefix="bench_gpu_pipeline_"),
    )
    root, train, val = sets
    trainer.fit(module, datamodule=_datamodule(root, train, val, batch, workers, decode))
    return {
        "end_to_end_img_s": round(clock.rate(warmup), 1),
        "compile_s": round(module.compile_seconds, 1) if module.compile_seconds else None,
        "graphs_after_warmup": graphs.get("after_warmup"),
        "graphs_at_end": compiled_graphs(),
        "skipped": module.skipped_summary()["count"],
    }


def student_only(student: str, res: int, batch: int, steps: int, warmup: int) -> float:
    """Images/s of the compiled student's training step on a batch already on the device."""
    import students
    from distill.compiling import compile_models

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model = students.create_model(student, num_classes=NUM_CLASSES, channels_last=True)
    model = model.to(device).train()
    if cuda:
        compile_models([model])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    x = torch.randn(batch, 3, res, res, device=device).contiguous(memory_format=torch.channels_last)
    target = torch.softmax(torch.randn(batch, NUM_CLASSES, device=device), -1)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=cuda):
            logits = model(x)
        loss = -(target * torch.log_softmax(logits.float(), -1)).sum(-1).mean()
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def decode_only(sets, batch: int, workers: int, batches: int) -> dict:
    """Images/s of the CPU workers decoding, and of the device decoding packed batches."""
    from data.batch_decode import decode_batch, jpeg_decoder

    root, train, val = sets
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = {}
    for stage in ("cpu", "gpu"):
        dm = _datamodule(root, train, val, batch, workers, stage)
        it = iter(dm.train_dataloader())
        next(it)  # workers started
        start = time.perf_counter()
        n = 0
        for _ in range(batches):
            b = next(it)
            if stage == "gpu":
                b = decode_batch(b, device)
            n += b["image"].shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        out[f"{stage}_decode_img_s"] = round(n / (time.perf_counter() - start), 1)
        del it
    out["device_decoder"] = jpeg_decoder()[0]
    return out


def _markdown(rows: list[dict], info: dict) -> str:
    md = f"### Feeding the GPU ({info['device']}, {info['cpu_cores']} CPU cores)\n\n"
    md += table(
        [
            "student @ res, batch",
            "decode",
            "end-to-end img/s",
            "student-only img/s",
            "ratio",
            "compile s",
            "graphs after warm-up / end",
        ],
        [
            [
                f"{r['student']} @{r['resolution']}, {r['batch']}",
                r["decoder"],
                r["end_to_end_img_s"],
                r["student_only_img_s"],
                r["ratio"],
                r["compile_s"],
                f"{r['graphs_after_warmup']} / {r['graphs_at_end']}",
            ]
            for r in rows
        ],
    )
    decode = info.get("decode_only", {})
    if decode:
        md += "\nDecode only (img/s): " + ", ".join(f"{k} {v}" for k, v in decode.items()) + "\n"
    return md


def _write(out: Path, rows: list[dict], info: dict) -> None:
    write_result("gpu_pipeline", {**info, "rows": rows}, _markdown(rows, info), out)


def main() -> None:
    cuda = torch.cuda.is_available()
    if not cuda and not quick():
        print("bench/gpu_pipeline.py: no CUDA device; BENCH_QUICK=1 runs a CPU smoke check")
        return
    smoke = not cuda or quick()
    picked = os.environ.get("BENCH_GPU_ROWS")
    configs = SMOKE if smoke else [ROWS[int(i)] for i in picked.split(",")] if picked else ROWS
    # unique images: the epoch cycles through them, so 4096 feed the loader as well as 1.28M
    n, steps, warmup = (256, 12, 3) if smoke else (4096, 60, 15)
    workers = max(1, min(15, (os.cpu_count() or 2) - 1))
    out = RESULTS if cuda else Path(tempfile.mkdtemp(prefix="bench_gpu_pipeline_"))
    if not cuda:
        print("bench/gpu_pipeline.py: no CUDA device; smoke run to", out, flush=True)
    data_root = Path(os.environ.get("BENCH_GPU_DATA", tempfile.gettempdir())) / "gpu_pipeline"
    info: dict = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "cpu_cores": os.cpu_count(),
        "loader_workers": workers,
        "images": n,
        "steps": steps,
        "warmup_steps": warmup,
    }
    rows: list[dict] = []
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    for student, res, batch in configs:
        t = time.perf_counter()
        sets = (
            data_root,
            make_set(data_root, "train", n, res),
            make_set(data_root, "val", 64, res),
        )
        print(f"{student}@{res}: data ready in {time.perf_counter() - t:.0f} s", flush=True)
        if "decode_only" not in info:
            info["decode_only"] = decode_only(sets, batch, workers, batches=5 if smoke else 20)
            print("decode only:", info["decode_only"], flush=True)
        alone = student_only(student, res, batch, steps - warmup, warmup)
        for decode in ("cpu", "gpu"):
            r = end_to_end(student, sets, batch, workers, decode, steps, warmup)
            row = {
                "student": student,
                "resolution": res,
                "batch": batch,
                "decoder": decode,
                **r,
                "student_only_img_s": round(alone, 1),
                "ratio": round(r["end_to_end_img_s"] / alone, 3),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            _write(out, rows, info)
    ratios = [r["ratio"] for r in rows]
    print(f"median ratio {statistics.median(ratios):.3f}; results in {out}", flush=True)


if __name__ == "__main__":
    main()
