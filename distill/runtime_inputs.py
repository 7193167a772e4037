"""What ``python -m distill.export`` needs from a finished run: the student, its metadata, the
validation views it is scored on and the calibration views int8 is fitted to.

The run's data is found the way the report finds it (``distill.report_data.run_config``: the
run's ``.hydra/config.yaml``); calibration views come from the run's own training sets (the first
views of each, recipe sets rendered as ``data.preview`` renders them), never from the validation
set they are scored on. Every problem with the input is an ``ExportUsageError``: one line that
says what to pass instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.norm import normalize, to_unit
from common.weights import checkpoint_format
from data import urls
from distill.config import TrainConfig
from distill.run_student import student_from_checkpoint, student_from_export
from students.weights import ExportMeta, mean_std_tuple


class ExportUsageError(ValueError):
    """A bad command line or input file (exit status 2); the message says what to do."""


@dataclass(frozen=True)
class RunData:
    """Where a run's shards are: ``root``/``val_set`` and ``root``/each of ``train_sets``
    (``root`` a path or URL: data/urls.py)."""

    root: str
    val_set: str
    train_sets: tuple[str, ...]
    student: str | None = None
    image_size: int | None = None

    @classmethod
    def from_train_config(cls, c: TrainConfig) -> RunData:
        """From the app's config (``data``, ``student``, ``image_size``)."""
        sets = tuple(k for k, w in c.data.train_sets.items() if w)
        return cls(urls.check(c.data.root), c.data.val_set, sets, c.student.name, c.image_size)

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> RunData:
        """From a finished run's ``.hydra/config.yaml`` (data root resolved as the report does)."""
        from omegaconf import OmegaConf

        from distill.report_data import NotARunError, run_config

        try:
            c = run_config(run_dir)
        except NotARunError as e:
            raise ExportUsageError(str(e)) from None
        cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        weights = OmegaConf.select(cfg, "data.train_sets", default=None) or {}
        sets = tuple(k for k, w in OmegaConf.to_container(weights).items() if w)
        size = OmegaConf.select(cfg, "image_size", default=None)
        return cls(
            urls.check(c["data"]["root"]),
            c["data"]["val_set"],
            sets,
            OmegaConf.select(cfg, "student.name", default=None),
            int(size) if size is not None else None,
        )

    @property
    def val_dir(self) -> str:
        return urls.join(self.root, self.val_set)


@dataclass
class Source:
    """The student to export, with its metadata and the file it came from."""

    model: nn.Module
    meta: ExportMeta
    file: Path


def find_model_file(run_dir: Path) -> Path:
    """The run's exported student (``results.json``'s choice, else ``export/<student>.safetensors``),
    else its last checkpoint; always a file inside ``run_dir`` (``distill.run_files``)."""
    import json

    from distill.run_files import resolve_in_run

    results = run_dir / "results.json"
    if results.is_file():
        exports = resolve_in_run(json.loads(results.read_text()), run_dir).get("exports") or {}
        path = exports.get("safetensors")
        if path and Path(path).is_file():
            return Path(path)
    exports = sorted(
        p
        for p in (run_dir / "export").glob("*.safetensors")
        if not p.stem.endswith(("_raw", "_ema"))
    )
    if exports:
        return exports[0]
    for ckpt in (run_dir / "checkpoints" / "last.ckpt", *(run_dir / "checkpoints").glob("*.ckpt")):
        if ckpt.is_file():
            return ckpt
    raise ExportUsageError(
        f"{run_dir} has no exported student (export/*.safetensors) and no checkpoint "
        "(checkpoints/*.ckpt): pass a run that finished training, or a checkpoint file"
    )


def run_dir_of(file: Path) -> Path | None:
    """The run a file belongs to: ``<run>/export/x.safetensors`` or ``<run>/checkpoints/x.ckpt``."""
    parent = file.resolve().parent
    if parent.name in ("export", "checkpoints") and (parent.parent / ".hydra").is_dir():
        return parent.parent
    return None


def load_source(file: Path, data: RunData, student: str | None = None) -> Source:
    """Build the student held by ``file`` (export ``.safetensors`` or Lightning ``.ckpt``).

    ``student`` (the caller's expectation) and the run's own student must both match the file;
    a mismatch is an ``ExportUsageError`` naming both.
    """
    if not file.is_file():
        raise ExportUsageError(f"{file}: no such file")
    held = _student_in(file)
    for expected, who in ((student, "--student"), (data.student, "the run's student")):
        if expected and held and held != expected:
            raise ExportUsageError(
                f"{file} holds {held} weights but {who} is {expected}: pass a checkpoint of "
                f"{expected}, or the run that trained {held}"
            )
    fmt = checkpoint_format(file)
    if fmt == "safetensors":
        return _from_export(file)
    if fmt == "lightning":
        return _from_ckpt(file, data)
    raise ExportUsageError(f"{file}: expected a run directory, a .safetensors export or a .ckpt")


