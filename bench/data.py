"""Data benchmarks: streaming vs ImageFolder, build rate per variant, bytes per sample.

1. Streaming images/s (read, decode, flip, collate) from webdataset shards vs torchvision
   ``ImageFolder`` + PIL + ``DataLoader`` over the *same JPEG files* (the shards hold the same
   bytes, plus a soft label and a class), same workers and batch size, interleaved repeats.
2. Build images/s per variant on the digits default, with the teacher's share timed separately,
   for a small teacher and for a large one (``mnv4:mnv4_hybrid_l``, where labelling dominates:
   goal >= 0.9x the bare teacher inference rate).
3. Bytes per sample on disk per variant, full vs top-k labels.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from bench.common import interleaved_medians, quick, table, write_result
from data.builder import build_sets
from data.datamodule import DistillDataModule
from data.labels import encode_soft_label
from data.shards import read_manifest, write_set_json, write_shard
from data.sources import DigitsSource
from teachers import Preprocessing, build_model, create_teacher, save_teacher
from testkit.configs import build_cfg, variant_cfg

NUM_CLASSES = 10


def natural_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour fields: JPEG sizes close to natural photos (not noise)."""
    low = torch.from_numpy(rng.random((1, 3, 8, 8), dtype=np.float32))
    img = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[0]
    img = img + 0.08 * torch.from_numpy(rng.standard_normal((3, size, size), dtype=np.float32))
    return (img.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()


def make_jpegs(root: Path, n: int, size: int) -> list[tuple[Path, int]]:
    """``n`` natural-like JPEGs of ``size`` px under ``root/c<class>/``, as (path, class) pairs."""
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        cls = i % NUM_CLASSES
        (root / f"c{cls}").mkdir(parents=True, exist_ok=True)
        path = root / f"c{cls}" / f"img{i:05d}.jpg"
        Image.fromarray(natural_image(rng, size)).save(path, quality=90)
        files.append((path, cls))
    return files


def shards_of(files: list[tuple[Path, int]], set_dir: Path, per_shard: int) -> None:
    """The same JPEG bytes as a shard set, each with a class and a full soft label."""
    set_dir.mkdir(parents=True)
    names = {}
    label = encode_soft_label(np.full(NUM_CLASSES, 1 / NUM_CLASSES, np.float16))
    for s in range(0, len(files), per_shard):
        samples = [
            {
                "__key__": f"img{i:05d}",
                "jpg": p.read_bytes(),
                "cls": str(c).encode(),
                "soft.npy": label,
            }
            for i, (p, c) in enumerate(files[s : s + per_shard], start=s)
        ]
        rec = write_shard(set_dir, "bench", s // per_shard, samples, {"skipped": []})
        names[f"bench-{s // per_shard:06d}.tar"] = rec["samples"]
    write_set_json(
        set_dir / "manifest.json",
        {
            "name": "bench",
            "num_samples": len(files),
            "shards": names,
            "classes": [str(i) for i in range(NUM_CLASSES)],
            "num_classes": NUM_CLASSES,
            "image_size": 224,
            "labels": {"format": "full"},
        },
    )


def streaming(repeats: int, n: int, workers: int = 2, batch: int = 64) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        files = make_jpegs(tmp / "folder", n, 224)
        shards_of(files, tmp / "shards" / "bench", per_shard=max(1, n // 8))
        folder = ImageFolder(
            str(tmp / "folder"), transform=v2.Compose([v2.PILToTensor(), v2.RandomHorizontalFlip()])
        )
        dm = DistillDataModule(
            tmp / "shards",
            {"bench": 1},
            "bench",
            batch_size=batch,
            num_workers=workers,
            samples_per_epoch=n,
        )

        def epoch_folder():
            loader = DataLoader(
                folder,
                batch_size=batch,
                shuffle=True,
                num_workers=workers,
                drop_last=True,
                persistent_workers=False,
            )
            return sum(len(y) for _, y in loader)

        def epoch_shards():
            return sum(len(b["label"]) for b in dm.train_dataloader())

        seen = {"imagefolder": epoch_folder(), "shards": epoch_shards()}
        t = interleaved_medians(
            {"imagefolder": epoch_folder, "shards": epoch_shards}, repeats, warmup=0
        )
        ips = {k: round(seen[k] / v, 1) for k, v in t.items()}
        avg_kb = np.mean([p.stat().st_size for p, _ in files]) / 1024
        return {
            "images": n,
            "image_kb": round(float(avg_kb), 1),
            "workers": workers,
            "batch": batch,
            "images_per_s": ips,
            "speedup": round(ips["shards"] / ips["imagefolder"], 3),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _variant_cfgs(size: int) -> dict[str, dict]:
    c = {"image_size": size, "jpeg_quality": 90, "crop_scale": [0.5, 1.0], "replicas": 1}
    return {
        "randaug": variant_cfg(**c, kind="randaug", source="s", seed=1),
        "mixup": variant_cfg(**c, kind="mixup", source="s", seed=2),
        "inpaint": variant_cfg(**c, kind="inpaint", source="s", seed=3),
        "extra": variant_cfg(**c, kind="extra", source="s", seed=4, threshold=0.0),
        "plain": variant_cfg(
            image_size=size, jpeg_quality=90, replicas=1, kind="plain", source="s", crop_pct=1.0
        ),
    }


def _teacher(spec: str, input_size: int, path: Path):
    """A random-weight teacher of ``spec`` that takes ``input_size`` px inputs."""
    built = build_model(spec, NUM_CLASSES, pretrained=False)
    built.preprocessing = Preprocessing(input_size=input_size)
    return create_teacher(save_teacher(built, spec, path))


def build_rates(n_small: int, n_large: int) -> list[dict]:
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_build_"))
    try:
        torch.manual_seed(0)
        small = _teacher("timm:resnet10t", 32, tmp / "small.safetensors")  # a digits-sized teacher
        large = _teacher("mnv4:mnv4_hybrid_l", 384, tmp / "large.safetensors")  # 384 px input
        for label, teacher, n, size in (
            ("resnet10t @32 px (small)", small, n_small, 32),
            ("mnv4_hybrid_l @384 px (large)", large, n_large, 64),
        ):
            src = DigitsSource("labelled", size, {"labelled": n / 1797, "rest": 1 - n / 1797})
            cfg = build_cfg(shard_size=10_000, batch_size=32, num_workers=2, progress=False)
            for top_k in (None, 3):
                out = tmp / f"{label.split()[0]}_{top_k}"
                reports = build_sets(
                    _variant_cfgs(size), {"s": src}, teacher, out, {**cfg, "top_k": top_k}
                )
                x = torch.randint(0, 255, (32, 3, size, size), dtype=torch.uint8)
                t = interleaved_medians({"bare": lambda x=x, t=teacher: t.probs(x)}, 5)
                bare = 32 / t["bare"]
                for r in reports:
                    m = read_manifest(out / r.name)
                    size_bytes = sum((out / r.name / s).stat().st_size for s in m.shard_counts)
                    rows.append(
                        {
                            "teacher": label,
                            "variant": r.name,
                            "top_k": top_k,
                            "images_per_s": round(r.images_per_s, 1),
                            "teacher_images_per_s": round(r.teacher_images_per_s, 1),
                            "bare_teacher_images_per_s": round(bare, 1),
                            "vs_bare_teacher": round(r.images_per_s / bare, 3),
                            "bytes_per_sample": round(size_bytes / m.num_samples),
                            "image_size": size,
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main() -> None:
    q = quick()
    stream = streaming(repeats=2 if q else 3, n=512 if q else 2048)
    print(f"streaming: {stream}", flush=True)
    builds = build_rates(n_small=90 if q else 360, n_large=24 if q else 96)
    md = "### Streaming: shards vs ImageFolder on the same JPEGs (images/s)\n\n"
    md += table(
        [
            "images",
            "avg JPEG",
            "workers",
            "batch",
            "ImageFolder+PIL+DataLoader",
            "shards",
            "speed-up",
        ],
        [
            [
                stream["images"],
                f"{stream['image_kb']} KB",
                stream["workers"],
                stream["batch"],
                stream["images_per_s"]["imagefolder"],
                stream["images_per_s"]["shards"],
                f"x{stream['speedup']}",
            ]
        ],
    )
    md += "\n### Building: images/s per variant, teacher share, bytes per sample\n\n"
    md += table(
        [
            "teacher",
            "variant",
            "labels",
            "built img/s",
            "teacher-only img/s",
            "bare teacher img/s",
            "built / bare teacher",
            "bytes/sample",
        ],
        [
            [
                r["teacher"],
                r["variant"],
                "full" if r["top_k"] is None else f"top-{r['top_k']}",
                r["images_per_s"],
                r["teacher_images_per_s"],
                r["bare_teacher_images_per_s"],
                f"x{r['vs_bare_teacher']}",
                r["bytes_per_sample"],
            ]
            for r in builds
        ],
    )
    write_result("data", {"streaming": stream, "build": builds}, md)


if __name__ == "__main__":
    main()
