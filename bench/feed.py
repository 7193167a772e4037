"""The feed model (``python -m bench feed``): how many CPU cores keep one GPU busy.

For each student's native resolution (Conv-S 224, Conv-M and Hybrid-M 256, Conv-L and Hybrid-L
384) the same synthetic images (bench/data.py's natural-like JPEGs, sources at 288/224 of the
resolution, stored at raw_size 256/224 of it) are built as a pixel set and as a recipe set: D1
(Inception crop + RandAugment 2/9) and D2 (extreme mixup, groups of 8), 1000 classes, top-10
labels from a random-init teacher. Everything is timed in CPU seconds of one thread, the unit a
loader worker spends (one process, one thread), so the rates are per core and hold up on this
shared machine where wall-clock time would not:

1. each loader stage per view: read (tar members), decode (a pixel view's JPEG; a recipe set's
   source), crop + resize, RandAugment, mix, digest, label, collate; medians of interleaved
   repeats over the set's own samples;
2. the whole training stream per core (``TrainStream`` in this process, one thread): pixel and
   recipe sets, D1, D2 and D1:D2 1:1, and pixel sets with ``data.decode=gpu`` (workers only read
   and pack JPEG bytes); chunks of the candidates interleaved, medians;
3. the training process's own CPU cost of taking batches from 2 loader workers, per image.

Then, per student: the loader cores one GPU needs (its training-step images/s over the per-core
rate of the paper's mix D1:D2:D3 = 1:1:2, D3 rendered as D1 is: RandAugment, one image) and how an
8-GPU node's cores split between the training processes and the loader workers. The GPU rate per
student comes from ``bench/results/gpu_pipeline.json`` (the compiled student-only step) when it
has the student, else from ``--gpu-img-s`` (one number, or ``student=rate`` pairs), else from
``bench/results/gpu.json`` (an eager bf16 training step on an H200 at batch 128, 64 for the L
models); the table says which. ``--gpu-img-s`` runs only the model (part 4) on the stored rates.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import torch

from bench.common import RESULTS, quick, table, write_result
from bench.recipes import build_both_stores, random_teacher, recipe_variants, synthetic_source
from common.images import decode_jpeg_hwc
from data.labels import decode_soft_label
from data.randaug import RandAugment
from data.recipes import Replayer, group_size, pixel_hash, view_digest
from data.render import crop_resize, decode_source, mix
from data.shards import read_manifest
from data.stream import collate, decode_sample, loader, shard_samples, train_pipeline

STUDENTS = {
    "mnv4_conv_s": 224,
    "mnv4_conv_m": 256,
    "mnv4_hybrid_m": 256,
    "mnv4_conv_l": 384,
    "mnv4_hybrid_l": 384,
}
PAPER_MIX = {"randaug": 0.75, "mixup": 0.25}  # D1:D2:D3 = 1:1:2, D3 costed as D1
STEP_CORES = 1  # the training step's own thread per GPU (kernel launches): not measurable here
NODE_CORES_PER_GPU = (12, 16, 24)  # 8-GPU nodes with 96 / 128 / 192 cores
CLASSES = 1000
TOP_K = 10
TEACHER_PX = 64  # the random teacher only labels; its speed is not measured here
BATCH = 64


# -- timing -----------------------------------------------------------------------------------
def cpu_medians(candidates: dict[str, tuple[Callable, list]], repeats: int) -> dict[str, float]:
    """Median CPU microseconds per item of each ``(fn, items)``, candidates interleaved."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for fn, items in candidates.values():  # warm-up: caches, tables, first calls
        for x in items[:3]:
            fn(x)
    for _ in range(repeats):
        for name, (fn, items) in candidates.items():
            start = time.thread_time()
            for x in items:
                fn(x)
            times[name].append((time.thread_time() - start) / len(items) * 1e6)
    return {name: round(statistics.median(ts), 1) for name, ts in times.items()}


def _one_thread() -> tuple[int, int]:
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    return threads, cv_threads


