"""A run's own files in ``results.json``, stored relative to the run directory.

A run directory can be copied or moved whole: its checkpoints and exports are named relative to
it, and a reader resolves them against the directory it was given, never following a path out
of it. An absolute path left by an older version is re-rooted when it lies under the run's old
``output_dir``; any other path outside the run is dropped (None), so a copy of a run can never
hand out the original run's weights.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

RUN_FILES = ("best_checkpoint", "last_checkpoint")
EXPORT_FILES = ("safetensors", "raw_safetensors", "ema_safetensors", "onnx", "runtimes")


def _entries(results: dict) -> Iterator[tuple[dict, str]]:
    """(mapping, key) of every value that names one of the run's files."""
    yield from ((results, k) for k in RUN_FILES if results.get(k))
    exports = results.get("exports") or {}
    yield from ((exports, k) for k in EXPORT_FILES if exports.get(k))


def store_relative(results: dict, run_dir: Path) -> dict:
    """A copy of ``results`` with the run's files relative to ``run_dir`` (POSIX separators)
    and without ``output_dir``: the run directory is wherever the file lies."""
    out = copy.deepcopy(results)
    out.pop("output_dir", None)
    root = Path(run_dir).resolve()
    for entries, key in _entries(out):
        path = Path(entries[key]).resolve()
        if path.is_relative_to(root):
            entries[key] = path.relative_to(root).as_posix()
    return out


def resolve_in_run(results: dict, run_dir: Path) -> dict:
    """A copy of ``results`` with the run's files as absolute paths inside ``run_dir``."""
    out = copy.deepcopy(results)
    root = Path(run_dir).resolve()
    old_root = results.get("output_dir")
    for entries, key in _entries(out):
        path = Path(entries[key])
        if not path.is_absolute():
            path = root / path
        elif old_root and path.is_relative_to(old_root):  # written before paths were relative
            path = root / path.relative_to(old_root)
        path = path.resolve()
        entries[key] = str(path) if path.is_relative_to(root) else None
    return out
