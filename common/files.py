"""Waiting for files another process writes (rank 0 builds, the other ranks wait for it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path


def _is_file(path: str | Path) -> bool:
    return Path(path).is_file()


def wait_for_files(
    paths: Iterable[str | Path],
    timeout_s: float,
    message: str,
    poll_s: float = 2.0,
    exists: Callable[[str | Path], bool] = _is_file,
) -> None:
    """Return once every path exists (``exists``: a local file by default; data.remote.exists
    for URLs); raise ``TimeoutError(message)`` after ``timeout_s``."""
    paths = list(paths)
    deadline = time.time() + timeout_s
    while not all(exists(p) for p in paths):
        if time.time() > deadline:
            raise TimeoutError(message)
        time.sleep(poll_s)
