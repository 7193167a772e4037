"""Shard sets: atomic shard files, per-shard records and the manifest that seals a set.

Layout of one set (e.g. ``<out>/randaug/``)::

    randaug-000000.tar   samples: <key>.jpg, <key>.cls, <key>.soft.npy, <key>.json
    randaug-000000.json  the shard's record (samples, skipped inputs), written before the tar
    manifest.json        written last: samples per shard, classes, teacher, config hash,
                         inputs skipped (count, by reason, the first few by name)

A shard is written under a temporary name unique to its process (``<name>.<pid>-<id>@<host>.tmp``:
two builders never write one file) and renamed when complete, after its record, so a crash never
leaves a file that looks finished; the manifest is the "set complete" marker and readers refuse
a set without one. ``read_manifest`` reads a set at any location (data/urls.py);
data/set_store.py writes one to object storage.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds

from common import atomic
from data import remote, urls


class ManifestError(ValueError):
    """A shard set that cannot be read; names the directory and what is missing."""


def config_hash(cfg: dict) -> str:
    """A short stable hash of a JSON-able config (what the shards were built from)."""
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def temp_path(final: Path) -> Path:
    """A temporary name beside ``final``, unique to this process and host."""
    host = socket.gethostname().replace("@", "_")
    return final.with_name(f"{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}@{host}.tmp")


def _writer_alive(tmp: Path) -> bool:
    """Whether the process that owns a temporary file may still be writing it."""
    stem, _, host = tmp.name.removesuffix(".tmp").rpartition("@")
    pid = stem.rpartition(".")[2].partition("-")[0]
    if not pid.isdigit():
        return False  # a fixed name from before temporary names were unique
    if host != socket.gethostname().replace("@", "_"):
        return True  # another node's: cannot tell, keep it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return int(pid) != os.getpid()


def write_set_json(path: str | Path, obj) -> None:
    """A set's json file (build.json, a shard record, the manifest), local or remote: written
    whole either way, locally under a ``temp_path`` name that ``clean_partials`` understands."""
    text = json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n"
    if urls.is_remote(path):
        remote.put_bytes(str(path), text.encode())
        return
    atomic.write_text(path, text, temp_path(Path(path)))


def shard_name(set_name: str, index: int) -> str:
    return f"{set_name}-{index:06d}.tar"


def shard_complete(set_dir: Path, set_name: str, index: int) -> bool:
    tar = set_dir / shard_name(set_name, index)
    return tar.is_file() and tar.with_suffix(".json").is_file()


def clean_partials(set_dir: Path) -> list[Path]:
    """Delete ``*.tmp`` leftovers of interrupted builds (not those of a live builder)."""
    stale = sorted(p for p in set_dir.glob("*.tmp") if not _writer_alive(p))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_shard(
    set_dir: Path, set_name: str, index: int, samples: Iterable[dict], record: dict
) -> dict:
    """Write one shard atomically; ``record`` gets ``samples`` (the count) and is returned."""
    final = set_dir / shard_name(set_name, index)
    count = 0
    with atomic.atomic_path(final, temp_path(final)) as tmp:
        with open(tmp, "wb") as stream:
            # An integer mtime: identical rebuilds, and no per-member PAX header (a float adds
            # one, doubling the headers a reader must parse).
            writer = wds.TarWriter(stream, mtime=0)
            for sample in samples:
                writer.write(sample)
                count += 1
            writer.close()
        record = {**record, "samples": count, "bytes": tmp.stat().st_size}
        write_set_json(final.with_suffix(".json"), record)  # the record first, then the tar
    return record


@dataclass
class Manifest:
    """What a complete shard set holds; epoch sizes come from here, never from a scan."""

    path: Path | str  # a URL for a set outside the local file system
    data: dict

    @property
    def set_dir(self) -> Path | str:
        return self.path.parent if isinstance(self.path, Path) else urls.parent(self.path)

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
        return [urls.join(self.set_dir, name) for name in sorted(self.data["shards"])]


def read_manifest(set_dir: str | Path) -> Manifest:
    """The manifest of a complete set; ``ManifestError`` if the set is missing or unfinished.

    ``set_dir`` may be a URL (data/urls.py); servers that cannot be reached raise
    ``data.remote.RemoteError``.
    """
    if urls.is_remote(set_dir):
        return _read_remote_manifest(urls.check(set_dir))
    set_dir = urls.local_path(set_dir)
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


def _read_remote_manifest(set_dir: str) -> Manifest:
    path = urls.join(set_dir, "manifest.json")
    try:
        data = remote.read_json(path)
    except FileNotFoundError:
        raise ManifestError(
            f"{urls.redact(set_dir)} has no manifest.json: the set is not there, or its build did "
            "not finish; build it with python -m data.build paths.shards=<its parent> "
            "(finished shards are kept)"
        ) from None
    if urls.scheme(set_dir) in urls.OBJECT_SCHEMES:  # HTTP and pipes cannot list
        present = set(remote.list_names(set_dir))
        missing = [n for n in data["shards"] if n not in present]
        if missing:
            raise ManifestError(
                f"{urls.redact(set_dir)}: manifest lists shards that are gone: {missing[:5]}"
            )
    return Manifest(path, data)
