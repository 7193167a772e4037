"""Real files for the data tests: JPEG class folders, an unlabelled pool, a saved teacher."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.digits import load_digits_images
from data.augment import center_view, to_chw
from data.builder import build_sets
from data.sources import ImageFolderSource, UnlabelledFolderSource
from teachers import build_model, create_teacher, save_teacher


def write_digit_folder(root: Path, per_class: int, size: int = 40, offset: int = 0) -> list[Path]:
    """``root/<digit>/<n>.jpg``: real handwritten digits saved as JPEG files."""
    images, labels = load_digits_images(size)
    written = []
    for c in range(10):
        idx = (labels == c).nonzero().flatten()[offset : offset + per_class]
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        for i in idx.tolist():
            path = root / str(c) / f"img{i:04d}.jpg"
            Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(path, quality=95)
            written.append(path)
    return written


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits_folder")
    write_digit_folder(root / "train", per_class=6)
    write_digit_folder(root / "val", per_class=3, offset=50)
    pool = root / "unlabelled"
    for p in write_digit_folder(root / "pool_tmp", per_class=8, offset=20):
        pool.mkdir(exist_ok=True)
        p.rename(pool / f"{p.parent.name}_{p.name}")
    return root


@pytest.fixture(scope="session")
def teacher_path(tmp_path_factory) -> Path:
    """A 10-class ``timm:resnet10t`` teacher checkpoint written by this project."""
    torch.manual_seed(0)
    built = build_model("timm:resnet10t", num_classes=10, pretrained=False)
    built.classes = [str(i) for i in range(10)]
    return save_teacher(built, "timm:resnet10t", tmp_path_factory.mktemp("t") / "t.safetensors")


@pytest.fixture(scope="session")
def teacher(teacher_path):
    return create_teacher(teacher_path)


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


SIZE = 32
BUILD = {"shard_size": 13, "batch_size": 8, "num_workers": 0, "progress": False}


def variant_cfgs(threshold: float) -> dict[str, dict]:
    common = {"image_size": SIZE, "jpeg_quality": 90, "crop_scale": [0.5, 1.0]}
    return {
        "randaug": {
            **common,
            "kind": "randaug",
            "source": "train",
            "replicas": 2,
            "seed": 1,
            "randaugment": {"num_ops": 2, "magnitude": 9},
        },
        "mixup": {**common, "kind": "mixup", "source": "train", "replicas": 1, "seed": 2},
        "inpaint": {
            **common,
            "kind": "inpaint",
            "source": "train",
            "replicas": 1,
            "seed": 3,
            "mask_area": [0.1, 0.2],
        },
        "extra": {
            **common,
            "kind": "extra",
            "source": "pool",
            "replicas": 2,
            "seed": 4,
            "threshold": threshold,
            "randaugment": {"num_ops": 2, "magnitude": 5},
        },
        "val": {**common, "kind": "plain", "source": "val", "replicas": 1, "crop_pct": 1.0},
    }


def read_samples(url: str) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(url) as tar:
        for m in tar:
            key, _, ext = m.name.partition(".")
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


@pytest.fixture(scope="session")
def sources(digit_folder):
    return {
        "train": ImageFolderSource(digit_folder / "train"),
        "val": ImageFolderSource(digit_folder / "val"),
        "pool": UnlabelledFolderSource(digit_folder / "unlabelled"),
    }


@pytest.fixture(scope="session")
def pool_scores(sources, teacher):
    """The teacher's top probability and class on each pool image's evaluation view."""
    pool = sources["pool"]
    views = torch.stack([center_view(to_chw(pool.load(i)), SIZE, 0.875) for i in pool.items])
    top = teacher.probs(views).max(1)
    return top.values, top.indices


@pytest.fixture(scope="session")
def built(tmp_path_factory, sources, teacher, pool_scores):
    out = tmp_path_factory.mktemp("shards")
    threshold = float(pool_scores[0].median())
    reports = build_sets(variant_cfgs(threshold), sources, teacher, out, BUILD)
    return out, {r.name: r for r in reports}, threshold


def write_set(
    root: Path, name: str, shard_sizes: list[int], size: int = 16, offset: int = 0
) -> Path:
    """A small complete set written with the project's shard writer: real digit JPEGs, class,
    full soft label; ``shard_sizes`` samples per shard; the manifest as the builder writes it."""
    from common.images import jpeg_round_trip
    from data.labels import encode_soft_label
    from data.shards import shard_name, write_json_atomic, write_shard

    images, labels = load_digits_images(size)
    set_dir = root / name
    set_dir.mkdir(parents=True)
    counts, i = {}, offset
    for index, n in enumerate(shard_sizes):
        samples = []
        for _ in range(n):
            jpg, _ = jpeg_round_trip(images[i].permute(1, 2, 0).numpy(), 90)
            probs = np.full(10, 0.02, np.float32)
            probs[int(labels[i])] = 0.82
            key = f"{name}_{i:05d}"
            samples.append(
                {
                    "__key__": key,
                    "jpg": jpg,
                    "cls": str(int(labels[i])).encode(),
                    "soft.npy": encode_soft_label(probs),
                }
            )
            i += 1
        rec = write_shard(set_dir, name, index, samples, {"skipped": []})
        counts[shard_name(name, index)] = rec["samples"]
    manifest = {
        "name": name,
        "kind": "plain",
        "num_samples": sum(counts.values()),
        "shards": counts,
        "classes": [str(c) for c in range(10)],
        "num_classes": 10,
        "image_size": size,
        "teacher": "test",
        "labels": {"format": "full", "top_k": None, "temperature": 1.0},
        "source": "digits",
        "config_hash": "test",
        "skipped": 0,
    }
    write_json_atomic(set_dir / "manifest.json", manifest)
    return set_dir


def set_keys(set_dir: Path) -> set[str]:
    """Every ``url:key`` a set holds, read with tarfile."""
    from data.shards import read_manifest

    return {f"{url}:{key}" for url in read_manifest(set_dir).urls() for key in read_samples(url)}