# -- the sets ---------------------------------------------------------------------------------
def build(tmp: Path, res: int, n_images: int, replicas: int) -> Path:
    """Pixel and recipe sets of D1 and D2 at ``res`` under ``tmp/<res>/{pixels,recipe}``."""
    root = tmp / str(res)
    source, _ = synthetic_source(root, n_images, round(res * 288 / 224))
    teacher = random_teacher(CLASSES, TEACHER_PX, tmp / "teacher.safetensors")
    variants = recipe_variants(res, round(res * 256 / 224), replicas, (0.08, 1.0), 9)
    build_both_stores(variants, source, teacher, root, TOP_K)
    return root


def _samples(set_dir: Path) -> list[dict]:
    return [
        {**s, "__url__": url}
        for url in read_manifest(set_dir).urls()
        for s in shard_samples(url)
        if "__bad__" not in s
    ]


# -- 1. stages --------------------------------------------------------------------------------
def _read_cost(set_dir: Path) -> tuple[Callable, list]:
    """Parsing every tar member of the set's shards (from the page cache), per shard."""
    urls = read_manifest(set_dir).urls()
    return (lambda url: sum(1 for _ in shard_samples(url))), urls


def stages(root: Path, res: int, repeats: int) -> dict:
    """CPU microseconds per view of every loader stage (see the module docstring)."""
    px = {name: _samples(root / "pixels" / name) for name in ("randaug", "mixup")}
    rc = {name: _samples(root / "recipe" / name) for name in ("randaug", "mixup")}
    manifest = read_manifest(root / "recipe" / "randaug")
    replay = {
        name: Replayer(read_manifest(root / "recipe" / name).data["recipe"], CLASSES)
        for name in ("randaug", "mixup")
    }
    # every recipe view of the sets as (sample, image, replica), its decoded source and record
    views = {name: [] for name in rc}
    for name, samples in rc.items():
        for s in samples:
            records = replay[name].records(s)
            sources = {i: decode_source(s[f"{i}.jpg"]) for i in range(group_size(s))}
            for i, r in itertools.product(range(records.shape[0]), range(records.shape[1])):
                views[name].append((s, i, r, sources, records[i, r]))
    d1, d2 = views["randaug"], views["mixup"]
    ra = RandAugment(2, 9)
    codec = replay["randaug"].codec
    rendered = [replay["randaug"].render(s, i, r)[0] for s, i, r, _, _ in d1[:64]]
    pixel_views = [
        {**decode_sample(s, CLASSES, 0, False, True), "skipped": []}
        for s in itertools.islice(itertools.cycle(px["randaug"]), 2 * BATCH)
    ]
    cand = {
        "pixels: read": _read_cost(root / "pixels" / "randaug"),
        "recipe: read": _read_cost(root / "recipe" / "randaug"),
        "pixels: decode view JPEG": (
            lambda s: decode_jpeg_hwc(s["jpg"]),
            px["randaug"] + px["mixup"],
        ),
        "recipe: decode source JPEG": (
            lambda v: decode_source(v[0][f"{v[1]}.jpg"]),
            d1[:: max(1, len(d1) // 128)],
        ),
        "recipe: crop + resize": (lambda v: crop_resize(v[3][v[1]], v[4]["crop"], res), d1),
        "recipe: RandAugment 2 ops": (
            lambda v: ra.apply(crop_resize(v[3][v[1]], v[4]["crop"], res), v[4]["ops"].tolist()),
            d1,
        ),
        "recipe: mix (2 crops + blend)": (
            lambda v: mix(
                crop_resize(v[3][v[1]], v[4]["crop"], res),
                crop_resize(v[3][int(v[4]["partner"])], v[4]["partner_crop"], res),
                float(v[4]["weight"]),
            ),
            d2,
        ),
        "recipe: digest": (lambda v: view_digest(pixel_hash(v), d1[0][4], 0), rendered),
        "pixels: label (top-10 .npy -> dense)": (
            lambda s: decode_soft_label(s["soft.npy"], CLASSES),
            px["randaug"],
        ),
        "recipe: label (record -> dense)": (lambda v: codec.soft_label(v[4]), d1),
        "collate (batch of 64)": (collate, [pixel_views[:BATCH], pixel_views[BATCH:]]),
    }
    us = cpu_medians(cand, repeats)
    # per view: a shard read covers all its samples; a recipe sample holds ``pack`` images
    per_shard_px = len(px["randaug"]) / len(read_manifest(root / "pixels" / "randaug").urls())
    per_shard_rc = len(d1) / len(manifest.urls())
    us["pixels: read"] = round(us["pixels: read"] / per_shard_px, 1)
    us["recipe: read"] = round(us["recipe: read"] / per_shard_rc, 1)
    us["collate (batch of 64)"] = round(us["collate (batch of 64)"] / BATCH, 1)
    us["recipe: RandAugment 2 ops"] = round(
        us["recipe: RandAugment 2 ops"] - us["recipe: crop + resize"], 1
    )
    us["recipe: mix (2 crops + blend)"] = round(
        us["recipe: mix (2 crops + blend)"] - 2 * us["recipe: crop + resize"], 1
    )
    return {k.replace("(2 crops + blend)", "(blend)"): v for k, v in us.items()}


# -- 2. whole streams -------------------------------------------------------------------------
def _stream(sets: list[Path], decode: str = "cpu") -> Iterator[dict]:
    manifests = [read_manifest(s) for s in sets]
    pipe = train_pipeline(
        [m.urls() for m in manifests],
        [1.0] * len(sets),
        0,
        1,
        BATCH,
        CLASSES,
        0,
        True,
        256,
        None,
        [m.data["name"] for m in manifests],
        [m.data.get("recipe") for m in manifests],
        decode=decode,
    )
    return iter(pipe)


def stream_rates(root: Path, repeats: int, chunk: int) -> dict[str, float]:
    """Views per CPU-second of one thread through the real training stream, per candidate."""
    px, rc = root / "pixels", root / "recipe"
    cands = {
        "pixels D1": [px / "randaug"],
        "pixels D2": [px / "mixup"],
        "pixels D1:D2": [px / "randaug", px / "mixup"],
        "recipe D1": [rc / "randaug"],
        "recipe D2": [rc / "mixup"],
        "recipe D1:D2": [rc / "randaug", rc / "mixup"],
    }
    streams = {name: _stream(sets) for name, sets in cands.items()}
    streams["pixels D1:D2, data.decode=gpu"] = _stream(cands["pixels D1:D2"], "gpu")
    for it in streams.values():  # fill the shuffle buffers; steady state from here on
        next(it)
    rates: dict[str, list[float]] = {name: [] for name in streams}
    for _ in range(repeats):
        for name, it in streams.items():
            start = time.process_time()
            seen = sum(len(next(it)["label"]) for _ in range(chunk))
            rates[name].append(seen / (time.process_time() - start))
    return {name: round(statistics.median(r), 1) for name, r in rates.items()}


# -- 3. the training process's share ----------------------------------------------------------
def receive_cost(root: Path, batches: int) -> float:
    """CPU microseconds per image that the training process spends taking batches from 2
    loader workers (their shared-memory hand-over; pixel D1:D2 batches)."""
    px = root / "pixels"
    manifests = [read_manifest(px / n) for n in ("randaug", "mixup")]
    pipe = train_pipeline(
        [m.urls() for m in manifests], [1.0, 1.0], 0, 1, BATCH, CLASSES, 0, True, 256
    )
    it = iter(loader(pipe, 2, 0, 0))
    for _ in range(3):
        next(it)
    start = time.process_time()
    seen = sum(len(next(it)["label"]) for _ in range(batches))
    return round((time.process_time() - start) / seen * 1e6, 2)


# -- 4. the model -----------------------------------------------------------------------------
def gpu_rates(cli: list[str] | None) -> dict[str, tuple[float, str]]:
    """Training-step images/s per student and where the figure comes from."""
    out: dict[str, tuple[float, str]] = {}
    stored = RESULTS / "gpu.json"
    if stored.is_file():
        for m in json.loads(stored.read_text())["models"]:
            out[m["model"]] = (
                m["train_img_s"]["ours"],
                f"gpu.json: eager bf16 step, batch {m['train_batch']}",
            )
    for arg in cli or []:
        name, _, rate = arg.rpartition("=")
        for student in [name] if name else STUDENTS:
            if student not in STUDENTS:
                raise SystemExit(
                    f"--gpu-img-s: unknown student {student!r}; one of {list(STUDENTS)}"
                )
            out[student] = (float(rate), "--gpu-img-s")
    pipeline = RESULTS / "gpu_pipeline.json"
    if pipeline.is_file():
        for r in json.loads(pipeline.read_text()).get("rows", []):
            if STUDENTS.get(r["student"]) == r["resolution"]:
                out[r["student"]] = (
                    r["student_only_img_s"],
                    f"gpu_pipeline.json: compiled step, batch {r['batch']}",
                )
    return out


def mix_rate(rates: dict[str, float], store: str) -> float:
    """Per-core views/s of the paper's mix from the per-set rates (time-weighted)."""
    return 1.0 / sum(
        w / rates[f"{store} {'D1' if s == 'randaug' else 'D2'}"] for s, w in PAPER_MIX.items()
    )


def model(per_res: dict, gpu: dict[str, tuple[float, str]], receive_us: float) -> list[dict]:
    """Cores per GPU for each student and data path, and the GPU share an 8-GPU node feeds."""
    rows = []
    for student, res in STUDENTS.items():
        if student not in gpu or str(res) not in per_res:
            continue
        rate, source = gpu[student]
        streams = per_res[str(res)]["streams"]
        paths = {
            "recipe (CPU render)": mix_rate(streams, "recipe"),
            "pixels (CPU decode)": mix_rate(streams, "pixels"),
            "pixels (data.decode=gpu)": streams["pixels D1:D2, data.decode=gpu"],
        }
        for path, per_core in paths.items():
            workers = rate / per_core
            main = STEP_CORES + rate * receive_us / 1e6
            need = math.ceil(workers + main)
            fed = {}
            for cores in NODE_CORES_PER_GPU:
                spare = cores - main
                fed[cores] = round(min(1.0, max(0.0, spare) * per_core / rate), 2)
            rows.append(
                {
                    "student": student,
                    "resolution": res,
                    "gpu_img_s": rate,
                    "gpu_source": source,
                    "data": path,
                    "per_core_img_s": round(per_core, 1),
                    "loader_cores": round(workers, 1),
                    "training_process_cores": round(main, 2),
                    "cores_per_gpu": need,
                    "gpu_fed_at_cores_per_gpu": fed,
                    "workers_at_16_cores": max(1, math.floor(16 - main)),
                }
            )
    return rows


# -- results ----------------------------------------------------------------------------------
def _markdown(p: dict) -> str:
    res_list = sorted(p["resolutions"], key=int)
    md = "### Feed model: CPU cores per GPU (issue 19)\n\n"
    md += (
        "CPU microseconds of one thread per view (a loader worker is one process with one "
        "thread), medians of interleaved repeats on this shared 2-core machine; synthetic "
        "natural-like images, 1000 classes, top-10 labels. Recipe sets: sources at raw_size = "
        "256/224 of the resolution, D1 RandAugment 2/9, D2 extreme mixup in groups of 8 "
        "(rendered when read: one decode per source). Pixel sets: the same views as JPEGs.\n\n"
    )
    md += "#### Loader stages, CPU us per view\n\n"
    stage_names = list(p["resolutions"][res_list[0]]["stages"])
    md += table(
        ["stage", *[f"{r} px" for r in res_list]],
        [[s, *[p["resolutions"][r]["stages"][s] for r in res_list]] for s in stage_names],
    )
    md += (
        "\nRead is per view (a pixel sample is one view, a recipe sample 8 source images); "
        "RandAugment and the mix blend exclude their crops; collate is a batch of 64 over 64.\n\n"
    )
    md += "#### Whole training stream per core (views per CPU-second, one thread)\n\n"
    names = list(p["resolutions"][res_list[0]]["streams"])
    md += table(
        ["stream", *[f"{r} px" for r in res_list]],
        [[n, *[p["resolutions"][r]["streams"][n] for r in res_list]] for n in names],
    )
    md += "\nRecipe / pixels per core (goal at 224 px: >= 0.6 for D1:D2 1:1):\n\n"
    md += table(
        ["set", *[f"{r} px" for r in res_list]],
        [
            [k, *[f"x{p['resolutions'][r]['recipe_over_pixels'][k]}" for r in res_list]]
            for k in ("D1", "D2", "D1:D2")
        ],
    )
    ratio = p["recipe_pixel_ratio_224"]
    md += (
        f"\nrecipe_pixel_ratio_224 = {ratio} (D1:D2 1:1): goal 0.6 "
        f"{'met' if ratio >= 0.6 else 'NOT met'}.\n\n"
    )
    md += "#### Cores per GPU\n\n"
    md += (
        f"Loader cores = GPU images/s / per-core rate of the paper's mix (D1:D2:D3 = 1:1:2, D3 "
        f"costed as D1); training process = {STEP_CORES} core for the step (assumed: it needs "
        f"the GPU to measure) + receiving batches from workers at {p['receive_us_per_image']} "
        "CPU us per image (measured, 2 workers). GPU fed = the share of the GPU's rate that "
        "the cores left after the training process can feed, one worker per core.\n\n"
    )
    md += table(
        [
            "student @ px",
            "GPU img/s (source)",
            "data",
            "img/s per core",
            "cores per GPU",
            *[f"GPU fed, {c} cores/GPU" for c in NODE_CORES_PER_GPU],
        ],
        [
            [
                f"{r['student']} @ {r['resolution']}",
                f"{r['gpu_img_s']:.0f} ({r['gpu_source']})",
                r["data"],
                r["per_core_img_s"],
                r["cores_per_gpu"],
                *[f"{r['gpu_fed_at_cores_per_gpu'][c]:.0%}" for c in NODE_CORES_PER_GPU],
            ]
            for r in p["model"]
        ],
    )
    return md


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench feed", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--gpu-img-s",
        nargs="+",
        metavar="[STUDENT=]RATE",
        help="training-step images/s per GPU (all students, or student=rate); with it, only the "
        "model is recomputed from bench/results/feed.json",
    )
    args = ap.parse_args(argv or [])
    saved = RESULTS / "feed.json"
    if args.gpu_img_s:
        if not saved.is_file():
            raise SystemExit("bench/results/feed.json missing: run python -m bench feed first")
        p = json.loads(saved.read_text())
        p["model"] = model(p["resolutions"], gpu_rates(args.gpu_img_s), p["receive_us_per_image"])
        print(_markdown(p))
        return
    q = quick()
    n_images, replicas = (16, 2) if q else (32, 4)
    repeats, chunk = (3, 2) if q else (7, 4)
    resolutions = [224] if q else sorted(set(STUDENTS.values()))
    tmp = Path(tempfile.mkdtemp(prefix="bench_feed_"))
    threads = _one_thread()
    per_res: dict[str, dict] = {}
    try:
        for res in resolutions:
            root = build(tmp, res, n_images, replicas)
            _one_thread()  # the builds' loader workers and teacher may have changed them
            st = stages(root, res, repeats)
            streams = stream_rates(root, repeats, chunk)
            over = {
                k: round(streams[f"recipe {k}"] / streams[f"pixels {k}"], 3)
                for k in ("D1", "D2", "D1:D2")
            }
            per_res[str(res)] = {"stages": st, "streams": streams, "recipe_over_pixels": over}
            print(json.dumps({res: per_res[str(res)]}), flush=True)
        receive = receive_cost(tmp / str(resolutions[0]), 10 if q else 40)
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
        shutil.rmtree(tmp, ignore_errors=True)
    payload = {
        "images": n_images,
        "replicas": replicas,
        "repeats": repeats,
        "cpu_cores_here": os.cpu_count(),
        "resolutions": per_res,
        "recipe_pixel_ratio_224": per_res["224"]["recipe_over_pixels"]["D1:D2"],
        "receive_us_per_image": receive,
        "model": [],
    }
    payload["model"] = model(per_res, gpu_rates(None), receive)
    if q:
        print(_markdown(payload))
        return
    write_result("feed", payload, _markdown(payload))


if __name__ == "__main__":
    main()
