"""What the report shows, read from a finished run directory: results, curves, predictions.

- ``load_results``: ``results.json`` (its absence means the directory is not a run);
- ``val_set_dir``: the validation shard set, from the run's config (the one ``finish_run`` holds,
  or ``.hydra/config.yaml`` when the report is rendered later from the command line);
- ``read_curves``: the ``val/*`` columns of the CSV log (``csv/metrics.csv``; the baseline's under
  ``baseline/``);
- ``predict``: the exported student (the weights the export chose, EMA or raw) run on CPU over
  the validation set; the teacher's probabilities are the soft labels stored in the shards;
- ``per_class`` and ``calibration``: the numbers behind the figures, from those predictions.
"""

from __future__ import annotations

import csv
import heapq
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data import urls
from distill.run_files import resolve_in_run


class NotARunError(ValueError):
    """A directory the report cannot be made from; the message says what is missing."""


def load_results(run_dir: Path) -> dict:
    path = run_dir / "results.json"
    if not run_dir.is_dir():
        raise NotARunError(f"{run_dir} is not a directory")
    if not path.is_file():
        raise NotARunError(
            f"{run_dir} is not a run directory: it has no results.json "
            "(python -m distill writes one when a run ends)"
        )
    return resolve_in_run(json.loads(path.read_text()), run_dir)


def run_config(run_dir: Path) -> dict:
    """The run's data settings from ``.hydra/config.yaml``: ``data.root`` and ``data.val_set``
    resolved (a relative root against the directory the run was started from), and ``logger``."""
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise NotARunError(
            f"{run_dir} has no .hydra/config.yaml, so the validation set is unknown "
            "(runs started with python -m distill write it)"
        )
    cfg = OmegaConf.load(path)
    root = str(OmegaConf.select(cfg, "data.root"))
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if not urls.is_remote(root) and not Path(root).is_absolute() and hydra_file.is_file():
        cwd = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.cwd")
        root = str(Path(str(cwd)) / root) if cwd else root
    logger = OmegaConf.select(cfg, "logger")
    return {
        "data": {"root": str(root), "val_set": str(OmegaConf.select(cfg, "data.val_set"))},
        "logger": OmegaConf.to_container(logger, resolve=True) if logger is not None else {},
        "report": {"max_samples": OmegaConf.select(cfg, "report.max_samples", default=None)},
    }


def val_set_dir(c: dict) -> str:
    return urls.join(c["data"]["root"], c["data"]["val_set"])


