"""Shard sets on disk: atomic shard files, per-shard records and the manifest that seals a set.

Layout of one set (e.g. ``<out>/randaug/``)::

    randaug-000000.tar   samples: <key>.jpg, <key>.cls, <key>.soft.npy, <key>.json
    randaug-000000.json  the shard's record (samples, skipped inputs), written before the tar
    manifest.json        written last: samples per shard, classes, teacher, config hash,
                         inputs skipped (count, by reason, the first few by name)

A shard is written as ``*.tar.tmp`` and renamed when complete, after its record, so a crash
never leaves a file that looks finished; the manifest is the "set complete" marker and readers
refuse a directory without one (stack.md §9).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds


class ManifestError(ValueError):
    """A shard set that cannot be read; names the directory and what is missing."""


def config_hash(cfg: dict) -> str:
    """A short stable hash of a JSON-able config (what the shards were built from)."""
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def shard_name(set_name: str, index: int) -> str:
    return f"{set_name}-{index:06d}.tar"


def shard_complete(set_dir: Path, set_name: str, index: int) -> bool:
    tar = set_dir / shard_name(set_name, index)
    return tar.is_file() and tar.with_suffix(".json").is_file()


def clean_partials(set_dir: Path) -> list[Path]:
    """Delete ``*.tmp`` leftovers of an interrupted build; returns what was removed."""
    stale = sorted(set_dir.glob("*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_shard(
    set_dir: Path, set_name: str, index: int, samples: Iterable[dict], record: dict
) -> dict:
    """Write one shard atomically; ``record`` gets ``samples`` (the count) and is returned."""
    final = set_dir / shard_name(set_name, index)
    tmp = final.with_name(final.name + ".tmp")
    count = 0
    with open(tmp, "wb") as stream:
        # An integer mtime: identical rebuilds, and no per-member PAX header (a float adds one,
        # doubling the headers a reader must parse).
        writer = wds.TarWriter(stream, mtime=0)
        for sample in samples:
            writer.write(sample)
            count += 1
        writer.close()
    record = {**record, "samples": count, "bytes": tmp.stat().st_size}
    write_json_atomic(final.with_suffix(".json"), record)
    os.replace(tmp, final)
    return record


@dataclass
class Manifest:
    """What a complete shard set holds; epoch sizes come from here, never from a scan."""

    path: Path
    data: dict

    @property
    def set_dir(self) -> Path:
        return self.path.parent

    @property
    def num_samples(self) -> int:
        return int(self.data["num_samples"])

    @property
    def num_classes(self) -> int:
        return int(self.data["num_classes"])

    @property
    def classes(self) -> list[str]:
        return list(self.data["classes"])

    @property
    def shard_counts(self) -> dict[str, int]:
        return dict(self.data["shards"])

    @property
    def skipped(self) -> int:
        """Inputs left out while building the set (0 in manifests that predate the count)."""
        return int(self.data.get("skipped", 0))

    @property
    def skipped_examples(self) -> list[tuple[str, str]]:
        """The first few (input, reason) left out; empty in manifests written before them."""
        return [(str(ref), str(why)) for ref, why in self.data.get("skipped_examples", [])]

    def urls(self) -> list[str]:
        return [str(self.set_dir / name) for name in sorted(self.data["shards"])]


def read_manifest(set_dir: str | Path) -> Manifest:
    """The manifest of a complete set; ``ManifestError`` if the set is missing or unfinished."""
    set_dir = Path(set_dir)
    path = set_dir / "manifest.json"
    if not set_dir.is_dir():
        raise ManifestError(f"shard set not found: {set_dir} (build it with python -m data.build)")
    if not path.is_file():
        raise ManifestError(
            f"{set_dir} has no manifest.json: the build did not finish; rerun python -m data.build "
            "(finished shards are kept)"
        )
    data = json.loads(path.read_text())
    missing = [n for n in data["shards"] if not (set_dir / n).is_file()]
    if missing:
        raise ManifestError(f"{set_dir}: manifest lists shards that are gone: {missing[:5]}")
    return Manifest(path, data)
