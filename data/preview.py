"""Look before you train: a PNG grid of samples per shard set, captioned with the teacher's view.

Each tile shows a stored image with the teacher's top class and probability and, where known,
the ground truth: ``python -m data.preview cache/shards/digits --out previews``. The distill app
logs the same grids to W&B.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.images import decode_jpeg_hwc
from data.labels import decode_soft_label
from data.recipes import Replayer, group_size
from data.shards import read_manifest
from data.tario import samples

TILE, CAPTION = 96, 26


def _samples(manifest, n: int):
    """The first ``n`` samples of a set (members grouped by key, in shard order)."""
    for url in manifest.urls():
        with open(url, "rb") as stream:
            for sample in samples(stream, url):
                yield sample["__key__"], sample


def stored_views(manifest):
    """(image uint8 HWC, dense teacher label or None, class or None) per stored view.

    Recipe sets (data/recipes.py) are rendered: the first replica of every source image.
    """
    recipe = manifest.data.get("recipe")
    replay = Replayer(recipe, manifest.num_classes) if recipe else None
    for _key, parts in _samples(manifest, 0):
        if replay is None:
            soft = parts.get("soft.npy")
            label = decode_soft_label(soft, manifest.num_classes) if soft else None
            cls = int(parts["cls"]) if "cls" in parts else None
            yield decode_jpeg_hwc(parts["jpg"]).numpy(), label, cls
            continue
        for i in range(group_size(parts)):
            view, row, cls = replay.render(parts, i, 0)
            label = replay.codec.soft_label(row) if replay.codec.label else None
            yield view, label, (cls if cls >= 0 else None)


def grid(set_dir: str | Path, n: int = 16, columns: int = 8) -> Image.Image:
    """A captioned grid of the first ``n`` views of one set."""
    m = read_manifest(set_dir)
    classes = m.classes or [str(i) for i in range(m.num_classes)]
    font = ImageFont.load_default()
    tiles = []
    for img, label, cls in itertools.islice(stored_views(m), n):
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
        raise ValueError(f"{set_dir} has no samples to preview")
    rows = -(-len(tiles) // columns)
    out = Image.new("RGB", (columns * TILE, rows * (TILE + CAPTION)), "white")
    for i, tile in enumerate(tiles):
        out.paste(tile, ((i % columns) * TILE, (i // columns) * (TILE + CAPTION)))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m data.preview", description=__doc__)
    p.add_argument("root", type=Path, help="directory of shard sets (e.g. cache/shards/digits)")
    p.add_argument("--sets", nargs="*", help="set names (default: every set with a manifest)")
    p.add_argument("--n", type=int, default=16, help="samples per set")
    p.add_argument("--out", type=Path, default=Path("previews"))
    args = p.parse_args(argv)
    names = args.sets or sorted(
        d.name for d in args.root.iterdir() if (d / "manifest.json").is_file()
    )
    if not names:
        raise SystemExit(f"no built shard sets under {args.root}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = args.out / f"{name}.png"
        grid(args.root / name, args.n).save(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
