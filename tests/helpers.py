"""Helpers shared by the test packages: real digit images and shard sets on disk, a saved teacher,
the module CLIs run as a user runs them, and a pickle that would run code if it were loaded."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def write_digit_folder(root: Path, per_class: int, size: int = 40, offset: int = 0) -> list[Path]:
    """``root/<digit>/<n>.jpg``: real handwritten digits saved as JPEG files."""
    from common.digits import load_digits_images

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


def read_samples(url: str) -> dict[str, dict[str, bytes]]:
    """Every sample of one shard, grouped by key, read with Python's ``tarfile``."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(url) as tar:
        for m in tar:
            key, _, ext = m.name.partition(".")
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def write_set(
    root: Path,
    name: str,
    shard_sizes: list[int],
    size: int = 16,
    offset: int = 0,
    wrong_every: int = 0,
) -> Path:
    """A small complete set written with the project's shard writer: real digit JPEGs, class,
    full soft label; ``shard_sizes`` samples per shard; the manifest as the builder writes it.
    With ``wrong_every=k`` every k-th sample's soft label peaks on the next class, not its own."""
    from common.digits import load_digits_images
    from common.images import jpeg_round_trip
    from data.labels import encode_soft_label
    from data.shards import shard_name, write_set_json, write_shard

    images, labels = load_digits_images(size)
    set_dir = root / name
    set_dir.mkdir(parents=True)
    counts, i = {}, offset
    for index, n in enumerate(shard_sizes):
        samples = []
        for _ in range(n):
            jpg, _ = jpeg_round_trip(images[i].permute(1, 2, 0).numpy(), 90)
            probs = np.full(10, 0.02, np.float32)
            top = int(labels[i])
            if wrong_every and (i - offset) % wrong_every == 0:
                top = (top + 1) % 10
            probs[top] = 0.82
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
    write_set_json(set_dir / "manifest.json", manifest)
    return set_dir


def save_random_teacher(
    path: Path, spec: str = "timm:resnet10t", input_size: int | None = None
) -> Path:
    """A 10-class, random-init (seed 0) teacher checkpoint written by this project (no hub);
    ``input_size`` replaces the spec's (e.g. 32: labels 32-px views without upscaling them)."""
    from dataclasses import replace

    from teachers import build_model, save_teacher

    torch.manual_seed(0)
    built = build_model(spec, num_classes=10, pretrained=False)
    if input_size is not None:
        built.preprocessing = replace(built.preprocessing, input_size=input_size)
    built.classes = [str(i) for i in range(10)]
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_teacher(built, spec, path)


def run_module(
    module: str, args: list[str], env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` from the repository root, as a user starts it."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


class CodeRunningPickle:
    """A pickle payload that creates the directory ``target`` when unpickled."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def garble_jpegs(url: Path, keys: set[str] | None = None) -> list[str]:
    """Replace the JPEGs (``<key>.jpg``, a recipe group's ``<key>.<i>.jpg``) of ``keys`` (of
    every sample without) by bytes no decoder takes; returns the keys garbled."""
    with tarfile.open(url) as tar:
        members = [(t, tar.extractfile(t).read()) for t in tar]
    garbled = []
    with tarfile.open(url, "w") as tar:
        for info, payload in members:
            key, _, ext = info.name.partition(".")
            if ext.rpartition(".")[2] == "jpg" and (keys is None or key in keys):
                payload, info.size = b"not a jpeg", len(b"not a jpeg")
                garbled.append(key)
            tar.addfile(info, io.BytesIO(payload))
    return garbled