def _student_in(file: Path) -> str | None:
    from students.weights import read_export_meta

    try:
        if checkpoint_format(file) == "safetensors":
            meta = read_export_meta(file)
            return meta.student if meta is not None else None
        if checkpoint_format(file) == "lightning":
            ckpt = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            return ((ckpt or {}).get("hyper_parameters") or {}).get("student")
    except Exception as e:
        raise ExportUsageError(
            f"{file} is not a readable student file ({type(e).__name__}): pass an "
            "export/*.safetensors or a checkpoints/*.ckpt this project wrote"
        ) from None
    return None


def _from_export(file: Path) -> Source:
    from students.weights import read_export_meta

    if read_export_meta(file) is None:  # before building the model: a foreign file says so
        raise ExportUsageError(
            f"{file} has no export metadata (classes, mean/std, input size): pass the "
            "run's export/<student>.safetensors or its run directory"
        )
    model, meta = student_from_export(file)
    return Source(model, meta, file)


def _from_ckpt(file: Path, data: RunData) -> Source:
    """The raw student of a training checkpoint."""
    from data.shards import read_manifest

    m = read_manifest(data.val_dir)
    name = data.student or _student_in(file)
    model, mean, std = student_from_checkpoint(file, name, m.num_classes)
    if data.image_size is None or mean is None:
        raise ExportUsageError(f"{file}: the run's image size or normalisation is unknown")
    meta = ExportMeta(
        student=name,
        num_classes=m.num_classes,
        resolution=int(data.image_size),
        weights="raw",
        mean=mean_std_tuple(mean),
        std=mean_std_tuple(std),
        classes=tuple(m.classes) if m.classes else None,
        source=str(file),
    )
    return Source(model, meta, file)


def _normalise(images: torch.Tensor, meta: ExportMeta) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float32 normalised at the export resolution (resized if needed)."""
    x = to_unit(images)
    if x.shape[-2:] != (meta.resolution, meta.resolution):
        size = (meta.resolution, meta.resolution)
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return normalize(x, meta.mean, meta.std).contiguous()


def val_views(
    data: RunData, meta: ExportMeta, max_samples: int | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """The run's validation set (all of it, or the first ``max_samples``), normalised, and its
    labels: the same stream the report scores (``data.stream.val_pipeline``)."""
    from data.shards import read_manifest
    from data.stream import val_pipeline

    m = read_manifest(data.val_dir)
    shards = m.urls()
    counts = [m.shard_counts[urls.name(u)] for u in shards]
    xs, labels = [], []
    for batch in val_pipeline(shards, 0, 1, 64, m.num_classes, False, counts):
        xs.append(_normalise(batch["image"], meta))
        labels.extend(batch["label"].tolist())
        if max_samples is not None and len(labels) >= max_samples:
            break
    if not labels:
        raise ExportUsageError(f"no readable validation sample in {data.val_dir}")
    n = len(labels) if max_samples is None else min(max_samples, len(labels))
    return torch.cat(xs)[:n], np.asarray(labels[:n])


def _set_views(set_dir: str) -> Iterator[np.ndarray]:
    from data.preview import stored_views  # recipe sets rendered; (uint8 HWC, label, class)
    from data.shards import read_manifest

    for image, _label, _cls in stored_views(read_manifest(set_dir)):
        yield image


def calibration_views(data: RunData, meta: ExportMeta, n: int) -> torch.Tensor:
    """``n`` views from the run's training sets (an equal share of each built set), normalised."""
    from data import remote

    sets = [
        urls.join(data.root, s)
        for s in data.train_sets
        if remote.exists(urls.join(data.root, s, "manifest.json"))
    ]
    if not sets:
        raise ExportUsageError(
            f"no built training set under {urls.redact(data.root)} ({', '.join(data.train_sets)}) to "
            "calibrate int8 with: build the run's shards again (python -m data.build) or drop --int8"
        )
    share = -(-n // len(sets))
    images = []
    for set_dir in sets:
        for i, image in enumerate(_set_views(set_dir)):
            if i >= share:
                break
            images.append(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
    size = {tuple(im.shape) for im in images}
    if len(size) > 1:  # sets of different sizes: bring each to the export size first
        return torch.cat([_normalise(im[None], meta) for im in images])[:n]
    return _normalise(torch.stack(images), meta)[:n]
