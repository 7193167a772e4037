"""``python -m data.verify <set dir> --samples N``: is a recipe set's replay what was labelled?

Re-renders N random views of a recipe set (data/recipes.py) with this machine's libraries,
reruns the set's teacher on them and compares with what the build stored: the fraction of views
that pass the loader's digest check (pixels, stored label and class all as built), top-1
agreement and mean KL(stored || fresh) between the stored and the fresh labels. The last line
reads ``verify: views=N view_exact=F top1_agreement=F mean_kl=F``; the exit status is 1 when a
view fails the digest (training skips exactly those views), top-1 agreement is below 1.0 or a
view cannot be rendered (this is the CPU path: the loader renders on the CPU). A pixel set is
checked the same way on its stored JPEGs (``--teacher`` needed; no digest there).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from common.images import decode_jpeg
from data import remote, urls
from data.config import TeacherConfig
from data.labels import decode_soft_label
from data.recipes import (
    BadRecipe,
    group_size,
    pixel_hash,
    random_views,
    set_replayer,
    version_drift,
    view_digest,
)
from data.shards import ManifestError, read_manifest
from data.stream import record_counts, shard_samples


class VerifyError(ValueError):
    """A set or teacher that cannot be verified; the message says which and why."""


def _teacher(m, override: str | None, device: str):
    from data.teacher_setup import teacher_from_config

    recorded = (m.data.get("recipe") or {}).get("teacher") or {}
    if override:
        checkpoint = override if Path(override).is_file() else None
        spec, pretrained = override, False
    elif recorded.get("checkpoint") or recorded.get("spec"):
        spec, checkpoint = recorded["spec"], recorded.get("checkpoint")
        pretrained = recorded.get("pretrained", True)
    else:
        raise VerifyError(
            f"{m.set_dir}: the manifest does not say which teacher labelled it; pass --teacher "
            "<checkpoint or spec>"
        )
    # the teacher as recorded, run as a build runs it by default (float32, no channels_last)
    cfg = TeacherConfig(
        spec=spec,
        checkpoint=checkpoint,
        pretrained=pretrained,
        train_if_missing=False,
        channels_last=False,
        autocast=None,
    )
    try:
        return teacher_from_config(cfg, num_classes=m.num_classes).to(device)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise VerifyError(f"cannot load the teacher {cfg.spec!r}: {e}") from e


def _picked(m, n: int, seed: int) -> dict[str, list[tuple[int, float, float]]]:
    shards = m.urls()
    return random_views(dict(zip(shards, record_counts(shards), strict=True)), n, seed)


def rendered_views(m, n: int, seed: int, progress: bool = True):
    """(views uint8 [N, 3, H, W], stored labels [N, C], digest checks passed, failures)."""
    replay = set_replayer(m, check_digest=False)
    views, labels, exact, failed = [], [], [], []
    desc = f"{urls.name(m.set_dir)}: re-rendering"
    bar = tqdm(total=n, desc=desc, unit="view", disable=not progress)
    for url, picks in sorted(_picked(m, n, seed).items()):
        wanted: dict[int, list[tuple[float, float]]] = {}
        for pos, u_img, u_rep in picks:
            wanted.setdefault(pos, []).append((u_img, u_rep))
        last = max(wanted)
        for pos, sample in enumerate(shard_samples(url)):
            if pos > last:  # every picked sample of this shard is done
                break
            if "__bad__" in sample:
                failed.append(sample["__bad__"])
                break
            for u_img, u_rep in wanted.get(pos, []):
                where = f"{url}:{sample['__key__']}"
                try:
                    if replay is None:
                        views.append(decode_jpeg(sample["jpg"]))
                        labels.append(decode_soft_label(sample["soft.npy"], m.num_classes))
                        exact.append(True)
                    else:
                        records = replay.records(sample)
                        i = math.floor(u_img * group_size(sample))
                        r = math.floor(u_rep * records.shape[1])
                        view, row, cls = replay.render(sample, i, r, records)
                        views.append(torch.from_numpy(view).permute(2, 0, 1))
                        labels.append(replay.codec.soft_label(row))
                        digest = view_digest(pixel_hash(view), row, cls)
                        exact.append(digest == int(row["digest"]))
                except (BadRecipe, KeyError, ValueError) as e:
                    failed.append((where, f"{type(e).__name__}: {e}"))
                bar.update(1)
    bar.close()
    if not views:
        return None, None, exact, failed
    return torch.stack(views), torch.stack(labels), exact, failed


def compare(stored: torch.Tensor, fresh: torch.Tensor) -> tuple[float, float]:
    """(top-1 agreement, mean KL(stored || fresh)) of two [N, C] probability tensors."""
    agree = (stored.argmax(1) == fresh.argmax(1)).float().mean().item()
    p, q = stored.double(), fresh.double().clamp_min(1e-12)
    kl = torch.where(p > 0, p * (p.clamp_min(1e-12) / q).log(), torch.zeros_like(p)).sum(1)
    return agree, kl.mean().item()


def fresh_labels(teacher, views: torch.Tensor, recipe: dict | None, batch_size: int = 64):
    """The teacher's labels of ``views`` in the stored format (top-k renormalised, dense)."""
    from teachers import soft_labels

    info = (recipe or {}).get("teacher") or {}
    top_k, temperature = info.get("top_k"), float(info.get("temperature") or 1.0)
    labels = soft_labels(teacher, views, temperature, top_k, batch_size=batch_size)
    probs = labels.probs.float()
    if labels.indices is None:
        return probs
    dense = torch.zeros(len(views), teacher.num_classes)
    dense.scatter_(1, labels.indices.long(), probs)
    return dense / dense.sum(1, keepdim=True).clamp_min(1e-12)