def read_curves(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{metric: (steps, values)}`` for every ``val/*`` column of a CSV log (empty if none)."""
    if not path.is_file():
        return {}
    series: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            for key, value in row.items():
                if key and key.startswith("val/") and value not in (None, "") and step:
                    series.setdefault(key, []).append((float(step), float(value)))
    return {
        k: (np.array([s for s, _ in v]), np.array([x for _, x in v])) for k, v in series.items()
    }


@dataclass
class Predictions:
    """Per-sample results on the validation set; ``teacher`` is None when the set has no labels.

    ``labels`` is -1 where a sample has no class. ``worst`` holds the samples with the highest
    KL(teacher || student) as (kl, index, image uint8 HWC), highest first.
    """

    classes: list[str]
    labels: np.ndarray
    student: np.ndarray  # [N, C] probabilities
    teacher: np.ndarray | None
    kl: np.ndarray | None
    weights: str  # "ema" | "raw" | "last checkpoint"
    source: str
    worst: list[tuple[float, int, np.ndarray]] = field(default_factory=list)


def load_student(results: dict, num_classes: int) -> tuple[torch.nn.Module, dict]:
    """The exported student (CPU, eval) and its normalisation; the last checkpoint's student when
    the run exported nothing."""
    from distill.run_student import student_from_checkpoint, student_from_export

    path = (results.get("exports") or {}).get("safetensors")
    if path and Path(path).is_file():
        model, meta = student_from_export(path)
        info = {"weights": results["exports"].get("exported", "raw"), "source": str(path)}
        if meta is not None:
            info.update(mean=meta.mean, std=meta.std)
        return model, info
    ckpt = results.get("last_checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        raise FileNotFoundError("the run has neither an exported student nor a last checkpoint")
    model, mean, std = student_from_checkpoint(ckpt, results["student"], num_classes)
    info = {"weights": "last checkpoint", "source": str(ckpt)}
    if mean is not None:
        info.update(mean=mean, std=std)
    return model, info


@torch.no_grad()
def predict(
    results: dict,
    val_dir: str | Path,
    batch_size: int = 64,
    max_samples: int | None = None,
    keep_worst: int = 16,
) -> Predictions:
    """Run the student over the validation shards (manifest order) on CPU."""
    from common.norm import IMAGENET_MEAN, IMAGENET_STD, normalized_input
    from data.shards import read_manifest
    from data.stream import val_pipeline

    m = read_manifest(val_dir)
    need_soft = bool(m.data.get("labels"))
    model, info = load_student(results, m.num_classes)
    mean, std = info.get("mean", IMAGENET_MEAN), info.get("std", IMAGENET_STD)
    labels, s_probs, t_probs, kls, worst = [], [], [], [], []
    urls = m.urls()
    counts = [m.shard_counts[Path(u).name] for u in urls]
    # the training loader's own validation stream, on one rank: every readable sample once
    for batch in val_pipeline(urls, 0, 1, batch_size, m.num_classes, need_soft, counts):
        n = len(batch["label"])
        if max_samples is not None:
            n = min(n, max_samples - len(labels))
            if n <= 0:
                break
        images = batch["image"][:n]
        x = normalized_input(images, mean, std).contiguous(memory_format=torch.channels_last)
        log_p = F.log_softmax(model(x).float(), dim=-1)
        s_probs.append(log_p.exp().numpy())
        start = len(labels)
        labels.extend(batch["label"][:n].tolist())
        if not need_soft:
            continue
        t = batch["soft"][:n].float()
        t_probs.append(t.numpy())
        kl = F.kl_div(log_p, t, reduction="none").sum(-1)
        kls.append(kl.numpy())
        for i, k in enumerate(kl.tolist()):
            item = (k, start + i, images[i].permute(1, 2, 0).numpy())
            if len(worst) < keep_worst:
                heapq.heappush(worst, item)
            elif k > worst[0][0]:
                heapq.heapreplace(worst, item)
    if not labels:
        raise ValueError(f"no readable validation sample in {val_dir}")
    return Predictions(
        classes=m.classes,
        labels=np.array(labels),
        student=np.concatenate(s_probs),
        teacher=np.concatenate(t_probs) if t_probs else None,
        kl=np.concatenate(kls) if kls else None,
        weights=info["weights"],
        source=info["source"],
        worst=sorted(worst, key=lambda w: -w[0]),
    )


def per_class(p: Predictions) -> dict[str, np.ndarray]:
    """Per true class: samples, student and teacher accuracy, agreement (student top-1 equals
    teacher top-1) and mean KL(teacher || student); NaN where a class has no sample."""
    num = len(p.classes)
    known = p.labels >= 0
    y = p.labels[known]
    count = np.bincount(y, minlength=num).astype(float)

    def mean_by_class(values: np.ndarray) -> np.ndarray:
        total = np.bincount(y, weights=values[known].astype(float), minlength=num)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    s_pred = p.student.argmax(1)
    out = {"samples": count, "student_acc": mean_by_class(s_pred == p.labels)}
    nan = np.full(num, np.nan)
    if p.teacher is not None:
        t_pred = p.teacher.argmax(1)
        out["teacher_acc"] = mean_by_class(t_pred == p.labels)
        out["agreement"] = mean_by_class(s_pred == t_pred)
        out["kl"] = mean_by_class(p.kl)
    else:
        out.update(teacher_acc=nan, agreement=nan, kl=nan)
    return out


def calibration(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict:
    """Reliability bins of top-1 confidence and the expected calibration error (ECE: the
    sample-weighted mean |accuracy - confidence| over equal-width bins)."""
    known = labels >= 0
    conf = probs[known].max(1)
    right = (probs[known].argmax(1) == labels[known]).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(float)
    acc = np.bincount(idx, weights=right, minlength=bins)
    mean_conf = np.bincount(idx, weights=conf, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc, mean_conf = acc / count, mean_conf / count
    gaps = np.where(count > 0, np.abs(np.nan_to_num(acc) - np.nan_to_num(mean_conf)), 0.0)
    ece = float((gaps * count).sum() / max(count.sum(), 1))
    return {"edges": edges, "count": count, "accuracy": acc, "confidence": mean_conf, "ece": ece}


def confusion(p: Predictions) -> np.ndarray:
    """The student's confusion counts [true, predicted] over samples with a class."""
    num = len(p.classes)
    known = p.labels >= 0
    flat = p.labels[known] * num + p.student.argmax(1)[known]
    return np.bincount(flat, minlength=num * num).reshape(num, num)
