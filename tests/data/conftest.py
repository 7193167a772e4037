"""Real files for the data tests: JPEG class folders, an unlabelled pool, a saved teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.images import EVAL_CROP_PCT, center_view
from data.augment import to_chw
from data.builder import build_sets
from data.sources import ImageFolderSource, UnlabelledFolderSource
from teachers import create_teacher
from testkit.configs import build_cfg, variant_cfg
from tests.helpers import read_samples, save_random_teacher, write_digit_folder


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
    return save_random_teacher(tmp_path_factory.mktemp("t") / "t.safetensors")


@pytest.fixture(scope="session")
def teacher(teacher_path):
    return create_teacher(teacher_path)


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


SIZE = 32
BUILD = build_cfg(shard_size=13, batch_size=8, num_workers=0, progress=False)


def variant_cfgs(threshold: float) -> dict[str, dict]:
    common = {"image_size": SIZE, "jpeg_quality": 90, "crop_scale": [0.5, 1.0]}
    return {
        "randaug": variant_cfg(
            **common,
            kind="randaug",
            source="train",
            replicas=2,
            seed=1,
            randaugment={"num_ops": 2, "magnitude": 9},
        ),
        "mixup": variant_cfg(**common, kind="mixup", source="train", replicas=1, seed=2),
        "inpaint": variant_cfg(
            **common, kind="inpaint", source="train", replicas=1, seed=3, mask_area=[0.1, 0.2]
        ),
        "extra": variant_cfg(
            **common,
            kind="extra",
            source="pool",
            replicas=2,
            seed=4,
            threshold=threshold,
            randaugment={"num_ops": 2, "magnitude": 5},
        ),
        "val": variant_cfg(
            image_size=SIZE, jpeg_quality=90, kind="plain", source="val", replicas=1, crop_pct=1.0
        ),
    }


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
    views = torch.stack(
        [center_view(to_chw(pool.load(i)), SIZE, EVAL_CROP_PCT) for i in pool.items]
    )
    top = teacher.probs(views).max(1)
    return top.values, top.indices


@pytest.fixture(scope="session")
def built(tmp_path_factory, sources, teacher, pool_scores):
    out = tmp_path_factory.mktemp("shards")
    threshold = float(pool_scores[0].median())
    reports = build_sets(variant_cfgs(threshold), sources, teacher, out, BUILD)
    return out, {r.name: r for r in reports}, threshold


def set_keys(set_dir: Path) -> set[str]:
    """Every ``url:key`` a set holds, read with tarfile."""
    from data.shards import read_manifest

    return {f"{url}:{key}" for url in read_manifest(set_dir).urls() for key in read_samples(url)}
