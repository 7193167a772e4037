"""Image sources as primitives: the ``Source`` interface, skip accounting and image folders.

Listing validates what it can without decoding: unknown class folders, empty files and
non-images are skipped and reported by file; a source with no usable image is an error before
any work starts. A class with no usable image keeps its index (so train/, val/ and the
teacher's head agree) and is reported like a skipped input, with a warning. ``SourceImages``
turns a source into a map-style dataset for training loops (teachers.train reads folders with
it). Other kinds of source (unlabelled folders, digits, shards) and building from configs live
in data/sources.py.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.images import IMAGE_EXTENSIONS, BadImage, check_header, load_rgb

log = logging.getLogger(__name__)
EMPTY_CLASS = "empty class: no usable image, kept with 0 images"


class SourceError(ValueError):
    """A source that cannot be built from; the message names the path and the problem."""


@dataclass(frozen=True)
class Item:
    """One source image: a stable ``key`` (no dots), where it is, and its class (or None)."""

    key: str
    ref: str
    label: int | None


@dataclass
class Skipped:
    """Inputs left out, by file and reason."""

    entries: list[tuple[str, str]] = field(default_factory=list)

    def add(self, ref: str, reason: str) -> None:
        self.entries.append((ref, reason))

    def counts(self) -> dict[str, int]:
        return dict(Counter(reason.split(":")[0] for _, reason in self.entries))

    def report(self, title: str, limit: int = 50) -> str:
        """``title: skipped N input(s) {reason: count}`` then one line per file ('' if none)."""
        entries = sorted(set(self.entries))
        if not entries:
            return ""
        lines = [f"{title}: skipped {len(entries)} input(s) {self.counts()}"]
        lines += [f"  {ref}: {reason}" for ref, reason in entries[:limit]]
        if len(entries) > limit:
            lines.append(f"  ... and {len(entries) - limit} more")
        return "\n".join(lines)


def safe_key(text: str) -> str:
    """A webdataset-safe key: no dots (the key ends at the first dot), no path separators."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")


class Source(ABC):
    """Base interface: ``items``, ``classes``, ``skipped`` and ``load(item)``."""

    name: str = "source"
    classes: list[str] | None = None

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.skipped = Skipped()

    @abstractmethod
    def load(self, item: Item, max_side: int | None = None) -> np.ndarray:
        """Decode ``item`` to RGB uint8 [H, W, 3]; raises ``BadImage`` with a reason."""

    def describe(self) -> str:
        return self.name

    def _require_items(self, where: str) -> None:
        if not self.items:
            detail = "; ".join(f"{r}: {why}" for r, why in self.skipped.entries[:5])
            raise SourceError(f"{where} has no usable image" + (f" ({detail})" if detail else ""))

    def note_empty_classes(self) -> None:
        """Report classes left with no usable image (image folders override this)."""
        return None


def read_class_list(path: str | Path) -> list[str]:
    """One class name per line (blank lines and ``#`` comments ignored)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"class list not found: {path}")
    names = [ln.strip() for ln in path.read_text().splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    dupes = [n for n, c in Counter(names).items() if c > 1]
    if dupes:
        raise SourceError(f"class list {path} repeats {dupes[:5]}")
    return names


def image_files(folder: Path, skipped: Skipped) -> list[Path]:
    out = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.add(str(p), "not an image: unsupported extension")
            continue
        try:
            check_header(p)
        except BadImage as e:
            skipped.add(str(p), str(e))
            continue
        out.append(p)
    return out


class ImageFolderSource(Source):
    """``root/<class>/<image>`` (the ImageNet train/val layout).

    Class order comes from ``classes_file`` when given (folders not in it are skipped and
    reported), otherwise from the sorted folder names.
    """

    def __init__(self, root: str | Path, classes_file: str | Path | None = None) -> None:
        super().__init__()
        self.root = Path(root)
        self.name = f"imagefolder:{self.root}"
        if not self.root.is_dir():
            raise SourceError(f"image folder not found: {self.root}")
        folders = sorted(p for p in self.root.iterdir() if p.is_dir())
        if classes_file:
            self.classes = read_class_list(classes_file)
        else:
            self.classes = [p.name for p in folders]
        index = {c: i for i, c in enumerate(self.classes)}
        for folder in folders:
            if folder.name not in index:
                self.skipped.add(str(folder), "unknown class folder: not in the class list")
                continue
            for path in image_files(folder, self.skipped):
                rel = path.relative_to(self.root).with_suffix("")
                self.items.append(Item(safe_key(str(rel)), str(path), index[folder.name]))
        for stray in sorted(p for p in self.root.iterdir() if p.is_file()):
            self.skipped.add(str(stray), "outside class folders: no label")
        self._require_items(f"image folder {self.root}")
        self.note_empty_classes()

    def note_empty_classes(self) -> None:
        """Report each class folder left with no item, once; it keeps its index so that train/,
        val/ and the teacher's head agree on class numbers."""
        present = {item.label for item in self.items}
        noted = {ref for ref, reason in self.skipped.entries if reason == EMPTY_CLASS}
        for index, name in enumerate(self.classes or []):
            ref = str(self.root / name)
            if index not in present and ref not in noted:
                self.skipped.add(ref, EMPTY_CLASS)
                log.warning("class %r (%s) has no usable image; kept with 0 images", name, ref)

    def load(self, item: Item, max_side: int | None = None) -> np.ndarray:
        return load_rgb(Path(item.ref), max_side)


class SourceImages:
    """A source as a map-style dataset of (uint8 [3, H, W] tensor, label) for training loops.

    Unreadable items raise ``BadImage``; call ``usable()`` first to drop them with a report.
    """

    def __init__(self, source: Source, max_side: int | None = None) -> None:
        self.source, self.max_side = source, max_side

    def __len__(self) -> int:
        return len(self.source.items)

    def __getitem__(self, i: int):
        import torch

        item = self.source.items[i]
        rgb = self.source.load(item, self.max_side)
        label = -1 if item.label is None else item.label
        return torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1), label

    def usable(self) -> SourceImages:
        """Decode every item once and keep the readable ones (their failures go to skipped).

        A training loop cannot skip an image mid-epoch, so bad files are found here, up front.
        """
        kept = []
        for item in self.source.items:
            try:
                self.source.load(item, self.max_side)
            except BadImage as e:
                self.source.skipped.add(item.ref, str(e))
                continue
            kept.append(item)
        self.source.items = kept
        self.source._require_items(self.source.describe())
        self.source.note_empty_classes()
        return self
