"""Where images come from: an ImageFolder tree, an unlabelled folder, existing shards, or digits.

A source lists its items cheaply (paths, keys, labels) and decodes one item on demand. Listing
validates what it can without decoding: unknown class folders, empty files and non-images are
skipped and reported by file; a source with no usable image, or a label outside the class list,
is an error before any work starts. A class with no usable image keeps its index (so train/,
val/ and the teacher's head agree) and is reported like a skipped input, with a warning.
The interface, skip accounting and image folders are primitives of common/folders.py (the
teacher-training CLI reads folders with them too), re-exported here; shards are read with
data/tario.py.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from common.folders import (
    EMPTY_CLASS,
    ImageFolderSource,
    Item,
    Skipped,
    Source,
    SourceError,
    SourceImages,
    image_files,
    read_class_list,
    safe_key,
)
from common.images import load_rgb
from data.config import (
    DigitsSourceConfig,
    ImageFolderSourceConfig,
    ShardSourceConfig,
    SourceConfig,
    UnlabelledSourceConfig,
)
from data.tario import samples


class UnlabelledFolderSource(Source):
    """Every image under ``root`` (recursively), without labels: the extra-data pool."""

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.root = Path(root)
        self.name = f"unlabelled:{self.root}"
        if not self.root.is_dir():
            raise SourceError(f"image folder not found: {self.root}")
        for path in image_files(self.root, self.skipped):
            rel = path.relative_to(self.root).with_suffix("")
            self.items.append(Item(safe_key(str(rel)), str(path), None))
        self._require_items(f"unlabelled folder {self.root}")

    def load(self, item: Item, max_side: int | None = None) -> np.ndarray:
        return load_rgb(Path(item.ref), max_side)


class DigitsSource(Source):
    """One split of scikit-learn's digits as RGB images (the embedded offline default)."""

    def __init__(
        self,
        split: str = "labelled",
        size: int = 32,
        fractions: dict[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        from common.digits import DIGIT_CLASSES, DIGIT_FRACTIONS, digits_split, load_digits_images

        super().__init__()
        fractions = dict(fractions or DIGIT_FRACTIONS)
        if split not in fractions:
            raise SourceError(f"digits split {split!r} not in {sorted(fractions)}")
        images, labels = load_digits_images(size)
        idx = digits_split(labels, fractions, seed)[split]
        self._images = images.permute(0, 2, 3, 1).numpy()
        self.classes = list(DIGIT_CLASSES)
        self.name = f"digits:{split}"
        self.items = [Item(f"digits_{i:05d}", str(i), int(labels[i])) for i in idx.tolist()]
        self._require_items(f"digits split {split!r}")

    def load(self, item: Item, max_side: int | None = None) -> np.ndarray:
        return self._images[int(item.ref)]


class ShardSource(Source):
    """Images (``jpg``/``png``) and classes (``cls``) of existing webdataset shards."""

    def __init__(self, urls: list[str] | str, classes: list[str] | None = None) -> None:
        super().__init__()
        paths = sorted(Path(u) for u in ([urls] if isinstance(urls, str) else urls))
        self.name = f"shards:{paths[0].parent if paths else '?'}"
        self.classes = classes
        for path in paths:
            try:
                self._read(path)
            except (tarfile.TarError, OSError, EOFError) as e:
                self.skipped.add(str(path), f"truncated shard: {e}")
        self._require_items(f"shards {[str(p) for p in paths][:3]}")

    def _read(self, path: Path) -> None:
        # Images are indexed by their span in the file, read lazily, never all held in memory.
        n = len(self.classes) if self.classes else None
        with open(path, "rb") as stream:
            for parts in samples(stream, str(path), lazy=("jpg", "png")):
                key = parts["__key__"]
                image = parts.get("jpg") or parts.get("png")
                if image is None:
                    self.skipped.add(f"{path}:{key}", "sample missing a key: no jpg/png")
                    continue
                label = int(parts["cls"]) if "cls" in parts else None
                if label is not None and n is not None and not 0 <= label < n:
                    raise SourceError(f"{path}:{key} has class {label} outside the {n}-class list")
                ref = f"{path}|{image.offset}|{image.size}"
                self.items.append(Item(safe_key(f"{path.stem}_{key}"), ref, label))

    def load(self, item: Item, max_side: int | None = None) -> np.ndarray:
        path, offset, size = item.ref.rsplit("|", 2)
        with open(path, "rb") as f:
            f.seek(int(offset))
            return load_rgb(f.read(int(size)), max_side)


def open_source(cfg: SourceConfig) -> Source:
    """Open the source ``cfg`` describes (data/config.py ``source_config`` types it by kind)."""
    if isinstance(cfg, ImageFolderSourceConfig):
        return ImageFolderSource(cfg.path("imagefolder"), cfg.classes_file)
    if isinstance(cfg, UnlabelledSourceConfig):
        return UnlabelledFolderSource(cfg.path("unlabelled"))
    if isinstance(cfg, DigitsSourceConfig):
        return DigitsSource(cfg.split, cfg.size, cfg.fractions, cfg.seed)
    if isinstance(cfg, ShardSourceConfig):
        return ShardSource(cfg.urls, cfg.classes)
    raise TypeError(f"not a source config: {cfg!r}")


__all__ = [
    "EMPTY_CLASS",
    "DigitsSource",
    "ImageFolderSource",
    "Item",
    "ShardSource",
    "SourceImages",
    "Skipped",
    "Source",
    "SourceError",
    "UnlabelledFolderSource",
    "open_source",
    "read_class_list",
    "safe_key",
]
