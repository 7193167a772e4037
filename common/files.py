"""Waiting for files another process writes (rank 0 builds, the other ranks wait for it)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path


def wait_for_files(
    paths: Iterable[str | Path], timeout_s: float, message: str, poll_s: float = 2.0
) -> None:
    """Return once every path is a file; raise ``TimeoutError(message)`` after ``timeout_s``."""
    paths = [Path(p) for p in paths]
    deadline = time.time() + timeout_s
    while not all(p.is_file() for p in paths):
        if time.time() > deadline:
            raise TimeoutError(message)
        time.sleep(poll_s)
