"""Look before you train: a PNG grid of samples per shard set, captioned with the teacher's view.

Each tile shows a stored image with the teacher's top class and probability and, where known,
the ground truth: ``python -m data.preview cache/shards/digits --out previews``. The distill app
logs the same grids to W&B. A view that cannot be shown (an undecodable image, a missing member, a
recipe that does not render, a shard cut short) is skipped and named, as the loader does.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.images import decode_jpeg_hwc
from data import remote, urls
from data.labels import decode_soft_label
from data.recipes import Replayer, group_size, set_replayer
from data.shards import read_manifest
from data.stream import shard_samples

log = logging.getLogger(__name__)

TILE, CAPTION = 96, 26


def stored_views(manifest, skipped: list[tuple[str, str]] | None = None):
    """(image uint8 HWC, dense teacher label or None, class or None) per stored view.

    Recipe sets (data/recipes.py) are rendered: the first replica of every source image. Views
    that cannot be shown are left out, with a warning, and added to ``skipped`` as (where, why).
    """
    skipped = [] if skipped is None else skipped
    replay = set_replayer(manifest)
    for url in manifest.urls():
        for parts in shard_samples(url):
            if "__bad__" in parts:
                _skip(skipped, *parts["__bad__"])
                continue
            where = f"{url}:{parts['__key__']}"
            if replay is None:
                view = _try(skipped, where, _pixel_view, parts, manifest.num_classes)
                if view is not None:
                    yield view
                continue
            for i in range(_try(skipped, where, group_size, parts) or 0):
                view = _try(skipped, f"{where}:{i}", _recipe_view, parts, i, replay)
                if view is not None:
                    yield view


def _pixel_view(parts: dict, num_classes: int) -> tuple:
    soft = parts.get("soft.npy")
    label = decode_soft_label(soft, num_classes) if soft else None
    cls = int(parts["cls"]) if "cls" in parts else None
    return decode_jpeg_hwc(parts["jpg"]).numpy(), label, cls


def _recipe_view(parts: dict, i: int, replay: Replayer) -> tuple:
    view, row, cls = replay.render(parts, i, 0)
    label = replay.codec.soft_label(row) if replay.codec.label else None
    return view, label, cls if cls >= 0 else None


def _try(skipped: list, where: str, fn, *args):
    """``fn(*args)``, or None with the failure recorded as a skip of ``where``."""
    try:
        return fn(*args)
    except KeyError as e:
        _skip(skipped, where, f"sample missing a key: {e.args[0]}")
    except Exception as e:
        _skip(skipped, where, f"{type(e).__name__}: {str(e)[:200]}")
    return None


def _skip(skipped: list, where: str, why: str) -> None:
    log.warning("preview: skipped %s: %s", where, why)
    skipped.append((where, why))


def grid(
    set_dir: str | Path, n: int = 16, columns: int = 8, skipped: list | None = None
) -> Image.Image:
    """A captioned grid of the first ``n`` views of one set (skips go to ``skipped``)."""
    m = read_manifest(set_dir)
    classes = m.classes or [str(i) for i in range(m.num_classes)]
    font = ImageFont.load_default()
    tiles = []
    skipped = [] if skipped is None else skipped
    for img, label, cls in itertools.islice(stored_views(m, skipped), n):
        img = Image.fromarray(img).resize((TILE, TILE))
        tile = Image.new("RGB", (TILE, TILE + CAPTION), "white")
        tile.paste(img, (0, 0))
        lines = []
        if label is not None:
            p = label.numpy()
            top = int(np.argmax(p))
            lines.append(f"T: {classes[top][:9]} {p[top]:.2f}")
        if cls is not None:
            lines.append(f"GT: {classes[cls][:10]}")
        draw = ImageDraw.Draw(tile)
        for i, text in enumerate(lines):
            draw.text((2, TILE + 1 + 12 * i), text, fill="black", font=font)
        tiles.append(tile)
    if not tiles:
        why = f" ({len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise ValueError(f"{set_dir} has no samples to preview{why}")
    rows = -(-len(tiles) // columns)
    out = Image.new("RGB", (columns * TILE, rows * (TILE + CAPTION)), "white")
    for i, tile in enumerate(tiles):
        out.paste(tile, ((i % columns) * TILE, (i // columns) * (TILE + CAPTION)))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m data.preview", description=__doc__)
    p.add_argument(
        "root", help="directory or URL of shard sets (e.g. cache/shards/digits, s3://b/sets/digits)"
    )
    p.add_argument(
        "--sets",
        nargs="*",
        help="set names (default: every local set with a manifest; needed for URLs)",
    )
    p.add_argument("--n", type=int, default=16, help="samples per set")
    p.add_argument("--out", type=Path, default=Path("previews"))
    args = p.parse_args(argv)
    try:
        names = args.sets or _local_sets(args.root)
        if not names:
            raise SystemExit(f"no built shard sets under {args.root}")
        args.out.mkdir(parents=True, exist_ok=True)
        for name in names:
            path = args.out / f"{name}.png"
            skipped: list[tuple[str, str]] = []
            grid(urls.join(args.root, name), args.n, skipped=skipped).save(path)
            note = f"; skipped {len(skipped)}, e.g. {': '.join(skipped[0])}" if skipped else ""
            print(f"wrote {path}{note}")
    except (remote.RemoteError, urls.UrlError) as e:
        raise SystemExit(f"error: {e}") from None


def _local_sets(root: str) -> list[str]:
    if urls.is_remote(root):
        raise SystemExit(
            f"error: {root} is a URL: name its sets with --sets (e.g. --sets randaug val)"
        )
    root_dir = urls.local_path(root)
    return sorted(d.name for d in root_dir.iterdir() if (d / "manifest.json").is_file())


if __name__ == "__main__":
    main()
