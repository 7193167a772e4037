"""Reading tar shards fast: a minimal sequential reader for the members our shards contain.

Python's ``tarfile`` (which webdataset's reader uses) builds a ``TarInfo`` for every 512-byte
header; shards are plain ustar archives of regular files, so the header fields needed here
(name, size, type) are read directly. No benchmark row times this reader on its own (the
end-to-end rate is bench/data.py's "Streaming: shards vs ImageFolder" row). PAX and GNU
long-name records are understood; anything malformed or cut short (a member's bytes, or the
end-of-archive zero blocks every tar writer adds) raises ``tarfile.ReadError`` with the shard
named, for the pipeline's handler. A member's size is checked against the bytes left in the
shard before it is read (the file's size, or the length a server announced), and a stream of
unknown length is read in bounded pieces: a header claiming 64 GB is a ``ReadError`` naming the
shard, never a 64 GB allocation.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Container, Iterator
from typing import NamedTuple

BLOCK = 512
PIECE = 1 << 24  # largest single read when the stream's length is unknown


class Span(NamedTuple):
    """Where a member's payload lies in its tar file."""

    offset: int
    size: int


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256, for sizes of 8 GB and more
        return int.from_bytes(field[1:], "big")
    field = field.rstrip(b"\0 ").lstrip(b" ")
    return int(field, 8) if field else 0


def _pax_path(data: bytes) -> str | None:
    for record in data.decode("utf-8", "replace").split("\n"):
        _, _, kv = record.partition(" ")
        key, _, value = kv.partition("=")
        if key == "path":
            return value
    return None


def stream_length(stream) -> int | None:
    """Bytes left in ``stream`` from where it is: a regular file's size, or the ``size`` a remote
    reader got from the server; ``None`` for pipes and other streams of unknown length."""
    size = getattr(stream, "size", None)
    if isinstance(size, int):
        return size - (stream.tell() if hasattr(stream, "tell") else 0)
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    return st.st_size - stream.tell() if stat.S_ISREG(st.st_mode) else None


def _read(stream, size: int) -> bytes:
    """``size`` bytes (fewer at the end of the stream), read in pieces of at most ``PIECE``."""
    if size <= PIECE:
        return stream.read(size)
    parts = []
    while size > 0:
        part = stream.read(min(size, PIECE))
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _records(stream, url: str, lazy: Container[str]) -> Iterator[tuple[str, bytes | Span]]:
    """(name, payload) of every regular file; members whose extension is in ``lazy`` are
    skipped over (the stream must be seekable) and given as their ``Span`` in the file."""
    long_name: str | None = None
    left = stream_length(stream)  # bytes not yet consumed; None: unknown
    end = os.fstat(stream.fileno()).st_size if lazy else None
    started = False
    while True:
        header = stream.read(BLOCK)
        if left is not None:
            left -= len(header)
        if len(header) < BLOCK:
            if header.strip(b"\0"):
                raise tarfile.ReadError(f"{url}: truncated tar header")
            if started and not header:  # a tar ends with zero blocks: cut between two members
                raise tarfile.ReadError(f"{url}: cut short (no end-of-archive marker)")
            return
        if not header.strip(b"\0"):
            return  # end-of-archive marker
        started = True
        try:
            size = _octal(header[124:136])
        except ValueError as e:
            raise tarfile.ReadError(f"{url}: corrupt tar header") from e
        kind = header[156:157]
        padding = -size % BLOCK
        if left is not None and size > left:
            raise tarfile.ReadError(
                f"{url}: a member claims {size} bytes but only {left} are left in the shard"
            )
        if left is not None:
            left -= size + padding
        name = None
        if kind in (b"0", b"\0", b"7"):
            name = long_name or header[:100].rstrip(b"\0").decode("utf-8", "replace")
            prefix = header[345:500].rstrip(b"\0").decode("utf-8", "replace")
            if prefix and long_name is None:
                name = f"{prefix}/{name}"
        if name is not None and name.rpartition("/")[2].partition(".")[2].lower() in lazy:
            offset = stream.tell()
            if stream.seek(size + padding, 1) > end:
                raise tarfile.ReadError(f"{url}: truncated member {name}")
            long_name = None
            yield name, Span(offset, size)
            continue
        payload = _read(stream, size)
        if len(payload) < size:
            raise tarfile.ReadError(f"{url}: truncated member ({len(payload)} of {size} bytes)")
        if len(stream.read(padding)) < padding:  # cut in the padding: the member may be whole,
            raise tarfile.ReadError(f"{url}: truncated after a member")  # the shard is not
        if kind in (b"x", b"L"):
            long_name = _pax_path(payload) if kind == b"x" else payload.rstrip(b"\0").decode()
            continue
        long_name = None
        if name is not None:
            yield name, payload


def members(stream, url: str = "?") -> Iterator[tuple[str, bytes]]:
    """(name, payload) of every regular file in an uncompressed tar stream, in order."""
    return _records(stream, url, ())  # type: ignore[return-value]


def samples(stream, url: str = "?", lazy: Container[str] = ()) -> Iterator[dict]:
    """Group consecutive members by key (the name up to its first dot), webdataset-style.

    Extensions in ``lazy`` (lower case, e.g. ``("jpg", "png")``) are not read: their value is
    the member's ``Span`` (offset and size in the file), for readers that index a shard and
    decode later (data.sources.ShardSource); the stream must then be a seekable file.
    """
    current: dict | None = None
    for name, payload in _records(stream, url, lazy):
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