def verify(
    set_dir: str | Path,
    samples: int = 256,
    seed: int = 0,
    teacher: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Re-render ``samples`` random views of a set and compare with the stored labels."""
    try:
        m = read_manifest(set_dir)
    except (ManifestError, remote.RemoteError, urls.UrlError) as e:
        raise VerifyError(str(e)) from e
    if not m.data.get("labels"):
        raise VerifyError(f"{m.set_dir} has no teacher labels to verify")
    recipe = m.data.get("recipe")
    if recipe is None and teacher is None:
        raise VerifyError(
            f"{m.set_dir} stores pixels (no recipe): pass --teacher <checkpoint or spec> to "
            "check its labels"
        )
    if samples < 1:
        raise VerifyError(f"--samples must be at least 1, got {samples}")
    net = _teacher(m, teacher, device)
    views, stored, exact, failed = rendered_views(m, samples, seed, progress)
    result = {
        "set": str(m.set_dir),
        "mode": "recipe" if recipe else "pixels",
        "views": 0 if views is None else len(views),
        "failed": len(failed),
        "failures": [list(f) for f in failed[:10]],
        "version_drift": version_drift(recipe.get("versions", {})) if recipe else {},
        "view_exact": sum(exact) / len(exact) if exact else 0.0,
        "top1_agreement": 0.0,
        "mean_kl": float("nan"),
    }
    if views is not None:
        with torch.no_grad():
            fresh = fresh_labels(net, views, recipe)
        result["top1_agreement"], result["mean_kl"] = compare(stored, fresh)
    return result


def report(result: dict) -> str:
    lines = [f"set {result['set']} ({result['mode']})"]
    for lib, (was, now) in sorted(result["version_drift"].items()):
        lines.append(f"  {lib}: built with {was}, here {now}")
    for where, why in result["failures"]:
        lines.append(f"  cannot render {where}: {why}")
    lines.append(
        f"verify: views={result['views']} view_exact={result['view_exact']:.4f} "
        f"top1_agreement={result['top1_agreement']:.4f} mean_kl={result['mean_kl']:.3g}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data.verify", description=__doc__.split("\n")[0])
    ap.add_argument(
        "set_dir",
        help="a built set, e.g. cache/shards/digits/randaug or s3://bucket/sets/digits/randaug",
    )
    ap.add_argument("--samples", type=int, default=256, help="random views to re-render")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher", default=None, help="checkpoint or spec (default: the manifest's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        result = verify(
            args.set_dir, args.samples, args.seed, args.teacher, args.device, not args.no_progress
        )
    except VerifyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report(result))
    return 0 if passed(result) else 1


def passed(result: dict) -> bool:
    """Every view rendered, passed the loader's digest check and kept the teacher's top-1."""
    return result["failed"] == 0 and result["view_exact"] >= 1.0 and result["top1_agreement"] >= 1.0


if __name__ == "__main__":
    sys.exit(main())
