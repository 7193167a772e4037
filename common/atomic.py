"""Atomic file writes: write under a temporary name beside the target, then rename onto it.

A rename within one folder is atomic, so a reader, a crash or a full disk never leaves a
half-written file under the final name: the old file stays until the new one is whole.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_name(path: Path) -> Path:
    """A hidden temporary name beside ``path``, unique to this writer (two processes writing
    one file never share a temporary)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_path(path: str | Path, tmp: Path | None = None) -> Iterator[Path]:
    """A temporary path to write (default ``temp_name(path)``), renamed onto ``path`` when the
    block succeeds and removed when it fails. For writers that take a path (torch.save,
    savefig, exporters); the folder is created."""
    path = Path(path)
    tmp = temp_name(path) if tmp is None else tmp
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes, tmp: Path | None = None) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, tmp) as t:
        t.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str, tmp: Path | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path, tmp) as t:
        t.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj, tmp: Path | None = None, **dumps) -> Path:
    """Write ``obj`` as JSON (``json.dumps(obj, **dumps)`` and a newline; ``indent`` 2 unless
    given) to ``path`` atomically."""
    dumps.setdefault("indent", 2)
    return write_text(path, json.dumps(obj, **dumps) + "\n", tmp)
