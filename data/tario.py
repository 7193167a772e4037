"""Reading tar shards fast: a minimal sequential reader for the members our shards contain.

Python's ``tarfile`` (which webdataset's reader uses) builds a ``TarInfo`` for every 512-byte
header; shards are plain ustar archives of regular files, so the header fields needed here
(name, size, type) are read directly. No benchmark row times this reader on its own (the
end-to-end rate is bench/data.py's "Streaming: shards vs ImageFolder" row). PAX and GNU
long-name records are understood; anything malformed or cut short raises ``tarfile.ReadError``
with the shard named, for the pipeline's handler.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator

BLOCK = 512


def _octal(field: bytes) -> int:
    field = field.rstrip(b"\0 ").lstrip(b" ")
    return int(field, 8) if field else 0


def _pax_path(data: bytes) -> str | None:
    for record in data.decode("utf-8", "replace").split("\n"):
        _, _, kv = record.partition(" ")
        key, _, value = kv.partition("=")
        if key == "path":
            return value
    return None


def members(stream, url: str = "?") -> Iterator[tuple[str, bytes]]:
    """(name, payload) of every regular file in an uncompressed tar stream, in order."""
    long_name: str | None = None
    while True:
        header = stream.read(BLOCK)
        if len(header) < BLOCK:
            if header.strip(b"\0"):
                raise tarfile.ReadError(f"{url}: truncated tar header")
            return
        if not header.strip(b"\0"):
            return  # end-of-archive marker
        try:
            size = _octal(header[124:136])
        except ValueError as e:
            raise tarfile.ReadError(f"{url}: corrupt tar header") from e
        kind = header[156:157]
        payload = stream.read(size)
        if len(payload) < size:
            raise tarfile.ReadError(f"{url}: truncated member ({len(payload)} of {size} bytes)")
        padding = -size % BLOCK
        if len(stream.read(padding)) < padding:  # cut in the padding: the member may be whole,
            raise tarfile.ReadError(f"{url}: truncated after a member")  # the shard is not
        if kind in (b"x", b"L"):
            long_name = _pax_path(payload) if kind == b"x" else payload.rstrip(b"\0").decode()
            continue
        if kind not in (b"0", b"\0", b"7"):
            long_name = None
            continue
        name = long_name or header[:100].rstrip(b"\0").decode("utf-8", "replace")
        prefix = header[345:500].rstrip(b"\0").decode("utf-8", "replace")
        if prefix and long_name is None:
            name = f"{prefix}/{name}"
        long_name = None
        yield name, payload


def samples(stream, url: str = "?") -> Iterator[dict]:
    """Group consecutive members by key (the name up to its first dot), webdataset-style."""
    current: dict | None = None
    for name, payload in members(stream, url):
        base = name.rsplit("/", 1)[-1]
        key, dot, ext = base.partition(".")
        if not dot:
            continue
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key, "__url__": url}
        current[ext.lower()] = payload
    if current is not None:
        yield current


def tar_samples(src, handler=None):
    """webdataset stage: ``{"url": ...}`` items -> samples; errors go to ``handler``."""
    for item in src:
        url = item["url"]
        try:
            with open(url, "rb", buffering=1 << 20) as stream:
                yield from samples(stream, url)
        except Exception as e:
            if handler is None or not handler(e):
                raise
