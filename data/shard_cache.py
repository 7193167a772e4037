"""A node-local cache of remote shards (``data.cache_dir``), bounded in bytes, least recently used
out first: the second epoch of a run reads its shards from local disk.

A shard is cached as it streams, the first time it is read to the end: the bytes go to a
temporary file beside the cache (a unique name per process) and are renamed into place when the
whole body has arrived, so a shard cut short is never cached and readers never see a partial
file. Entries are named by the URL and the object's ETag and size; a cached shard is used after a
HEAD request confirms the object is unchanged (a rebuilt set is fetched again). If the server
cannot be reached, the newest cached copy of the URL is read instead (with a warning; for the
next ``retry_s``, at least 30 s, cached copies are read without asking again), so a run whose
shards are all cached goes on through an outage. Every loader worker and rank of
a node may share one directory: entries appear by rename and are evicted by ``unlink`` (an open
file stays readable).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from pathlib import Path

from data import remote, urls

log = logging.getLogger(__name__)

DRAIN = 64 * 1024  # a reader that stops this close to the end (tar padding) still fills the cache


def _url_key(url: str) -> str:
    return hashlib.sha256(urls.redact(url).encode()).hexdigest()[:24]


def _version_key(meta: dict) -> str:
    tag = f"{meta.get('e_tag')}/{meta.get('size')}/{meta.get('last_modified')}"
    return hashlib.sha256(tag.encode()).hexdigest()[:12]


class ShardCache:
    """``open(url)``: a cached copy, or the remote stream teed into the cache."""

    def __init__(self, root: str | Path, max_bytes: int) -> None:
        self.root, self.max_bytes = Path(root), int(max_bytes)
        self.root.mkdir(parents=True, exist_ok=True)

    def entry(self, url: str, meta: dict) -> Path:
        return self.root / f"{_url_key(url)}.{_version_key(meta)}.tar"

    def _newest(self, url: str) -> Path | None:
        found = sorted(self.root.glob(f"{_url_key(url)}.*.tar"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None

    def open(self, url: str):
        newest = self._newest(url)
        if newest is not None and remote.server_down(url):  # no HEAD to wait for each time
            os.utime(newest)
            return open(newest, "rb", buffering=1 << 20)
        if newest is not None:
            try:
                path = self.entry(url, remote.head(url))
            except (remote.NotFound, remote.AccessDenied):
                raise
            except remote.RemoteError as e:
                path = self._newest(url)
                if path is None:
                    raise
                log.warning("%s; reading the cached copy %s", e, path.name)
            if path.is_file():
                os.utime(path)  # most recently used
                return open(path, "rb", buffering=1 << 20)
        reader = remote.RemoteReader(url)
        if reader.size is None or reader.size > self.max_bytes:
            return reader
        return _Tee(reader, self, self.entry(url, reader.meta))

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove least recently used entries until the cache fits ``max_bytes``."""
        entries = []
        for p in self.root.glob("*.tar"):
            try:
                st = p.stat()
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
            entries.append((st.st_mtime, st.st_size, p))
        entries.sort()
        total, removed = sum(size for _, size, _ in entries), []
        for _, size, p in entries:
            if total <= self.max_bytes:
                break
            if p == keep:
                continue
            p.unlink(missing_ok=True)
            total -= size
            removed.append(p)
        return removed


class _Tee:
    """Reads through a ``RemoteReader``, writing what it reads to a temporary file that becomes
    the cache entry when the whole body was read."""

    def __init__(self, reader: remote.RemoteReader, cache: ShardCache, final: Path) -> None:
        self.reader, self.cache, self.final = reader, cache, final
        self.size = reader.size
        self.tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
        self.out = open(self.tmp, "wb")  # noqa: SIM115 (closed by close() or at the end)

    def read(self, n: int = -1) -> bytes:
        data = self.reader.read(n)
        if self.out is not None:
            self.out.write(data)
            if self.reader.pos == self.reader.size:
                self._commit()
        return data

    def tell(self) -> int:
        return self.reader.pos

    def _commit(self) -> None:
        self.out.close()
        self.out = None
        os.replace(self.tmp, self.final)
        self.cache.evict(keep=self.final)

    def close(self) -> None:
        left = (self.size or 0) - self.reader.pos
        if self.out is not None and 0 < left <= DRAIN:  # a tar's end padding: read and keep it
            with contextlib.suppress(OSError):
                self.read(left)
        if self.out is not None:  # not read to the end: nothing is cached
            self.out.close()
            self.out = None
            self.tmp.unlink(missing_ok=True)
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
